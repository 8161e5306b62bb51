"""JSON job and result serialization for ARQ, on both the worker and the client side.

ARQ pickles by default, and unpickling a job from a Redis that containers can write to is code
execution on the host. JSON cannot carry code. Exceptions (ARQ stores a failed job's exception
as its result) are written as a tagged object and read back as a small whitelist of types,
never by importing a class named in the payload.

This is the inner encoding: worker/shared/signing.py wraps it in an HMAC-signed envelope, and
only the insecure mode (`worker --insecure-unsigned-jobs`) puts it in Redis as is.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

EXCEPTION_TAG = "__exception__"


class RemoteJobError(Exception):
    """A job failed in the worker with an exception of type `kind`."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind
        self.message = message


def _default(value: Any) -> Any:
    if isinstance(value, BaseException):
        return {EXCEPTION_TAG: type(value).__name__, "message": str(value)}
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot serialize {type(value).__name__} as JSON")


def _object_hook(value: dict[str, Any]) -> Any:
    kind = value.get(EXCEPTION_TAG)
    if not isinstance(kind, str) or set(value) != {EXCEPTION_TAG, "message"}:
        return value
    message = str(value.get("message", ""))
    # ARQ's client tests for these two types to tell a timeout and an abort apart.
    if kind == "CancelledError":
        return asyncio.CancelledError(message)
    if kind == "TimeoutError":
        return TimeoutError(message)
    return RemoteJobError(kind, message)


def serialize(data: Any) -> bytes:
    """ARQ `job_serializer`: compact JSON, UTF-8."""
    return json.dumps(data, default=_default, separators=(",", ":")).encode()


def deserialize(raw: bytes) -> Any:
    """ARQ `job_deserializer`: JSON only; anything else (pickle, garbage) raises ValueError."""
    return json.loads(raw, object_hook=_object_hook)
