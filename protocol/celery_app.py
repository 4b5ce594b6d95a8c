"""The Celery application shared by the scheduler (sender) and the workers (consumers)."""

from __future__ import annotations

from celery import Celery

TASK_EXECUTE_RUN = "runyard.execute_run"

# A run can train for weeks; the broker must never hand its message to a second worker
# because it has not been acknowledged yet. Liveness is the watchdog's job, not the broker's,
# and a redelivered message is harmless anyway: the run's claim key lets only one start it.
VISIBILITY_TIMEOUT = 30 * 24 * 3600


def make_celery(redis_url: str) -> Celery:
    app = Celery("runyard", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_create_missing_queues=True,
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app
