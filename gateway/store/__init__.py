"""The durable store: readings and activity records in one SQLite file (`sqlite`), the lock
that keeps it to one gateway (`lock`), the disk it may use (`diskspace`) and the optional
InfluxDB mirror of its readings (`mirror`). Above the shared model only."""
