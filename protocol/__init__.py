"""What crosses a process boundary: the messages, Redis keys, scripts and streams the API,
the scheduler and the worker exchange, worker heartbeats, settings, environments and
container policies, budgets and limits. Imports no database code, so a worker can use it
without SQLModel, SQLAlchemy or Alembic installed."""
