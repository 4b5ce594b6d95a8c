"""``runyard env prune``: an operator's command on a worker host, freeing the cache of
built environments (venvs, ``runyard-env:<hash>`` images) that no live run holds.

Service parts (worker.environments, the docker SDK) are imported when it runs, as the
other commands that start service parts do."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from runyard.cli.output import console


def prune(
    max_mib: Annotated[
        Optional[int],
        typer.Option(
            "--max-mib",
            min=0,
            help="Evict least recently used environments until the cache is this small "
            "(default: RUNYARD_ENV_CACHE_MAX_MIB)",
        ),
    ] = None,
    all_unused: Annotated[
        bool,
        typer.Option("--all-unused", help="Remove every environment no live run uses"),
    ] = False,
) -> None:
    """Free this worker host's environment cache; environments in use are kept."""
    from protocol.settings import Settings
    from worker.environments.cache import MIB, EnvironmentCache

    settings = Settings()
    cache = EnvironmentCache(settings.env_cache)
    limit = (settings.env_cache_max_mib if max_mib is None else max_mib) * MIB
    removers = {"venv": cache.remove_venv}
    image_remover = _image_remover()
    if image_remover is not None:
        removers["image"] = image_remover
    gone = cache.evict(limit, removers, all_unused=all_unused)
    for item in gone:
        console.print(f"removed {item.kind} {item.hash} ({item.size_bytes / MIB:.1f} MiB)")
    left = cache.records()
    console.print(
        f"{len(gone)} environment(s) removed; {len(left)} left, "
        f"{cache.size_bytes() / MIB:.1f} MiB in {settings.env_cache}",
        highlight=False,
    )


def _image_remover():  # type: ignore[no-untyped-def]
    """Images go through this host's Docker engine, when it has one."""
    try:
        from worker.environments.images import remove_image
        from worker.executors.docker import client

        engine = client()
    except Exception:  # no docker SDK or no engine: image records are left alone
        return None
    return lambda record: remove_image(engine, record)
