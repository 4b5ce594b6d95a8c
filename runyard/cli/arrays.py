"""``runyard submit-array``: one snapshot, many runs (a job array, as Slurm's ``--array``).

Each run's arguments come from the arguments after ``--`` with ``{index}`` replaced by the
run's index (``--array 0-99``), and/or from a file holding one argument list per line
(``--array-args FILE``, split as a shell would)."""

from __future__ import annotations

import re
import shlex
from typing import Annotated, Optional

import typer

from runyard.cli import output
from runyard.cli import submit_options as opts
from runyard.cli.context import client
from runyard.core import Experiment, ScriptRunConfig
from runyard.errors import InvalidInput

# What one request may queue (the service refuses more; this says so before packing).
MAX_ARRAY_RUNS = 10_000
RANGE_ITEM = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")


def submit_array(
    directory: opts.Directory,
    script: opts.Script,
    arguments: Annotated[
        Optional[list[str]],
        typer.Argument(
            help=(
                "Arguments of every run, after --; {index} is the run's index as given to"
                " --array (Slurm's SLURM_ARRAY_TASK_ID); the run's array_index is its"
                " 0-based position in the array"
            )
        ),
    ] = None,
    array: Annotated[
        Optional[str],
        typer.Option(
            "--array",
            "-a",
            metavar="RANGE",
            help=(
                "Indexes, as Slurm's --array: 0-99, 1,3,5, 0-99:10 (one run each, in this"
                " order); {index} is the given index, array_index the 0-based position"
            ),
        ),
    ] = None,
    array_args: Annotated[
        Optional[str],
        typer.Option(
            "--array-args",
            metavar="FILE",
            help="One run per line: its arguments (after those given after --), shell-split; "
            "'-' reads standard input",
        ),
    ] = None,
    cluster: opts.Cluster = None,
    experiment: opts.ExperimentName = "default",
    priority: opts.Priority = 0,
    team: opts.Team = None,
    non_preemptible: opts.NonPreemptible = False,
    image: opts.Image = None,
    env_file: opts.EnvFile = None,
    interpreter: opts.Interpreter = None,
    tag: Annotated[
        Optional[list[str]],
        typer.Option("--tag", "-t", help="KEY=VALUE (or KEY) on every run, repeatable"),
    ] = None,
    display_name: Annotated[
        Optional[str], typer.Option("--display-name", "-n", help="A name for every run")
    ] = None,
    as_json: opts.JsonOpt = False,
) -> None:
    """Snapshot DIR once and queue SCRIPT once per index or argument line: a job array.

    Example: runyard submit-array ./src -s train.py --array 0-4999 -- --seed {index}
    """
    arguments_list = array_arguments(arguments or [], array, array_args)
    config = ScriptRunConfig(
        source_directory=directory,
        script=script,
        compute_target=cluster,
        environment=opts.environment(env_file, interpreter, image),
        priority=priority,
        team=team,
        preemptible=not non_preemptible,
    )
    api = client()
    runs = Experiment(opts.workspace(api), experiment).submit_array(
        config, arguments_list, tags=opts.tags(tag), display_name=display_name
    )
    if as_json:
        output.emit_json({"array_id": runs.array_id, "run_ids": [r.id for r in runs]})
        return
    output.console.print(
        f"{runs.array_id}  {len(runs)} runs queued ({runs[0].id} … {runs[-1].id})",
        highlight=False,
    )


def array_arguments(
    template: list[str], array: str | None, array_args: str | None
) -> list[list[str]]:
    """Each run's arguments: ``template`` with ``{index}`` filled in, then its line of
    ``array_args``. With both, the file's lines are runs and ``--array`` names their indexes."""
    if array is None and array_args is None:
        raise InvalidInput("give --array RANGE and/or --array-args FILE: the runs of the array")
    lines = _lines(array_args) if array_args is not None else None
    indexes = parse_range(array) if array is not None else list(range(len(lines or [])))
    if lines is not None and len(lines) != len(indexes):
        raise InvalidInput(
            f"--array names {len(indexes)} indexes but {array_args} has {len(lines)} runs"
        )
    if not indexes:
        raise InvalidInput(f"{array_args} holds no argument lines: the array would be empty")
    if len(indexes) > MAX_ARRAY_RUNS:
        raise InvalidInput(f"{len(indexes)} runs asked; one array holds at most {MAX_ARRAY_RUNS}")
    return [
        [a.replace("{index}", str(index)) for a in template] + (lines[i] if lines else [])
        for i, index in enumerate(indexes)
    ]


def parse_range(text: str) -> list[int]:
    """Slurm's ``--array`` syntax: items ``N``, ``N-M`` or ``N-M:STEP``, comma-separated."""
    indexes: list[int] = []
    for item in text.split(","):
        match = RANGE_ITEM.match(item.strip())
        if match is None:
            raise InvalidInput(f"--array {text!r}: {item!r} is not N, N-M or N-M:STEP")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        step = int(match.group(3)) if match.group(3) is not None else 1
        if last < first or step < 1:
            raise InvalidInput(f"--array {text!r}: {item!r} is an empty range")
        if (last - first) // step + 1 + len(indexes) > MAX_ARRAY_RUNS:
            raise InvalidInput(f"--array {text!r}: one array holds at most {MAX_ARRAY_RUNS} runs")
        indexes.extend(range(first, last + 1, step))
    return indexes


def _lines(path: str) -> list[list[str]]:
    try:
        if path == "-":
            text = typer.get_text_stream("stdin").read()
        else:
            with open(path, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as exc:
        raise InvalidInput(f"cannot read --array-args {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"--array-args {path} is not UTF-8 text") from None
    runs = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            runs.append(shlex.split(line))
        except ValueError as exc:
            raise InvalidInput(f"{path} line {number}: {exc}") from None
    return runs
