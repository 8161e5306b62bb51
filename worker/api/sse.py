"""GET /events: an update's progress as Server-Sent Events, from the progress stream in Redis
(worker/shared/progress.py), ending with the job's final status. Resumable: each event's id is
`<job id>/<stream entry id>`, which a reconnecting EventSource sends back (`Cursor`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from ..shared.client import JobState, UpdateClient
from ..shared.progress import STREAM_ID, EntryKind
from ..shared.untrusted import is_job_id
from .errors import QUEUE_DOWN, invalid

logger = logging.getLogger("update_executor.api")

# Seconds the stream waits for the result after the job-end entry before it ends anyway.
END_GRACE_S = 10.0


@dataclass(frozen=True)
class Cursor:
    """Where an event stream resumes: `since` or `Last-Event-ID`, `[<job id>/]<entry id>`."""

    job_id: str | None
    entry_id: str | None

    @classmethod
    def parse(cls, raw: str | None) -> Cursor:
        if not raw:
            return cls(None, None)
        job_id, _, entry_id = raw.strip().rpartition("/")
        if not STREAM_ID.fullmatch(entry_id) or (job_id and not is_job_id(job_id)):
            raise invalid(
                ("query", "since"),
                "since / Last-Event-ID must be an event id this endpoint sent "
                "('<job id>/<stream entry id>') or a stream entry id",
            )
        return cls(job_id or None, entry_id)


def sse_message(data: Any, event: str | None = None, event_id: str | None = None) -> str:
    """One message: `id:`, `event:` and `data:`, the JSON of `data` on one line."""
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, default=str, separators=(",", ":")))
    return "\n".join(lines) + "\n\n"


def event_name(entry: dict[str, Any]) -> str:
    """The entry's kind (job_started, step_started, step_ended, job_ended) as an event name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(entry.get("kind") or "progress"))  # one line


async def event_stream(
    client: UpdateClient, job_id: str, since: str | None, poll_s: float, keepalive_s: float
) -> AsyncIterator[str]:
    """Forward the job's progress entries until its job-end entry, then its final status.

    A job that ends without a job-end entry (it failed at the queue level, or its stream
    expired) is noticed through its state; the final status is sent all the same.
    """
    yield "retry: 3000\n\n"
    last_write = time.monotonic()
    ended_at: float | None = None  # when the job-end entry was sent
    try:
        while True:
            # One bounded read; the cursor moves past entries that do not verify too, so a
            # Redis writer's entries are read (and logged, one line) once, not at every poll.
            page = await client.progress_page(job_id, since=since)
            for entry in page.entries:
                yield sse_message(
                    entry, event=event_name(entry), event_id=f"{job_id}/{entry['id']}"
                )
                last_write = time.monotonic()
                if event_name(entry) == EntryKind.job_ended:
                    ended_at = last_write
            since = page.last_id or since
            if page.last_id is None:
                done = await client.state(job_id) in (JobState.finished, JobState.not_found)
                # The result is stored just after the job-end entry: wait for it, not forever.
                if done or (ended_at is not None and time.monotonic() - ended_at > END_GRACE_S):
                    final = await client.status(job_id)
                    if ended_at is None:  # entries written between our two reads come first
                        for entry in (await client.progress_page(job_id, since=since)).entries:
                            yield sse_message(
                                entry, event=event_name(entry), event_id=f"{job_id}/{entry['id']}"
                            )
                    yield sse_message(final, event="status")
                    return
            if time.monotonic() - last_write >= keepalive_s:
                yield ": keepalive\n\n"
                last_write = time.monotonic()
            await asyncio.sleep(poll_s)
    except LookupError:  # finished, but its result expired between two reads
        yield sse_message({"job_id": job_id, "state": JobState.not_found.value}, event="status")
    except (RedisError, OSError) as exc:
        logger.warning("event stream of job %s stopped: %s", job_id, exc)
        yield sse_message({"detail": QUEUE_DOWN}, event="error")
