"""Refused jobs reported in bulk (worker/host/refusals.py, issue 21): at most one report per
interval, the first refusal of a burst logged, reasons counted by kind. A fake clock."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from worker.host.arq_worker import _QuietRefusals
from worker.host.refusals import Refusals, headline, reason_kind, refusal_message, refusal_record

AT = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_at_most_one_report_per_interval_and_one_logged_line_per_burst() -> None:
    clock = Clock()
    refusals = Refusals(600, clock=clock)
    assert refusals.add("j1", "the payload is not signed", AT) is True  # opens the burst
    first = refusals.take()
    assert first is not None and first.count == 1  # reported at once
    logged = [refusals.add(f"j{n}", "the payload is not JSON", AT) for n in range(2, 1001)]
    assert not any(logged)
    assert refusals.take() is None  # not within the interval
    clock.now += 599
    assert refusals.take() is None
    clock.now += 1
    rest = refusals.take()
    assert rest is not None and rest.count == 999
    assert rest.job_ids == ["j2", "j3", "j4", "j5", "j6"]
    assert refusals.take() is None  # nothing pending
    clock.now += 601
    assert refusals.add("j1001", "x", AT) is True  # a new burst is logged again


def test_at_stop_what_is_pending_is_taken_even_before_the_interval() -> None:
    clock = Clock()
    refusals = Refusals(600, clock=clock)
    refusals.add("j1", "r", AT)
    assert refusals.take() is not None
    refusals.add("j2", "r", AT)
    assert refusals.due() is False
    batch = refusals.take(force=True)
    assert batch is not None and batch.count == 1


def test_reasons_are_counted_by_kind_and_the_report_says_it_all() -> None:
    refusals = Refusals(600, clock=Clock())
    for size in (70000, 80000):
        refusals.add("j", f"the job is {size} bytes, over the 65536-byte limit", AT)
    refusals.add("bad\nid", "the payload is not JSON\n\x1b[31m", AT)
    batch = refusals.take()
    assert batch is not None
    assert dict(batch.reasons) == {
        "the job is N bytes, over the N-byte limit": 2,
        "the payload is not JSON  [Nm": 1,
    }
    assert batch.job_ids == ["j", "j", "invalid"]
    text = headline(batch, 600)
    assert text.startswith("3 jobs refused in the last 10 minutes; first at 2026-12-07T06:00:00Z")
    assert "2 x the job is N bytes" in text
    message = refusal_message(batch, "shop", 600)
    assert message.title == "Jobs refused (3): shop"
    record = refusal_record(batch, "shop", 600, "sent")
    assert (record["kind"], record["outcome"], record["count"]) == ("refused", "refused", 3)
    assert (record["job_id"], record["job_ids"]) == ("j", ["j", "j", "invalid"])
    assert record["error"]["message"] == text


def test_reason_kind_is_one_line() -> None:
    assert reason_kind("a\nb") == "a b"
    assert len(reason_kind("x" * 1000)) == 200


def test_arq_lines_about_refused_jobs_are_dropped() -> None:
    quiet = _QuietRefusals()

    def record(msg: str, *args: object, level: int = logging.INFO) -> logging.LogRecord:
        return logging.LogRecord("arq.worker", level, __file__, 1, msg, args, None)

    assert not quiet.filter(record("%6.2fs → %s(%s)%s", 0.1, "abc:rejected_job", "", ""))
    assert quiet.filter(record("%6.2fs → %s(%s)%s", 0.1, "abc:process_system_update", "", ""))
    assert quiet.filter(record("%s", "abc:rejected_job", level=logging.ERROR))
