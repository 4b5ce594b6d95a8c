"""What people read: validation errors in plain words, table cells without Python."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError, field_validator

from api.errors import invalid_input
from runyard.cli.output import cell
from store.models import ClusterCreate, RunSpec


def first_error(model: type[BaseModel], data: object) -> list:
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data)
    return caught.value.errors()


@pytest.mark.parametrize(
    ("model", "data", "prefix", "message", "field"),
    [
        # A validator's own sentence, without pydantic's "Value error, " before it.
        (ClusterCreate, {"name": "cpu", "executor": "slurm"}, "",
         "executor must be one of local, docker", "executor"),
        (RunSpec, {"experiment": "e", "script": "../x.py"}, "spec",
         "script must be a path inside the snapshot", "spec.script"),
        (ClusterCreate, {"name": "Bad_Name"}, "",
         "cluster names are 2-32 characters: lowercase letters, digits and '-', starting "
         "with a letter and not ending with '-'", "name"),
        # pydantic's own sentences name the field instead of "Input".
        (ClusterCreate, {"name": "cpu", "nodes": 0}, "",
         "nodes should be greater than or equal to 1", "nodes"),
        (RunSpec, {"experiment": "e"}, "spec", "script is required", "spec.script"),
        (ClusterCreate, {"name": "cpu", "node": 4}, "", "unknown field 'node'", "node"),
        (RunSpec, {"experiment": "e", "script": "a.py", "arguments": ["a", 3]}, "spec",
         "arguments[1] should be a valid string", "spec.arguments.1"),
        # A nested field is named by its whole path.
        (ClusterCreate, {"name": "cpu", "environment": {"docker": {"baseImage": "x"}}}, "",
         "unknown field 'environment.docker.baseImage'", "environment.docker.baseImage"),
    ],
)  # fmt: skip
def test_validation_errors_read_as_plain_sentences(
    model: type[BaseModel], data: object, prefix: str, message: str, field: str
) -> None:
    error = invalid_input(first_error(model, data), prefix=prefix)
    assert (error.message, error.field) == (message, field)
    assert "Value error" not in error.message and error.http_status == 422


def test_a_query_parameter_is_named_by_itself() -> None:
    errors = [{"type": "greater_than_equal", "loc": ("query", "limit"),
               "msg": "Input should be greater than or equal to 1"}]  # fmt: skip
    error = invalid_input(errors)
    assert (error.message, error.field) == ("limit should be greater than or equal to 1",
                                            "query.limit")  # fmt: skip


def test_an_assertion_in_a_validator_reads_as_its_message() -> None:
    class Checked(BaseModel):
        size: int

        @field_validator("size")
        @classmethod
        def _small(cls, value: int) -> int:
            assert value < 10, "size must be under 10"
            return value

    assert invalid_input(first_error(Checked, {"size": 11})).message == "size must be under 10"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (True, "yes"),
        (False, "no"),
        (None, "-"),
        ([], "-"),
        (["cpu", "gpu"], "cpu, gpu"),
        ({"nodes": 3, "is_default": False, "image": None}, "nodes=3, is_default=no"),
        ({}, "-"),
        ("2026-11-30T08:22:12.123456+00:00", "2026-11-30 08:22:12"),
        ("[red]not markup[/red]", "[red]not markup[/red]"),
    ],
)
def test_table_cells_are_words_not_python(value: object, shown: str) -> None:
    assert cell(value) == shown
