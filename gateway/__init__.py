"""tanji gateway: enrich, store, aggregate and seal readings; the CLI and runtime live here."""

__version__ = "0.1.0"
