"""Following a run to its end: ``wait_for_completion`` and the CLI's ``--follow`` /
``runyard wait`` share it, so both survive a live stream that closes early alike."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, Optional

from runyard.errors import ServiceUnavailable
from runyard.status import RunStatus
from runyard.tracking.sinks import warn

POLL_INTERVAL = 1.0  # seconds before reading again when the stream said nothing


def follow_to_end(
    client: Any,
    run_id: str,
    write: Optional[Callable[[str], None]] = None,
    patience: Optional[int] = None,
) -> Dict[str, Any]:
    """The run as stored once it has ended, each new piece of its log handed to ``write``
    meanwhile (none: the log is not fetched).

    The live stream ends after the run's final status, but it may also close early (the API
    restarting, a proxy's idle timeout): then the run is read, and while it has not ended
    the stream is opened again, going on after the last log chunk seen (chunks are
    numbered). ``patience``: how many reads in a row the service may fail before this gives
    up with ``ServiceUnavailable`` (None: wait it out, however long).
    """
    seen, misses, status = -1, 0, "unknown"
    while True:
        heard = False
        try:
            for event, data in client.events(run_id, history=write is not None):
                heard = True
                if event == "status":
                    status = str(data.get("status", status))
                elif event == "log" and write is not None and data.get("seq", seen + 1) > seen:
                    seen = data.get("seq", seen + 1)
                    write(data["text"])
                    sys.stdout.flush()
        except ServiceUnavailable as exc:
            warn(f"lost the run's live stream ({exc}); reading its status instead")
        # ``fresh``: read once the service has stored every report made before the read,
        # so the end (and its reason and exit code) shows, not just the stream's word of it.
        try:
            details = client.get_run(run_id, fresh=True)
        except ServiceUnavailable as exc:
            misses += 1
            if patience is not None and misses > patience:
                raise ServiceUnavailable(
                    f"lost the stream; run {run_id} is still {status} ({exc})"
                ) from None
            warn(f"waiting for the service to answer: {exc}")
        else:
            misses, status = 0, str(details["status"])
            if RunStatus(details["status"]).is_terminal:
                return details
        if not heard:  # nothing came: do not knock again at once
            time.sleep(POLL_INTERVAL)
