"""Following a run from the notebook's kernel: a thread of its own reads the run's live
event stream (``GET /runs/{id}/events``, series names only) and, after each burst of
events, reads again what changed, handing every new ``RunView`` to its listeners (the
panels showing the run).

The thread talks to the API exactly as the SDK does, with the user's token from the
workspace: nothing reaches the browser but the rendered view. A lost stream (the service
restarting) is opened again, the view saying so meanwhile. It ends when the run ends, or at
``stop()``, which cancels the stream (an idle stream has nothing to wake a blocking
read, hence asyncio) and returns once the thread is gone, so a closed widget never keeps
one of the token's live-stream slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import threading
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import httpx
from httpx_sse import aconnect_sse

from runyard import api_paths as paths
from runyard.config import redact_url
from runyard.errors import ConfigurationError, RunyardError, ServiceUnavailable
from runyard.tracking.sinks import warn
from runyard.transport import API, error_from
from runyard.widgets import view as v
from runyard.widgets.view import RunView

STREAM_READ_TIMEOUT = 60.0  # the API sends a keep-alive every 15 s: 60 s of silence is a loss
RECONNECT_DELAYS = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before each new try; then every 30 s


Listener = Callable[[RunView], None]


class LiveFeed:
    """One run followed by one thread and one stream, for every panel showing that run."""

    def __init__(
        self,
        base_url: str,
        headers: Dict[str, str],
        start: RunView,
        transport: Optional[httpx.AsyncBaseTransport] = None,  # unit tests' fake service
    ) -> None:
        self.base_url = base_url.rstrip("/") + API
        self.headers = dict(headers)
        self.view = start
        self.transport = transport
        self.reconnect_delays = RECONNECT_DELAYS
        self._listeners: List[Listener] = []
        self._lock = threading.Lock()
        self._version = 0  # how many views were shown: a listener's view is current or not
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._task: Optional[asyncio.Task[None]] = None
        self._ready = threading.Event()
        self._stopped = False
        self._thread = threading.Thread(
            target=self._main, name=f"runyard-widget-{start.run_id}", daemon=True
        )

    def listen(self, listener: Listener) -> None:
        """Call ``listener`` with the view now and with every new one, never an older view
        after a newer one: it joins the listeners the thread calls only once the view it
        was given last is still the latest (a newer one shown meanwhile is given first)."""
        with self._lock:
            view, version = self.view, self._version
        while True:
            listener(view)  # outside the lock: a panel may take its time
            with self._lock:
                if version == self._version:
                    self._listeners.append(listener)
                    return
                view, version = self.view, self._version

    def unlisten(self, listener: Listener) -> int:
        """Stop calling ``listener``; returns how many listeners are left."""
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)
            return len(self._listeners)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()  # the loop exists: stop() can reach it from now on

    def stop(self) -> None:
        """End the stream and the thread; returns once the thread has ended."""
        self._stopped = True
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            # The loop may close meanwhile: the thread is ending anyway.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(task.cancel)
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join()

    def join(self, timeout: Optional[float] = None) -> None:
        self._thread.join(timeout)

    # --- the thread ----------------------------------------------------------------------

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(self._follow())
            self._ready.set()
            if self._stopped:
                self._task.cancel()
            loop.run_until_complete(asyncio.gather(self._task, return_exceptions=True))
        finally:
            self._ready.set()
            loop.close()

    def _show(self, view: RunView) -> None:
        with self._lock:
            self.view = view
            self._version += 1
            listeners = [] if self._stopped else list(self._listeners)
        for listener in listeners:
            try:
                listener(view)
            except Exception as exc:  # one broken panel must not stop the others
                self.unlisten(listener)
                warn(f"a run widget stopped updating: {type(exc).__name__}: {exc}")

    async def _follow(self) -> None:
        async with httpx.AsyncClient(
            base_url=self.base_url,
            headers=self.headers,
            timeout=httpx.Timeout(30.0, read=STREAM_READ_TIMEOUT),
            verify=ssl.create_default_context(),  # the CA store urllib (the SDK) trusts
            transport=self.transport,
        ) as http:
            reader = _Reader(http, self.view.run_id)
            for attempt in itertools.count():
                try:
                    await self._stream(http, reader)
                    return
                except ServiceUnavailable as exc:  # restarting, or behind: it comes back
                    problem = str(exc)
                except RunyardError as exc:  # not found, not allowed, too many streams
                    self._show(self.view.with_problem(f"stopped following the run: {exc}"))
                    return
                except httpx.TransportError as exc:
                    problem = (
                        f"lost the live stream from {self.base_url}: {exc or type(exc).__name__}"
                    )
                except Exception as exc:  # a bug, or an answer of a shape never expected
                    # Said in the panel: a feed that dies silently leaves it on "Running".
                    said = f"{type(exc).__name__}: {exc}"
                    self._show(self.view.with_problem(f"stopped following the run: {said}"))
                    return
                delay = self.reconnect_delays[min(attempt, len(self.reconnect_delays) - 1)]
                self._show(self.view.with_problem(f"{problem}; trying again in {delay:g} s"))
                await asyncio.sleep(delay)

    async def _stream(self, http: httpx.AsyncClient, reader: _Reader) -> None:
        touched: Set[str] = set()
        changed = asyncio.Event()
        path = paths.run_events(self.view.run_id)
        async with aconnect_sse(http, "GET", path, params={"values": "false"}) as source:
            await _raise_for_status(source.response, path)
            events = source.aiter_sse()
            # The stream opens with the run's status; reading the run after that misses
            # nothing logged meanwhile (it comes on the stream).
            with contextlib.suppress(StopAsyncIteration):
                await events.__anext__()
                self._show(await reader.everything(self.view))
                if not self.view.ended:
                    await _first_to_end(
                        self._listen(events, touched, changed),
                        self._refresh(reader, touched, changed),
                    )
        # The stream ends after the run's final status: read everything once more.
        self._show(await reader.everything(self.view))
        if not self.view.ended:  # closed early (a proxy, a restart): open it again
            raise ServiceUnavailable("the live stream closed before the run ended")

    @staticmethod
    async def _listen(events: Any, touched: Set[str], changed: asyncio.Event) -> None:
        """Note what each event says changed, until the stream ends."""
        async for event in events:
            if event.event == "metrics":
                touched.update(event.json().get("names", []))
                changed.set()
            elif event.event == "status":
                changed.set()

    async def _refresh(self, reader: _Reader, touched: Set[str], changed: asyncio.Event) -> None:
        """One read per burst of events, however many arrived while the last read ran."""
        while True:
            await changed.wait()
            changed.clear()
            names = set(touched)
            touched.clear()
            self._show(await reader.update(self.view, names))


async def _first_to_end(*coroutines: Any) -> None:
    """Run them together until one returns or raises; cancel the rest; raise its error."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()


class _Reader:
    """The reads behind a view, each after everything reported before it is stored."""

    def __init__(self, http: httpx.AsyncClient, run_id: str) -> None:
        self.http = http
        self.run_id = run_id

    async def get(self, path: str, params: Optional[Dict[str, Any]] = None) -> Any:
        response = await self.http.get(path, params=params)
        await _raise_for_status(response, path)
        try:
            return response.json()
        except ValueError:  # something answered, but not Runyard (a proxy's page)
            kind = response.headers.get("content-type", "no JSON").split(";")[0]
            raise ConfigurationError(
                f"{redact_url(str(response.url))} did not answer as Runyard does ({kind} "
                "instead of JSON)"
            ) from None

    async def update(self, view: RunView, names: Optional[Set[str]] = None) -> RunView:
        """The run, its series, and the charts of ``names`` (all of them when None) and of
        series new to the view: the reads ``view.reads`` plans, made asynchronously."""
        plan = v.reads(view, names)
        try:
            read = next(plan)
            while True:
                read = plan.send(await self.get(read.path, read.params))
        except StopIteration as done:
            return done.value

    async def everything(self, view: RunView) -> RunView:
        return await self.update(view, None)


async def _raise_for_status(response: httpx.Response, path: str) -> None:
    if response.is_error:
        body = await response.aread()
        raise error_from(response.status_code, body, path)


_following: Dict[Tuple[str, str, str], LiveFeed] = {}
_following_lock = threading.Lock()


def shared_feed(
    base_url: str,
    headers: Dict[str, str],
    start: RunView,
    transport: Optional[httpx.AsyncBaseTransport] = None,
) -> LiveFeed:
    """The feed already following this run in this kernel with these credentials, else a
    new one, started: a cell run again shows the same run without opening another of the
    token's streams, and a second workspace (another token) never reads with the first's."""
    key = (base_url.rstrip("/"), start.run_id, headers.get("Authorization", ""))
    with _following_lock:
        feed = _following.get(key)
        if feed is None or not feed.alive or feed.stopped:
            feed = LiveFeed(base_url, headers, start, transport)
            feed.start()
            _following[key] = feed
        return feed
