"""Reading values a Redis writer may have made huge (a string value can hold 512 MB): the
size is checked in the same transaction as the read, before anything parses the value.

Results, the cached last check and start-up rollback records are a few kB; the limits below
leave ample room and keep `json.loads` (and the HMAC before it) off a planted giant.
"""

from __future__ import annotations

from typing import Any

from arq.constants import result_key_prefix
from arq.jobs import Deserializer, JobResult, deserialize_result

from .untrusted import loggable

# A job's summary: a few kB, up to some tens with long migration output (cut by the worker).
MAX_RESULT_BYTES = 1024 * 1024
# The cached last check: a few hundred bytes per service.
MAX_CHECK_BYTES = 1024 * 1024
# A start-up rollback's record.
MAX_RECOVERY_BYTES = 256 * 1024
# A job id read back (the latest update, the pending check): the grammar allows 128 chars.
MAX_ID_BYTES = 256
# One history record or progress entry (a stream field), checked once read.
MAX_RECORD_CHARS = 64 * 1024


class OversizedValue(ValueError):
    """A value over its limit; nothing of it was parsed."""

    def __init__(self, key: str, size: int, limit: int) -> None:
        self.size = size
        super().__init__(f"{loggable(key)} holds {size} bytes, over the {limit}-byte limit")


async def bounded_get(redis: Any, key: str, limit: int) -> bytes | None:
    """The value at `key` (None when absent); OversizedValue when it is over `limit` bytes,
    without reading more than `limit` bytes of it. A key of another type raises Redis's
    ResponseError, as GET does."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.exists(key)
        pipe.strlen(key)
        pipe.getrange(key, 0, limit - 1)
        exists, size, head = await pipe.execute()
    if not exists:
        return None
    if int(size) > limit:
        raise OversizedValue(key, int(size), limit)
    return bytes(head) if isinstance(head, (bytes, bytearray)) else str(head).encode()


async def read_result(
    redis: Any, job_id: str, deserializer: Deserializer | None
) -> JobResult | None:
    """ARQ's `Job.result_info()` with a size limit: None when there is no result;
    OversizedValue, or ARQ's DeserializationError for a value that does not verify."""
    raw = await bounded_get(redis, result_key_prefix + job_id, MAX_RESULT_BYTES)
    if not raw:
        return None
    return deserialize_result(raw, deserializer=deserializer)
