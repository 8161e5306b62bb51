"""Reading an update's progress back: what a UI shows while and after a job runs.

The worker writes each step's start and end to the Redis stream `<queue>:progress:<job id>`
(worker/host/progress.py); each entry has two fields: `p`, the entry as compact JSON (with
the job id, `job`), and `s`, its HMAC-SHA256 with the job secret (empty without one), so a
Redis writer cannot make a UI show progress the worker never reported. This module verifies
the entries (`decode_entry`) and folds them into the steps a UI lists (`fold_progress`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .bounded import MAX_RECORD_CHARS
from .result import NOT_REACHED, Step, StepStatus
from .untrusted import loggable

logger = logging.getLogger("update_executor.progress")
security_log = logging.getLogger("update_executor.security")

PROGRESS_DOMAIN = b"update-executor progress v1\n"
STREAM_ID = re.compile(r"\d{1,20}(-\d{1,20})?")
# One read of a progress stream takes at most this many entries (XRANGE ... COUNT): a run
# writes about 25 and the worker keeps about STREAM_MAXLEN (500), so one read gets a real
# job's whole stream, while a Redis writer's million entries cost one bounded read each.
PROGRESS_PAGE = 1000
# A real entry is a few hundred characters, a few kB with a long error message.
MAX_ENTRY_CHARS = MAX_RECORD_CHARS
# A step shown to a UI before it ends; once the job ended, a planned step that never started.
RUNNING = "running"
PENDING = "pending"


class EntryKind(StrEnum):
    job_started = "job_started"
    step_started = "step_started"
    step_ended = "step_ended"
    job_ended = "job_ended"


INTERRUPTED = "interrupted: the job ended while this step ran"


def new_step(name: str, status: str) -> dict[str, Any]:
    return {"name": name, "status": status, "started_at": None, "duration_s": None, "message": ""}


def fold_progress(
    entries: Sequence[Mapping[str, Any]], *, job_finished: bool = False
) -> dict[str, Any]:
    """What a UI shows, from a job's entries (as `UpdateClient.progress` returns them):
    `current_step`, and `progress` = {done, planned, steps}. `steps` lists the planned steps
    and any other step that started (rollback), in playbook order, each with `name`, `status`
    (`pending`, `running`, or a step status), `planned`, `started_at`, `duration_s`,
    `message`. `done` counts the planned steps that ended.

    Once the job ended (a `job_ended` entry, or `job_finished`: ARQ has its result, e.g. of a
    job aborted without a last entry), no step is pending or running any more: a step that
    never started is skipped (not reached), one that never ended failed (interrupted)."""
    planned: list[str] = []
    steps: dict[str, dict[str, Any]] = {}
    ended = job_finished
    for entry in entries:
        kind, name = entry.get("kind"), entry.get("name")
        if kind == EntryKind.job_started:
            planned = [str(n) for n in entry.get("planned") or []]
        elif kind == EntryKind.job_ended:
            ended = True
        elif isinstance(name, str) and kind in (EntryKind.step_started, EntryKind.step_ended):
            step = steps.setdefault(name, new_step(name, RUNNING))
            if kind == EntryKind.step_started:
                step.update(status=RUNNING, started_at=entry.get("at"))
            else:
                step.update(
                    status=str(entry.get("status")),
                    duration_s=entry.get("duration_s"),
                    message=str(entry.get("message") or ""),
                )
    known = {step.value: index for index, step in enumerate(Step)}
    names = sorted(set(planned) | set(steps), key=lambda n: (known.get(n, len(known)), n))
    listed: list[dict[str, Any]] = []
    for name in names:
        step = steps.get(name) or new_step(name, PENDING)
        if ended and step["status"] == PENDING:
            step.update(status=StepStatus.skipped.value, message=NOT_REACHED)
        elif ended and step["status"] == RUNNING:
            step.update(status=StepStatus.failed.value, message=INTERRUPTED)
        listed.append({**step, "planned": name in planned})
    current = next((s["name"] for s in listed if s["status"] == RUNNING), None)
    done = sum(
        1
        for s in listed
        if s["planned"] and s["status"] not in (PENDING, RUNNING) and s["name"] in steps
    )
    return {
        "current_step": current,
        "progress": {"done": done, "planned": len(planned), "steps": listed},
    }


def entry_mac(key: bytes, payload: str) -> str:
    return hmac.new(key, PROGRESS_DOMAIN + payload.encode(), hashlib.sha256).hexdigest()


def _text(value: object, errors: str = "strict") -> str:
    return value.decode("utf-8", errors) if isinstance(value, bytes) else str(value)


def check_entry(
    stream_id: object, fields: Mapping[Any, Any], job_id: str, key: bytes | None
) -> dict[str, Any] | str:
    """An entry as a dict with its stream `id`, or why it is left out (a str). Logs nothing:
    a Redis writer can add a million bad entries, so callers log one line per read."""
    try:
        raw = {_text(k): _text(v) for k, v in fields.items()}
    except UnicodeDecodeError:  # never written by the worker: only a Redis writer does that
        return "not UTF-8"
    payload, signature = raw.get("p", ""), raw.get("s", "")
    if len(payload) > MAX_ENTRY_CHARS:
        return f"over {MAX_ENTRY_CHARS} characters"
    if key is not None and not hmac.compare_digest(
        entry_mac(key, payload).encode(), signature.encode()
    ):
        return "its signature does not verify"
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return "not JSON"
    if not isinstance(data, dict) or data.pop("job", None) != job_id:
        return f"not one of job {job_id}"
    return {"id": _text(stream_id, "replace"), **data}


def decode_entry(
    stream_id: object, fields: Mapping[Any, Any], job_id: str, key: bytes | None
) -> dict[str, Any] | None:
    """An entry as a dict with its stream `id`, or None (logged) when it does not verify."""
    checked = check_entry(stream_id, fields, job_id, key)
    if isinstance(checked, str):
        security_log.warning(
            "progress entry %s of job %s ignored: %s", loggable(stream_id), job_id, checked
        )
        return None
    return checked


@dataclass(frozen=True)
class ProgressPage:
    """One bounded read of a progress stream: the entries that verify, the id of the last
    entry read (verified or not: where the next read starts, so a bad entry is read once),
    and how many were left out."""

    entries: list[dict[str, Any]]
    last_id: str | None
    ignored: int = 0


def decode_page(
    raw: Sequence[tuple[Any, Mapping[Any, Any]]], job_id: str, key: bytes | None
) -> ProgressPage:
    """The entries of one XRANGE answer that verify; ONE log line for all that do not (with
    their count, the first's id and reason), however many a Redis writer added."""
    entries: list[dict[str, Any]] = []
    ignored = 0
    first: tuple[object, str] | None = None
    for stream_id, fields in raw:
        checked = check_entry(stream_id, fields, job_id, key)
        if isinstance(checked, str):
            ignored += 1
            first = first or (stream_id, checked)
        else:
            entries.append(checked)
    if first is not None:
        security_log.warning(
            "progress of job %s: %d entr%s ignored (first %s: %s)",
            job_id,
            ignored,
            "y" if ignored == 1 else "ies",
            loggable(first[0]),
            first[1],
        )
    last_id = _text(raw[-1][0], "replace") if raw else None
    return ProgressPage(entries, last_id, ignored)


def check_stream_id(since: str) -> str:
    """A stream id a caller passed (e.g. an SSE Last-Event-ID), or a clear error."""
    if not STREAM_ID.fullmatch(since):
        raise ValueError(f"not a progress entry id: {since[:40]!r} (expected e.g. 1700000000000-0)")
    return since
