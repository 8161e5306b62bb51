"""One update in flight per queue: the job id of the update queued or running now.

`UpdateClient.submit_update` claims the key atomically (SET NX) before it queues a job, so two API
requests (or two clicks) produce one job, and the second caller gets the first one's id. The
worker releases the key when the job ends. A key left by a worker that died is released by
the next caller once ARQ reports that job finished or unknown, and expires in any case.
"""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import ResponseError

from .keys import inflight_key

__all__ = ["claim", "inflight_key", "release"]

logger = logging.getLogger("update_executor.inflight")

# Delete the key only if it still holds our job id (another update may have claimed it since).
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


async def claim(redis: Any, queue_name: str, job_id: str, ttl_s: int) -> str | None:
    """Claim the slot for `job_id`; return None on success, else the job id holding it."""
    key = inflight_key(queue_name)
    if await redis.set(key, job_id, nx=True, ex=ttl_s):
        return None
    holder = await redis.get(key)
    if holder is None:  # released between our two calls: try once more
        return (
            None if await redis.set(key, job_id, nx=True, ex=ttl_s) else await _holder(redis, key)
        )
    return _text(holder)


async def _holder(redis: Any, key: str) -> str | None:
    value = await redis.get(key)
    return None if value is None else _text(value)


def _text(value: object) -> str:
    # Any bytes a Redis writer put there round-trip to `release` (surrogateescape).
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


async def release(redis: Any, queue_name: str, job_id: str) -> bool:
    """Release the slot if `job_id` holds it."""
    try:
        holder = job_id.encode("utf-8", "surrogateescape")
        released = await redis.eval(_RELEASE, 1, inflight_key(queue_name), holder)
    except ResponseError as exc:  # a key of another type (a Redis writer): it is not ours
        logger.warning("cannot release the in-flight slot: %s", exc)
        return False
    return bool(released)
