"""The scheduler process: admission onto cluster queues, the ingest loop that writes what
workers report into the store, and the watchdog."""
