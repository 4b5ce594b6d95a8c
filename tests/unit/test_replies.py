"""Redis replies read as text (``protocol.replies``): whichever way the client was made."""

from __future__ import annotations

from protocol.messages import StateChanged, decode
from protocol.replies import as_text
from runyard.status import RunStatus


def test_a_reply_reads_the_same_from_a_bytes_or_a_str_client() -> None:
    assert as_text(b"1700000000000-0") == as_text("1700000000000-0") == "1700000000000-0"


def test_a_stream_entry_decodes_from_bytes_fields_as_from_str_fields() -> None:
    fields = StateChanged(run_id="exp_1_ab", status=RunStatus.RUNNING).encode()
    as_bytes = {k.encode(): v.encode() for k, v in fields.items()}
    assert decode(as_bytes) == decode(fields)
