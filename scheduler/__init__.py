"""The scheduler owns run state: the database, cluster queues, admission, ingest, watchdog."""
