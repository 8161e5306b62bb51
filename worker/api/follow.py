"""Follow an update from a shell (`update-executor enqueue --wait`): its progress while it runs,
then its summary.

On a terminal a bar is redrawn in place (`[#####-----] 4/8 pull`); otherwise (a pipe, a log
file, CI) each step start and end is one plain line (`step pull started`, `step pull ok 2.1s`).
Both go to stderr: stdout is kept for the summary's JSON.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TextIO

from ..shared.client import JobState, UpdateClient
from ..shared.progress import EntryKind

logger = logging.getLogger("update_executor.follow")

POLL_S = 0.5
BAR_WIDTH = 10


def render_bar(done: int, planned: int, current: str | None, width: int = BAR_WIDTH) -> str:
    """`[#####-----] 4/8 pull`: the planned steps done, and the step running now."""
    filled = min(width, round(width * done / planned)) if planned > 0 else 0
    bar = f"[{'#' * filled}{'-' * (width - filled)}] {done}/{planned}"
    return f"{bar} {current}" if current else bar


def plain_line(entry: Mapping[str, Any]) -> str | None:
    """One line per step start and end; None for the other entries (the summary follows)."""
    kind, name = entry.get("kind"), entry.get("name")
    if kind == EntryKind.step_started:
        return f"step {name} started"
    if kind == EntryKind.step_ended:
        duration = entry.get("duration_s")
        line = f"step {name} {entry.get('status')}"
        if isinstance(duration, (int, float)):
            line += f" {duration:.1f}s"
        message = str(entry.get("message") or "")
        return f"{line}: {message}" if message and entry.get("status") == "failed" else line
    return None


class ProgressPrinter:
    """Writes progress to `out`: a bar redrawn with `\\r` when `tty`, plain lines otherwise."""

    def __init__(self, out: TextIO, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self._drawn = 0  # length of the bar on screen

    def entries(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            line = plain_line(entry)
            if line is None:
                continue
            if not self.tty:
                self._write(line + "\n")
            elif entry.get("kind") == EntryKind.step_ended and entry.get("status") == "failed":
                self._clear()
                self._write(line + "\n")  # a failure stays on screen above the bar

    def status(self, status: Mapping[str, Any]) -> None:
        if not self.tty:
            return
        progress = status.get("progress") or {}
        bar = render_bar(
            int(progress.get("done") or 0),
            int(progress.get("planned") or 0),
            status.get("current_step") or (str(status.get("state")) if status else None),
        )
        self._write("\r" + bar.ljust(self._drawn))
        self._drawn = len(bar)

    def close(self) -> None:
        if self.tty and self._drawn:
            self._write("\n")
            self._drawn = 0

    def _clear(self) -> None:
        if self._drawn:
            self._write("\r" + " " * self._drawn + "\r")
            self._drawn = 0

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()


async def follow(
    client: UpdateClient,
    job_id: str,
    out: TextIO,
    *,
    timeout: float | None = None,
    rejoin: Callable[[str], Awaitable[str]] | None = None,
) -> dict[str, Any]:
    """Show the job's progress on `out` until it finishes; return its summary.

    `rejoin`: for a job that was joined (the update in flight when we asked), what to follow
    when ARQ does not know it (`UpdateClient.rejoin`: the same id within the claim's grace,
    else a new job). LookupError when the job is unknown (and there is no `rejoin`),
    TimeoutError after `timeout` seconds (the update goes on)."""
    printer = ProgressPrinter(out, tty=out.isatty())
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    since: str | None = None
    try:
        while True:
            status = await client.status(job_id)
            page = await client.progress_page(job_id, since=since)
            since = page.last_id or since  # past entries that do not verify too
            printer.entries(page.entries)
            printer.status(status)
            state = status["state"]
            if state == JobState.finished:
                summary: dict[str, Any] = status["summary"]
                return summary
            if state == JobState.not_found:
                if rejoin is None:
                    raise LookupError(f"no update job {job_id} (unknown, or its result expired)")
                now_following = await rejoin(job_id)
                if now_following != job_id:
                    out.write(f"update job {job_id} never ran; following {now_following}\n")
                    job_id, since = now_following, None
            if deadline is not None and loop.time() > deadline:
                raise TimeoutError(f"update job {job_id} did not finish in {timeout} s")
            await asyncio.sleep(POLL_S)
    finally:
        printer.close()
