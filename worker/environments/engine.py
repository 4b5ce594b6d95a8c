"""Docker engine calls a build waits on (an image build, a registry pull or push), cut
when the build must stop: past its deadline, or once its run is canceled. The engine
stops a build or a transfer whose client went away, so cutting the connection is how a
streamed call is cancelled."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import Any

import docker

from worker.environments.build_log import Deadline


class Cuttable(docker.APIClient):
    """An API client that keeps the streaming response of its call, so it can be cut."""

    response: Any = None

    def _post(self, *args: Any, **kwargs: Any) -> Any:
        response = super()._post(*args, **kwargs)
        if kwargs.get("stream"):
            self.response = response
        return response

    def sever(self) -> None:
        if self.response is None:
            return
        with contextlib.suppress(Exception):
            raw = self._get_raw_response_socket(self.response)
            getattr(raw, "_sock", raw).shutdown(socket.SHUT_RDWR)


def _nothing() -> None:
    return None


@contextlib.contextmanager
def cut_at(
    engine: docker.DockerClient, deadline: Deadline, first: Callable[[], None] = _nothing
) -> Iterator[Cuttable]:
    """A client of ``engine`` for one streamed call, cut (after ``first``: removing what
    the call runs, say) when ``deadline`` is reached; the deadline's reason is raised
    then, whatever the cut connection raised."""
    api = Cuttable(**docker.utils.kwargs_from_env(), version=engine.api.api_version, timeout=120)

    def cut() -> None:
        first()
        api.sever()

    try:
        with deadline.watch(cut) as watch:
            try:
                yield api
            except Exception as exc:  # a cut connection shows as anything urllib3 raises
                if watch.reason is None:
                    raise
                raise watch.reason from exc
    finally:
        api.close()
    if watch.reason is not None:
        raise watch.reason
