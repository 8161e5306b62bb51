"""Reading progress entries and history records a Redis writer may have written (issue 21):
one log line per read whatever the number of bad entries, a cursor past them, no exception for
non-UTF-8 or non-ASCII fields."""

from __future__ import annotations

import json
import logging

import pytest

from worker.host.progress import ProgressEntry, encode_entry
from worker.shared.history import check_record, record_mac
from worker.shared.progress import MAX_ENTRY_CHARS, EntryKind, decode_page

KEY = b"k" * 32


def good(n: int) -> tuple[bytes, dict[bytes, bytes]]:
    entry = ProgressEntry(EntryKind.step_started, "2026-01-01T00:00:00+00:00", name=f"s{n}")
    fields = encode_entry(entry, "job1", KEY)
    return f"{n}-0".encode(), {k.encode(): v.encode() for k, v in fields.items()}


BAD: list[dict[bytes, bytes]] = [
    {b"p": b"\xff", b"s": b"\xfe"},  # not UTF-8
    {b"p": b"{}", b"s": "é".encode()},  # a non-ASCII signature
    {b"p": b"{}", b"s": b"0" * 64},  # unsigned
    {b"p": b"x" * (MAX_ENTRY_CHARS + 1), b"s": b""},  # oversized
]


def test_a_page_logs_one_line_for_all_bad_entries_and_moves_past_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="update_executor.security")
    raw = [good(1)] + [(f"{n}-0".encode(), BAD[n % len(BAD)]) for n in range(2, 1002)]
    page = decode_page(raw, "job1", KEY)
    assert [e["name"] for e in page.entries] == ["s1"]
    assert page.last_id == "1001-0" and page.ignored == 1000
    assert [r.getMessage() for r in caplog.records] == [
        "progress of job job1: 1000 entries ignored (first 2-0: its signature does not verify)"
    ]
    assert decode_page([], "job1", KEY).last_id is None


@pytest.mark.parametrize("fields", BAD, ids=["not UTF-8", "non-ASCII MAC", "unsigned", "big"])
def test_a_bad_history_record_is_a_reason_never_an_exception(fields: dict[bytes, bytes]) -> None:
    assert isinstance(check_record(b"1-0", fields, KEY), str)


def test_a_signed_history_record_is_read() -> None:
    payload = json.dumps({"kind": "update", "job_id": "j", "at": 1})
    fields = {b"p": payload.encode(), b"s": record_mac(KEY, payload).encode()}
    assert check_record(b"1-0", fields, KEY) == {
        "id": "1-0",
        "kind": "update",
        "job_id": "j",
        "at": 1,
    }
    # The same signed record under another stream id (added again, moved) is left out.
    assert (
        check_record(b"2-0", fields, KEY)
        == "it was not written under this id (added again or moved)"
    )
