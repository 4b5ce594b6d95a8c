"""Workers: Celery consumers of cluster queues that execute runs and report over Redis."""
