"""Reading the update history back (written by the worker, worker/host/history.py): from
the Redis stream `<queue>:history` (records that do not verify against the job secret are
left out) or from the host's JSON Lines file (HISTORY_FILE and its rotated copies).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .bounded import MAX_RECORD_CHARS
from .keys import HISTORY_MAXLEN, history_key
from .settings import ClientSettings
from .signing import secret_key
from .untrusted import loggable

logger = logging.getLogger("update_executor.history")
security_log = logging.getLogger("update_executor.security")

HISTORY_DOMAIN = b"update-executor history v1\n"
# Rotated files kept next to HISTORY_FILE: <file>.1 (newest) .. <file>.<ROTATED_FILES>.
ROTATED_FILES = 3
MAX_LIMIT = HISTORY_MAXLEN


def record_mac(key: bytes, payload: str) -> str:
    return hmac.new(key, HISTORY_DOMAIN + payload.encode(), hashlib.sha256).hexdigest()


def _text(value: object) -> str:
    # Decoded with replacement: a non-UTF-8 field (only a Redis writer writes one) then no
    # longer matches its signature, and is left out like any record that does not verify.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def check_record(
    stream_id: object, fields: Mapping[Any, Any], key: bytes | None
) -> dict[str, Any] | str:
    """A record with its stream `id`, or why it is left out (a str); logs nothing."""
    raw = {_text(k): _text(v) for k, v in fields.items()}
    payload, signature = raw.get("p", ""), raw.get("s", "")
    if len(payload) > MAX_RECORD_CHARS:
        return f"over {MAX_RECORD_CHARS} characters"
    if key is not None and not hmac.compare_digest(
        record_mac(key, payload).encode(), signature.encode()
    ):
        return "its signature does not verify"
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError):
        return "not JSON"
    if not isinstance(data, dict):
        return "not a JSON object"
    if key is not None and _text(stream_id) != f"{data.get('at')}-0":
        # Signed records carry `at`, the ms of the stream id they were written under
        # (worker/host/history.py): one added again, moved, or from before this binding
        # (issue 21) sits under another id.
        return "it was not written under this id (added again or moved)"
    return {"id": _text(stream_id), **data}


def decode_record(
    stream_id: object, fields: Mapping[Any, Any], key: bytes | None
) -> dict[str, Any] | None:
    """A record with its stream `id`, or None (logged) when it does not verify."""
    checked = check_record(stream_id, fields, key)
    if isinstance(checked, str):
        security_log.warning("history record %s ignored: %s", loggable(stream_id), checked)
        return None
    return checked


async def read_history(
    redis: Any, settings: ClientSettings, limit: int = 50
) -> list[dict[str, Any]]:
    """The last `limit` records that verify, oldest first; one log line for those that do
    not, however many."""
    limit = max(1, min(int(limit), MAX_LIMIT))
    raw = await redis.xrevrange(history_key(settings.queue_name), "+", "-", count=limit)
    key = secret_key(settings)
    records: list[dict[str, Any]] = []
    ignored: list[tuple[object, str]] = []
    for stream_id, fields in reversed(raw):
        checked = check_record(stream_id, fields, key)
        if isinstance(checked, str):
            ignored.append((stream_id, checked))
        else:
            records.append(checked)
    if ignored:
        first_id, reason = ignored[0]
        security_log.warning(
            "history: %d record(s) ignored (first %s: %s)", len(ignored), loggable(first_id), reason
        )
    return records


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
