"""The update history (audit): one record per update, check and refused job, written by the
worker (read back by worker/shared/history.py).

Kept twice, so that "who updated what, when" has an answer after the API container was
recreated and after Redis lost its data:

- in Redis, the stream `<queue>:history`, capped at the last HISTORY_MAXLEN records; each
  entry is `p` (the record as compact JSON) and `s` (its HMAC-SHA256 with the job secret,
  empty without one), like progress entries: a record that does not verify is left out when
  read, so a Redis writer cannot forge a past update;
- on the host, an append-only JSON Lines file (HISTORY_FILE, mode 0600), renamed to
  `<file>.1` (`.1` to `.2`, ...) when it would grow over HISTORY_MAX_BYTES.

Writing never fails a job: errors are logged and the job's result is returned all the same.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from redis.exceptions import ResponseError

from ..shared.history import ROTATED_FILES, record_mac
from ..shared.keys import HISTORY_MAXLEN, history_key
from ..shared.outcome import Outcome, outcome_of
from ..shared.signing import secret_key
from .settings import Settings

logger = logging.getLogger("update_executor.history")
security_log = logging.getLogger("update_executor.security")


class RecordKind(StrEnum):
    update = "update"
    revert = "revert"  # `update-executor revert` (the request's `revert`)
    check = "check"
    refused = "refused"


# ------------------------------------------------------------------ records (pure)


def _image(state: object) -> str | None:
    """An image as the history shows it: its registry digest, else its local image ID."""
    if not isinstance(state, Mapping):
        return None
    value = state.get("digest") or state.get("image_id")
    return str(value) if value else None


def update_record(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The history record of an update job (or a refused one) from its final summary."""
    outcome = outcome_of(summary)
    request = summary.get("request") if isinstance(summary.get("request"), Mapping) else None
    services = summary.get("services")
    return {
        "kind": (
            RecordKind.refused
            if outcome is Outcome.refused
            else RecordKind.revert
            if (request or {}).get("revert") is True
            else RecordKind.update
        ).value,
        "job_id": summary.get("job_id"),
        "requested_by": (request or {}).get("requested_by"),
        "request": dict(request) if request else None,
        "status": summary.get("status"),
        "outcome": outcome.value,
        "started_at": summary.get("started_at"),
        "finished_at": summary.get("finished_at"),
        "duration_s": summary.get("duration_s"),
        "compose_project": summary.get("compose_project"),
        "services": {
            str(name): {
                "image": entry.get("image"),
                "before": _image(entry.get("before")),
                "after": _image(entry.get("after")),
                "updated": bool(entry.get("updated")),
            }
            for name, entry in (services if isinstance(services, Mapping) else {}).items()
            if isinstance(entry, Mapping)
        },
        "error": summary.get("error"),
        "rolled_back": bool(summary.get("rolled_back")),
        "notification": summary.get("notification"),
    }


def check_record(result: Mapping[str, Any]) -> dict[str, Any]:
    """The history record of a check job (worker/host/check.py's result)."""
    services = result.get("services")
    error = result.get("error")
    if error:
        status = "error"
    else:
        status = "update_available" if result.get("update_available") else "up_to_date"
    return {
        "kind": RecordKind.check.value,
        "job_id": result.get("job_id"),
        "requested_by": None,
        "request": None,
        "status": status,
        "outcome": status,
        "started_at": result.get("checked_at"),
        "finished_at": result.get("checked_at"),
        "duration_s": None,
        "compose_project": None,
        "services": {
            str(name): {
                "image": entry.get("image"),
                "before": entry.get("local_digest"),
                "after": entry.get("remote_digest"),
                "update_available": bool(entry.get("update_available")),
            }
            for name, entry in (services if isinstance(services, Mapping) else {}).items()
            if isinstance(entry, Mapping)
        },
        "error": {"step": "check", "message": str(error)} if error else None,
        "rolled_back": False,
        "notification": None,
    }


# ------------------------------------------------------------------ Redis


def encode_record(record: Mapping[str, Any], key: bytes | None) -> dict[str, str]:
    payload = json.dumps(record, separators=(",", ":"), default=str)
    return {"p": payload, "s": record_mac(key, payload) if key else ""}


# ------------------------------------------------------------------ the host's file


def rotate(path: Path, keep: int = ROTATED_FILES) -> None:
    """history.jsonl -> .1 -> .2 ... -> .<keep> (the oldest is dropped)."""
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            older.replace(path.with_name(f"{path.name}.{n + 1}"))
    if path.exists():
        path.replace(path.with_name(f"{path.name}.1"))


def append_line(path: Path, record: Mapping[str, Any], max_bytes: int) -> None:
    """Append one JSON line (0600, never through a symlink), rotating first when the file
    would grow over `max_bytes`."""
    line = (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        size = 0
    if size and size + len(line) > max_bytes:
        rotate(path)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, line)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ writing both


def stream_id_ms(stream_id: object) -> int:
    """The milliseconds part of a stream entry id (b"1700000000000-0" -> 1700000000000)."""
    text = stream_id.decode() if isinstance(stream_id, bytes) else str(stream_id)
    return int(text.split("-", 1)[0])


async def append_bound(redis: Any, settings: Settings, entry: Mapping[str, Any]) -> None:
    """XADD `entry` under the stream id `<at>-0`, with `at` (ms) inside the signed record.

    A record is then bound to its place in the stream (worker/shared/history.py checks that
    the id is `<at>-0`): stream ids only grow, so a valid record cannot be added again (its id
    is taken, or smaller than the top) nor moved; a copy under another id does not verify.
    `at` is the worker's clock, or one more than the stream's top id when that is later (a
    clock set back, a top id a Redis writer put in the future)."""
    stream = history_key(settings.queue_name)
    at = int(time.time() * 1000)
    for _ in range(3):
        try:
            await redis.xadd(
                stream,
                encode_record({**entry, "at": at}, secret_key(settings)),
                id=f"{at}-0",
                maxlen=HISTORY_MAXLEN,
                approximate=False,
            )
            return
        except ResponseError as exc:
            if "equal or smaller" not in str(exc):
                raise
            top = await redis.xrevrange(stream, "+", "-", count=1)
            at = max(at, stream_id_ms(top[0][0]) + 1) if top else at + 1
    raise RuntimeError("the stream's top id keeps moving ahead")


async def record(redis: Any | None, settings: Settings, entry: Mapping[str, Any]) -> None:
    """Append `entry` to the Redis stream and the host's file; never raises."""
    if redis is not None:
        try:
            await append_bound(redis, settings, entry)
        except Exception as exc:
            logger.warning("job %s: history not written to Redis: %s", entry.get("job_id"), exc)
    if settings.history_file is not None:
        try:
            await asyncio.to_thread(
                append_line, settings.history_file, entry, settings.history_max_bytes
            )
        except OSError as exc:
            logger.warning(
                "job %s: history not written to %s: %s",
                entry.get("job_id"),
                settings.history_file,
                exc.strerror or exc,
            )
