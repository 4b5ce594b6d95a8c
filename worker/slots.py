"""A worker's slots, and the GPUs each one owns.

Each slot runs one run at a time. A node's GPUs are split evenly between its slots, so a
run only ever gets the device ids of its own slot, never "all".
"""

from __future__ import annotations

import threading


class SlotPool:
    def __init__(self, slots: int, gpus: list[str] | None = None) -> None:
        self.count = slots
        self.all_gpus = list(gpus or [])
        per_slot = len(self.all_gpus) // slots if slots else 0
        self._gpus = [self.all_gpus[i * per_slot : (i + 1) * per_slot] for i in range(slots)]
        self._free = list(range(slots))
        self._lock = threading.Condition()

    def acquire(self) -> int:
        """The lowest free slot (Celery never runs more tasks than slots; waits if it did)."""
        with self._lock:
            while not self._free:
                self._lock.wait()
            self._free.sort()
            return self._free.pop(0)

    def release(self, slot: int) -> None:
        with self._lock:
            self._free.append(slot)
            self._lock.notify()

    def gpus(self, slot: int) -> list[str]:
        return list(self._gpus[slot])
