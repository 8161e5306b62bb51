"""`enqueue --wait` output (worker/api/follow.py): the bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
from typing import Any

import pytest

from worker.api.follow import ProgressPrinter, plain_line, render_bar


@pytest.mark.parametrize(
    ("done", "planned", "current", "bar"),
    [
        (0, 8, "preflight", "[----------] 0/8 preflight"),
        (4, 8, "pull", "[#####-----] 4/8 pull"),
        (8, 8, None, "[##########] 8/8"),
        (9, 8, "rollback", "[##########] 9/8 rollback"),
        (0, 0, "queued", "[----------] 0/0 queued"),
    ],
)
def test_render_bar(done: int, planned: int, current: str | None, bar: str) -> None:
    assert render_bar(done, planned, current) == bar


ENDED = {"kind": "step_ended"}
LINES: list[tuple[dict[str, Any], str | None]] = [
    ({"kind": "step_started", "name": "pull"}, "step pull started"),
    ({**ENDED, "name": "pull", "status": "ok", "duration_s": 2.06}, "step pull ok 2.1s"),
    (
        {**ENDED, "name": "recreate", "status": "failed", "duration_s": 61.0, "message": "sick"},
        "step recreate failed 61.0s: sick",
    ),
    ({**ENDED, "name": "report", "status": "changed", "message": "x"}, "step report changed"),
    ({"kind": "job_started", "planned": ["preflight"]}, None),
    ({"kind": "job_ended", "status": "failed"}, None),
]


@pytest.mark.parametrize(("entry", "line"), LINES)
def test_plain_line(entry: dict[str, Any], line: str | None) -> None:
    assert plain_line(entry) == line


ENTRIES: list[dict[str, Any]] = [
    {"kind": "job_started", "planned": ["preflight", "pull"]},
    {"kind": "step_started", "name": "preflight"},
    {"kind": "step_ended", "name": "preflight", "status": "ok", "duration_s": 1.0},
    {"kind": "step_started", "name": "pull"},
    {"kind": "step_ended", "name": "pull", "status": "failed", "duration_s": 2.0, "message": "no"},
]


def running(done: int, current: str | None) -> dict[str, Any]:
    return {
        "state": "running",
        "current_step": current,
        "progress": {"done": done, "planned": 2, "steps": []},
    }


def test_plain_lines_when_not_on_a_terminal() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(out, tty=False)
    printer.entries(ENTRIES)
    printer.status(running(1, "pull"))
    printer.close()
    assert out.getvalue().splitlines() == [
        "step preflight started",
        "step preflight ok 1.0s",
        "step pull started",
        "step pull failed 2.0s: no",
    ]
    assert "\r" not in out.getvalue()


def test_a_bar_redrawn_in_place_on_a_terminal() -> None:
    out = io.StringIO()
    printer = ProgressPrinter(out, tty=True)
    printer.status(running(0, "preflight"))
    printer.entries(ENTRIES[:3])
    printer.status(running(1, "pull"))
    printer.entries(ENTRIES[3:])  # the failure is printed on a line of its own
    printer.status(running(2, None))
    printer.close()
    text = out.getvalue()
    assert text.startswith("\r[----------] 0/2 preflight\r[#####-----] 1/2 pull")
    assert "\rstep pull failed 2.0s: no\n" in text
    assert text.endswith("\r[##########] 2/2 running\n")
    assert "step preflight started" not in text
