"""The child processes ``runyard up`` supervises: how one is started (in its own session,
dying with its parent), signalled and checked, and the local ports they listen on."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from runyard.errors import ServiceUnavailable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@dataclass
class Child:
    """A process `runyard up` runs, and what it takes to run it again."""

    name: str
    command: list[str]
    env: dict[str, str] | None = None
    death_signal: int = signal.SIGKILL  # what the kernel sends it when `up` dies
    quiet: bool = False  # its stdout to /dev/null
    worker_id: str = ""  # a worker: its id, and the slots it serves its cluster with
    nodes: int = 0
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    deaths: int = 0  # quick deaths in a row
    restart_at: float | None = None
    signalled: bool = False  # a worker already told to stop (a second signal would force it)

    def start(self) -> None:
        # Own sessions: Ctrl+C reaches `up` alone, which then stops them in order.
        self.process = subprocess.Popen(
            self.command,
            env=self.env,
            stdout=subprocess.DEVNULL if self.quiet else None,
            start_new_session=True,
            preexec_fn=dies_with(os.getpid(), self.death_signal),
        )
        self.started = time.monotonic()
        self.restart_at = None
        self.signalled = False

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send(self, sig: int) -> None:
        if self.running():
            assert self.process is not None
            self.process.send_signal(sig)


def dies_with(parent: int, sig: int) -> Callable[[], None] | None:
    """A child's preexec: the kernel sends it ``sig`` when ``runyard up`` dies, however it
    dies (SIGKILL included). Linux only; elsewhere None."""
    if sys.platform != "linux":
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # `up` died before the line above: no signal would come
            os.kill(os.getpid(), sig)

    return preexec


def port_in_use(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1" if host in ("0.0.0.0", "::") else host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise ServiceUnavailable(f"redis-server did not start on port {port}")
