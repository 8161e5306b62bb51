"""The update history (audit): one record per update, check and refused job.

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
import hashlib
import hmac
import json
import logging
import os
from collections.abc import Mapping, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..shared.outcome import Outcome, outcome_of
from ..shared.signing import secret_key
from .settings import Settings

logger = logging.getLogger("update_executor.history")
security_log = logging.getLogger("update_executor.security")

HISTORY_MAXLEN = 500
HISTORY_DOMAIN = b"update-executor history v1\n"
# Rotated files kept next to HISTORY_FILE: <file>.1 (newest) .. <file>.<ROTATED_FILES>.
ROTATED_FILES = 3
MAX_LIMIT = HISTORY_MAXLEN


class RecordKind(StrEnum):
    update = "update"
    check = "check"
    refused = "refused"


def history_key(queue_name: str) -> str:
    return f"{queue_name}:history"


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
        "kind": (RecordKind.refused if outcome is Outcome.refused else RecordKind.update).value,
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
    """The history record of a check job (worker/check.py's result)."""
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


def _mac(key: bytes, payload: str) -> str:
    return hmac.new(key, HISTORY_DOMAIN + payload.encode(), hashlib.sha256).hexdigest()


def encode_record(record: Mapping[str, Any], key: bytes | None) -> dict[str, str]:
    payload = json.dumps(record, separators=(",", ":"), default=str)
    return {"p": payload, "s": _mac(key, payload) if key else ""}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def decode_record(
    stream_id: object, fields: Mapping[Any, Any], key: bytes | None
) -> dict[str, Any] | None:
    """A record with its stream `id`, or None (logged) when it does not verify."""
    raw = {_text(k): _text(v) for k, v in fields.items()}
    payload, signature = raw.get("p", ""), raw.get("s", "")
    if key is not None and not hmac.compare_digest(_mac(key, payload), signature):
        security_log.warning(
            "history record %s ignored: its signature does not verify", _text(stream_id)
        )
        return None
    try:
        data = json.loads(payload)
    except ValueError:
        logger.warning("history record %s is not JSON", _text(stream_id))
        return None
    if not isinstance(data, dict):
        return None
    return {"id": _text(stream_id), **data}


async def read_history(redis: Any, settings: Settings, limit: int = 50) -> list[dict[str, Any]]:
    """The last `limit` records that verify, oldest first."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    raw = await redis.xrevrange(history_key(settings.queue_name), "+", "-", count=limit)
    key = secret_key(settings)
    records = (decode_record(stream_id, fields, key) for stream_id, fields in reversed(raw))
    return [record for record in records if record is not None]


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


def read_history_file(path: Path, limit: int = 50) -> list[dict[str, Any]]:
    """The last `limit` records of the file (and of its rotated copies if needed), oldest
    first; lines that are not JSON objects are skipped."""
    records: list[dict[str, Any]] = []
    files = [path] + [path.with_name(f"{path.name}.{n}") for n in range(1, ROTATED_FILES + 1)]
    for file in files:
        if len(records) >= limit:
            break
        try:
            lines = file.read_text().splitlines()
        except FileNotFoundError:
            continue
        older: list[dict[str, Any]] = []
        for line in lines:
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                older.append(data)
        records = older + records
    return records[-limit:]


# ------------------------------------------------------------------ writing both


async def record(redis: Any | None, settings: Settings, entry: Mapping[str, Any]) -> None:
    """Append `entry` to the Redis stream and the host's file; never raises."""
    if redis is not None:
        try:
            await redis.xadd(
                history_key(settings.queue_name),
                encode_record(entry, secret_key(settings)),
                maxlen=HISTORY_MAXLEN,
                approximate=False,
            )
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


def format_history_table(records: Sequence[Mapping[str, Any]]) -> str:
    """`update-executor history`: one line per record, oldest first."""
    if not records:
        return "no history yet"
    rows = [("FINISHED", "KIND", "OUTCOME", "BY", "SERVICES", "JOB", "ERROR")]
    for entry in records:
        services = entry.get("services") or {}
        changed = [
            name
            for name, svc in services.items()
            if isinstance(svc, Mapping) and (svc.get("updated") or svc.get("update_available"))
        ]
        error = entry.get("error") or {}
        rows.append(
            (
                str(entry.get("finished_at") or "-")[:19].replace("T", " "),
                str(entry.get("kind") or "-"),
                str(entry.get("outcome") or entry.get("status") or "-"),
                str(entry.get("requested_by") or "-"),
                ",".join(changed) or "-",
                str(entry.get("job_id") or "-"),
                (f"{error.get('step')}: {error.get('message')}" if error else "")[:80],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    ).rstrip()
