"""Environments the worker builds: a run's pip and conda packages, installed by uv from the
worker host's own package index into a venv (local clusters) or an image built with no
network (Docker clusters), content-addressed and cached, one build for many runs.

Modules, one concept each: ``config`` (the settings a build needs), ``sources`` (the
host's pip configuration as uv arguments), ``build_log`` (streaming an installer's output
into the run's log, with a deadline), ``failures`` (an installer's error in plain words),
``locks`` (one build for many runs; pins that keep an environment in use from eviction),
``cache`` (records, sizes, least-recently-used eviction), ``venvs`` and ``images`` (the two
kinds of build), ``used`` (what a run is told it got)."""
