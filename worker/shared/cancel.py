"""Signed cancel requests: the only way to abort a job.

ARQ's own abort is a sorted set (`arq:abort`) anyone who can write to Redis can add a job id
to: a Redis writer could cut off any update mid-way (a rollback on top of a half-migrated
database, or a security fix that never lands). The worker runs with ARQ's abort turned off;
the client (the API) writes a cancel request signed with the job secret under
`<queue>:cancel:<job id>`, bound to that job, that queue, and an expiry, and the worker acts
only on one that verifies (worker/host/arq_worker.py).
"""

from __future__ import annotations

import logging
from typing import Any

from .keys import cancel_key
from .serialization import serialize
from .signing import JobCodec, JobRejected, now_ms

logger = logging.getLogger("update_executor.cancel")
security_log = logging.getLogger("update_executor.security")

CANCEL_TYPE = "cancel"
__all__ = ["cancel_key", "seal_cancel", "verify_cancel"]


def seal_cancel(codec: JobCodec, queue_name: str, job_id: str, ttl_s: int) -> bytes:
    """A cancel request for `job_id` on `queue_name`, valid `ttl_s` seconds (plain JSON
    without a key, which only an insecure worker accepts)."""
    payload = {
        "typ": CANCEL_TYPE,
        "id": job_id,
        "q": queue_name,
        "exp": now_ms(codec.clock) + ttl_s * 1000,
    }
    if codec.key is None:
        return serialize(payload)
    return codec.seal(payload)


def verify_cancel(codec: JobCodec, raw: Any, queue_name: str, job_id: str) -> bool:
    """True when `raw` is a cancel request of `job_id` on `queue_name` that verifies and has
    not expired; anything else is logged and ignored."""
    if not isinstance(raw, (bytes, bytearray)):
        return False
    try:
        payload = codec.open(bytes(raw))
    except JobRejected as exc:
        security_log.warning("cancel request of job %s ignored: %s", job_id, exc.reason)
        return False
    expires = payload.get("exp")
    if (
        payload.get("typ") != CANCEL_TYPE
        or payload.get("id") != job_id
        or payload.get("q") != queue_name
        or not isinstance(expires, int)
    ):
        security_log.warning("cancel request of job %s ignored: not one for this job", job_id)
        return False
    if expires < now_ms(codec.clock):
        logger.info("cancel request of job %s ignored: it expired", job_id)
        return False
    return True
