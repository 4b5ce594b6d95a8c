"""Where packages come from: the worker host's own package-index configuration, as uv
arguments.

Hosts configure pip (``pip.conf``, ``PIP_*`` variables): a private mirror, an offline
wheel folder, a constraints file. pip itself reads that configuration (``pip config
list``, every file it would read, ``PIP_CONFIG_FILE`` included), once per worker process;
``PIP_*`` variables override files, as they do for pip. uv's own ``UV_*`` variables and
``uv.toml`` keep working: uv reads them itself."""

from __future__ import annotations

import ast
import functools
import logging
import os
import subprocess
import sys
from collections.abc import Mapping

from runyard.config import redact_url

log = logging.getLogger(__name__)

# pip's option name -> uv's flag; each may be given several times (whitespace-separated).
LISTS = {
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
}
TRUE = {"1", "true", "yes", "on", "y"}
KNOWN = ("index-url", "no-index", *LISTS)
# Sections pip's install command reads, lowest precedence first.
SECTIONS = ("global", "install", ":env:")


def parse_config_list(text: str) -> dict[str, str]:
    """``pip config list`` output (``section.key='value'`` lines) as the options pip's
    install command would see: ``install`` over ``global``, variables over files."""
    found: dict[str, dict[str, str]] = {section: {} for section in SECTIONS}
    for line in text.splitlines():
        name, sep, raw = line.partition("=")
        section, _, key = name.rpartition(".")
        if not sep or section not in found or key not in KNOWN:
            continue
        try:
            value = ast.literal_eval(raw.strip())
        except (ValueError, SyntaxError):
            value = raw.strip().strip("'\"")
        found[section][key] = str(value)
    merged: dict[str, str] = {}
    for section in SECTIONS:
        merged.update(found[section])
    return merged


def from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The ``PIP_*`` variables among ``KNOWN`` (``PIP_FIND_LINKS`` is ``find-links``)."""
    options = {}
    for key in KNOWN:
        value = environ.get("PIP_" + key.upper().replace("-", "_"))
        if value is not None:
            options[key] = value
    return options


def uv_arguments(options: Mapping[str, str]) -> list[str]:
    """pip's options as uv flags. With ``no-index`` no index is asked at all (an offline
    wheel folder given by ``find-links`` is then the only source)."""
    arguments: list[str] = []
    no_index = options.get("no-index", "").strip().lower() in TRUE
    if no_index:
        arguments.append("--no-index")
    elif options.get("index-url", "").strip():
        arguments += ["--index-url", options["index-url"].strip()]
    for key, flag in LISTS.items():
        if no_index and key == "extra-index-url":
            continue
        for value in options.get(key, "").split():
            arguments += [flag, value]
    return arguments


def read_pip_config() -> str:
    """``pip config list`` of this host, as pip itself sees it ("" without pip)."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "config", "list"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("cannot read pip's configuration: %s", exc)
        return ""
    if done.returncode != 0:
        log.warning("cannot read pip's configuration: %s", done.stderr.strip()[-300:])
    return done.stdout


@functools.cache
def host_sources() -> tuple[str, ...]:
    """The host's package sources as uv arguments (read once per worker process)."""
    options = parse_config_list(read_pip_config())
    options.update(from_environment(os.environ))
    return tuple(uv_arguments(options))


def describe(arguments: tuple[str, ...] | list[str]) -> str:
    """The sources in one line for the build log (the index's password left out)."""
    shown = [redact_url(a) if "://" in a else a for a in arguments]
    return " ".join(shown) if shown else "uv's own defaults (no pip configuration found)"
