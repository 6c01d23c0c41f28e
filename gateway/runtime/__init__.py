"""The running gateway: `supervisor` wires the parts and supervises their tasks; `writer`
commits readings to the store, `aggregator` seals periods into records and the outbox,
`readings` feeds the raw readings stream, `status` writes the status file that
`status_file` reads back, `metrics` shows it to Prometheus. Above every core layer; below
the command line."""
