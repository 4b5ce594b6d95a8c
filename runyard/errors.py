"""One exception tree for the whole product.

The API maps each class to an HTTP status in a single exception handler; the CLI maps each
to an exit code in one place; the SDK raises the same classes from HTTP error responses, so
callers catch ``ClusterNotFound`` whether it happened locally or on the server.

Every exception Runyard defines is here, the service's and the worker's included (a
malformed message, an executor that cannot start a run): one tree to read, one place to
map. Standard library only and Python 3.9 syntax, like the rest of the run side.
"""

from __future__ import annotations


class RunyardError(Exception):
    """Base of every error Runyard raises on purpose."""

    http_status = 500
    exit_code = 1

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(RunyardError):
    """A request or argument is malformed; the message names what and why."""

    http_status = 422
    exit_code = 2


class NotSupported(InvalidInput):
    """The request asks for something Runyard does not do, or not where it was asked (a
    container on a cluster of host processes, ...). Never
    dropped silently: the message names the setting and what to do instead."""

    http_status = 400


class BadRequirement(InvalidInput):
    """A package an environment asks for that no build could install (a URL, a path, a
    malformed requirement or conda spec); the message names it and why."""


class LimitExceeded(InvalidInput):
    """A logging call went over a per-run limit; the call is dropped, the script goes on."""


class NotFound(RunyardError):
    """The named thing does not exist."""

    http_status = 404
    exit_code = 3


class ClusterNotFound(NotFound):
    """No cluster has that name."""


class RunNotFound(NotFound):
    """No run has that id."""


class Conflict(RunyardError):
    """The request is valid but clashes with the current state."""

    http_status = 409
    exit_code = 4


class AlreadyExists(Conflict):
    """Something with that name exists already."""


class IllegalTransition(Conflict):
    """The run cannot move from its current status to the requested one."""


class RunFinished(IllegalTransition):
    """The run has already ended, so it cannot be cancelled or changed."""


class ClusterBusy(Conflict):
    """The cluster still has queued or active runs."""


class SnapshotTooLarge(RunyardError):
    """A snapshot is over the size or file-count limit; the message names the largest files."""

    http_status = 413
    exit_code = 5


class UnsafeArchive(RunyardError):
    """A snapshot archive holds absolute paths, ``..``, links leading out, or device files."""

    http_status = 400
    exit_code = 5


class RequestTooLarge(RunyardError):
    """A request body is over the limit of its path."""

    http_status = 413
    exit_code = 5


class Unauthorized(RunyardError):
    """No token, or one that is unknown, revoked or expired."""

    http_status = 401
    exit_code = 9


class Forbidden(RunyardError):
    """The token is valid, but its role or scope does not allow this."""

    http_status = 403
    exit_code = 9


class RateLimited(RunyardError):
    """Too many requests of this kind from one token; the message says when to retry."""

    http_status = 429
    exit_code = 6


class ServiceUnavailable(RunyardError):
    """The Runyard service (or something it needs) cannot be reached."""

    http_status = 503
    exit_code = 6


class ConfigurationError(RunyardError):
    """Client or service configuration is missing or wrong."""

    exit_code = 7


class ConfigNotFound(ConfigurationError):
    """No ``--url``, no ``RUNYARD_URL`` and no config file in this folder or its parents:
    the message lists where it looked and how to make one."""


class MessageError(RunyardError):
    """A stream entry or task payload that cannot be decoded."""


class ExecutorUnavailable(RunyardError):
    """The run asks for an executor this worker cannot provide."""


class ExecutionFailed(RunyardError):
    """The run's process could not be started (bad interpreter, missing script...)."""


class BuildCanceled(RunyardError):
    """The run was canceled while the worker built its environment: the build stopped and
    the run ends Canceled (not an ``ExecutionFailed``: nothing failed)."""


class UnsafeEntry(RunyardError, OSError):
    """A name in a run's folder that is not what the worker may read: a link, a FIFO, a
    device, a name with a slash, or nothing at all. Also an ``OSError``, as the worker's
    file handling catches it."""


# Error classes by name, so a client can rebuild the server's error from its JSON body.
BY_NAME: dict[str, type[RunyardError]] = {}


def _register(cls: type[RunyardError]) -> None:
    BY_NAME[cls.__name__] = cls
    for sub in cls.__subclasses__():
        _register(sub)


_register(RunyardError)


class RunFailed(RunyardError):
    """A run waited on (``wait_for_completion(raise_on_error=True)``, ``runyard wait``,
    ``--follow``) ended Failed (the SDK raises it for Canceled too)."""

    exit_code = 8


class RunCanceled(RunFailed):
    """A run waited on ended Canceled: told apart from Failed by its own exit code, since a
    cancel is usually someone's decision, not a fault of the script."""

    exit_code = 10


_register(RunFailed)


# How a tracking sink tells its own loop what became of a batch of events. Never sent over
# HTTP (so not in BY_NAME); ``runyard.tracking.sinks`` catches both before they reach a script.


class RefusedBatch(RunyardError):
    """The service answered that this batch can never be accepted (a 4xx): retrying is
    pointless, and must not hold back what comes after it (complete(), say). ``error`` is
    the service's own answer."""

    def __init__(self, error: RunyardError) -> None:
        super().__init__(error.message, field=error.field)
        self.error = error


class RetryBatch(RunyardError):
    """The service is away (5xx, unreachable): the batch stays buffered for another try."""
