"""Celery's tools (Flower, events, logs, `celery inspect`) show which run a task is, never
the run's arguments or environment variables, which its assignment carries."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery
from celery.worker.request import Request

from protocol.celery_app import TASK_EXECUTE_RUN, make_celery
from protocol.messages import RunAssignment
from scheduler.admission import send
from worker.app import hide_task_arguments

SECRETS = ("--api-key=hunter2", "wandb-secret-value")


def assignment() -> RunAssignment:
    return RunAssignment(
        run_id="ridge_1700000000_abcd",
        cluster="gpu",
        experiment="ridge",
        script="train.py",
        arguments=["--alpha", "0.5", SECRETS[0]],
        environment={"environment_variables": {"WANDB_API_KEY": SECRETS[1]}},
        snapshot_digest="0" * 64,
        attempt=2,
    )


def sent_message(app: Celery, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The message the scheduler hands to the broker for a run."""
    sent = []
    monkeypatch.setattr(
        app.amqp, "send_task_message", lambda _p, _n, message, **_o: sent.append(message)
    )
    send(app, assignment())
    (message,) = sent
    return message


def test_the_task_message_shows_only_the_run_its_attempt_and_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = sent_message(make_celery("memory://"), monkeypatch)
    headers = message.headers
    assert headers["argsrepr"] == "[run ridge_1700000000_abcd attempt 2 on gpu]"
    assert headers["kwargsrepr"] == "{}"
    # The task-sent event (what Flower lists) carries the same.
    assert message.sent_event["args"] == headers["argsrepr"]
    assert message.sent_event["kwargs"] == "{}"
    for secret in SECRETS:
        assert secret not in str(headers)
        assert secret not in str(message.sent_event)
    # The body still carries the assignment the worker needs.
    args, _, _ = message.body
    assert RunAssignment.decode(args[0]) == assignment()


class _Received:
    """A broker message as a worker receives it (what Celery builds a Request from)."""

    def __init__(self, message: Any) -> None:
        self.headers = message.headers
        self.body = message.body
        self.payload = message.body
        self.delivery_info: dict[str, Any] = {}
        self.properties: dict[str, Any] = {}
        self.content_type = "application/json"
        self.content_encoding = "utf-8"


def test_the_worker_answers_every_inspect_command_with_the_shown_arguments(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = make_celery("memory://")

    @app.task(name=TASK_EXECUTE_RUN)
    def execute_run(payload: dict) -> None: ...

    message = sent_message(app, monkeypatch)
    request = Request(_Received(message), app=app)
    # `inspect reserved`, `scheduled` and `query_task` ask for info() with the decoded
    # arguments; `active` asks for info(safe=True).
    assert SECRETS[0] in str(request.info())

    monkeypatch.setattr(Request, "info", Request.info)  # restored after the test
    hide_task_arguments()
    hide_task_arguments()  # idempotent
    for info in (request.info(), request.info(safe=False), request.info(safe=True)):
        assert info["args"] == "[run ridge_1700000000_abcd attempt 2 on gpu]"
        assert info["kwargs"] == "{}"
        for secret in SECRETS:
            assert secret not in str(info)
