"""The experiment and tracking routes declare the shape of every answer in the OpenAPI
schema (typed public models from the store), so a client reads a documented shape instead
of guessing one from an example."""

from __future__ import annotations

from typing import Any

from api.app import create_app

TYPED = {"experiments", "tracking"}  # the routers whose answers were untyped dicts


def json_answers(schema: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(operation id, schema of its success body) of every route of the typed routers."""
    found = []
    for operations in schema["paths"].values():
        for operation in operations.values():
            if not TYPED & set(operation.get("tags", [])):
                continue
            for code, response in operation["responses"].items():
                if code.startswith("2"):
                    body = response["content"]["application/json"]["schema"]
                    found.append((operation["operationId"], body))
    return found


def test_every_experiment_and_tracking_answer_has_a_declared_shape() -> None:
    schema = create_app().openapi()
    answers = dict(json_answers(schema))
    assert len(answers) >= 9  # the three experiment reads, events in, five tracking reads
    for operation, body in answers.items():
        if "$ref" in body:
            continue
        # Only a plain mapping of typed values (tags, properties) needs no named model.
        assert body.get("type") == "object", (operation, body)
        assert isinstance(body.get("additionalProperties"), dict), (operation, body)


def test_the_nan_carrying_reads_declare_their_points() -> None:
    """The metric reads are sent by their own encoder (NaN stays NaN); OpenAPI still shows
    what they hold."""
    schema = create_app().openapi()
    answers = dict(json_answers(schema))
    assert answers["get_metrics"] == {"$ref": "#/components/schemas/RunMetricsPublic"}
    assert answers["get_metric_history"] == {"$ref": "#/components/schemas/MetricHistoryPublic"}
    history = schema["components"]["schemas"]["MetricHistoryPublic"]
    assert set(history["required"]) == {"name", "kind", "column", "count", "downsampled", "points"}
