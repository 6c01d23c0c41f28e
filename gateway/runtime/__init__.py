"""The running gateway: supervision of collectors, the store writer, sealing and sync
(`supervisor`), and its metrics (`metrics`). Above every core layer; below the command line."""
