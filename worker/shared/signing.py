"""Signed jobs and results: HMAC-SHA256 envelopes behind ARQ's job_serializer/job_deserializer.

Anyone who can write to the queue's Redis can put a job there. The worker runs as a member
of the `docker` group on the host, so it only runs a job signed with the secret it shares
with the API (UPDATE_JOB_SECRET): a job that does not verify never reaches a job function.

What sits in Redis under `arq:job:<id>` and `arq:result:<id>`:

    {"ue": 1, "p": "<payload: compact JSON text>", "s": "<hex HMAC-SHA256(secret, DOMAIN + p)>"}

The MAC covers the exact payload text (no canonicalisation to get wrong). A job's payload is
ARQ's own job dict plus three fields of ours:

    {"typ": "job", "f": "process_system_update", "a": [], "k": {...}, "t": null,
     "et": <enqueue time, ms>, "exp": <et + UPDATE_JOB_MAX_AGE, ms>, "n": "<random nonce>"}

and a result's is ARQ's result dict with `"typ": "result"`, so a result cannot pass as a job.

ARQ hands the serializer only that dict and the deserializer only the bytes: the job id (the
Redis key) is in neither, so the MAC cannot cover it (worker/host/arq_worker.py checks its
grammar). Instead each signed job carries a nonce, and the worker accepts a nonce once: it is
kept in memory and, by UpdateWorker before ARQ reads the job, in Redis until the job's expiry
(`refuse_nonce` when Redis already had it), so a captured job copied under another id, or put
back after it ran, is refused as a replay, also after a worker restart. A result names its
job and queue (ARQ's `id`, `q`) and carries an expiry `exp`; the client checks them.

When the worker refuses a job, the deserializer does not raise (ARQ would then store a bare
`DeserializationError: unable to deserialize job` as the result). It returns a stand-in job
that calls `rejected_job(reason=...)`, registered in the worker, which logs the reason on the
`update_executor.security` logger and returns a failed summary that says why, without
quoting the payload. Nothing else runs.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from .request import InvalidRequest, check_check_fields, check_request_fields
from .result import rejected_summary
from .serialization import deserialize, serialize
from .settings import ClientSettings
from .untrusted import is_job_id, loggable

security_log = logging.getLogger("update_executor.security")

ENVELOPE_VERSION = 1
DOMAIN = b"update-executor job/result v1\n"
UPDATE_FUNCTION = "process_system_update"
# worker/host/check.py: compares running images with the registry; changes nothing.
CHECK_FUNCTION = "check_for_updates"
REJECTED_FUNCTION = "rejected_job"
# A real job is well under 10 KiB (100 service names of 63 characters, a 200-character name).
MAX_JOB_BYTES = 64 * 1024
NONCE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A job enqueued this far in the future (ms) is refused: a secret holder could otherwise
# pre-sign jobs that stay valid for ever. Allows for clocks of the API and host disagreeing.
MAX_CLOCK_SKEW_MS = 60_000
REPLAY_REASON = "this signed job was already accepted once: a replay"
NOT_GRANTED_REASON = (
    "the worker did not record this job's nonce itself (the job changed in Redis while it "
    "was read, or its nonce was recorded before): a replay"
)
JOB_KEYS = frozenset({"t", "f", "a", "k", "et"})
ENVELOPE_KEYS = frozenset({"ue", "p", "s"})

Clock = Callable[[], float]
# The job functions a signed job may name, each with the checks its arguments must pass.
ARGUMENT_CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    UPDATE_FUNCTION: check_request_fields,
    CHECK_FUNCTION: check_check_fields,
}


class JobRejected(ValueError):
    """The worker refuses a job; `reason` says why in words safe to show (no payload)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def mac(key: bytes, payload: bytes) -> str:
    return hmac.new(key, DOMAIN + payload, hashlib.sha256).hexdigest()


def now_ms(clock: Clock) -> int:
    return int(clock() * 1000)


class JobCodec:
    """Serializer and deserializer for one side (client or worker).

    With a key, everything written is signed and everything read must verify. Without one
    (`--insecure-unsigned-jobs`, or a client without a secret) it writes plain JSON, like
    before signing existed, and reads plain JSON or envelopes without checking them.
    """

    def __init__(
        self,
        key: bytes | None,
        *,
        max_age_s: int = 900,
        clock: Clock = time.time,
        result_ttl_s: int = 7 * 24 * 3600,
    ):
        self.key = key or None
        self.max_age_s = max_age_s
        self.clock = clock
        self.result_ttl_s = result_ttl_s

    # ---------------------------------------------------------------- writing
    def serialize(self, data: dict[str, Any]) -> bytes:
        """ARQ `job_serializer`: a signed envelope (plain JSON without a key)."""
        if self.key is None:
            return serialize(data)
        if set(data) == JOB_KEYS:
            et = data["et"]
            payload = {
                "typ": "job",
                **data,
                "exp": et + self.max_age_s * 1000 if isinstance(et, int) else None,
                "n": secrets.token_hex(16),
            }
        else:
            # ARQ's result dict names its job (`id`) and queue (`q`): the client checks both,
            # so a result copied to another job's key is refused; `exp` bounds its life.
            payload = {
                "typ": "result",
                **data,
                "exp": now_ms(self.clock) + self.result_ttl_s * 1000,
            }
        return self.seal(payload)

    def seal(self, payload: Mapping[str, Any]) -> bytes:
        """An envelope around `payload` (tests use it to build signed bad jobs)."""
        if self.key is None:
            raise ValueError("no key to sign with")
        text = serialize(payload).decode()
        envelope = {"ue": ENVELOPE_VERSION, "p": text, "s": mac(self.key, text.encode())}
        return json.dumps(envelope, separators=(",", ":")).encode()

    # ---------------------------------------------------------------- reading
    def open(self, raw: bytes) -> dict[str, Any]:
        """The payload of a verified envelope, or of plain JSON when there is no key.

        Raise JobRejected otherwise. The payload still has our `typ`, `exp`, `n` fields.
        """
        if not isinstance(raw, (bytes, bytearray)):
            raise JobRejected("the payload is not bytes")
        if raw[:1] == b"\x80":
            raise JobRejected(
                "the payload is a pickle (ARQ's default serializer); only signed JSON is accepted"
            )
        try:
            outer = json.loads(raw)
        except (ValueError, RecursionError):
            raise JobRejected("the payload is not JSON") from None
        if isinstance(outer, dict) and set(outer) == ENVELOPE_KEYS:
            text, signature = outer["p"], outer["s"]
            if outer["ue"] != ENVELOPE_VERSION or not isinstance(text, str):
                raise JobRejected("the envelope is malformed or of an unknown version")
            if self.key is not None and not (
                isinstance(signature, str)
                and hmac.compare_digest(signature.encode(), mac(self.key, text.encode()).encode())
            ):
                raise JobRejected(
                    "the signature does not verify (signed with another secret, or altered)"
                )
            try:
                payload = deserialize(text.encode())
            except (ValueError, RecursionError):
                raise JobRejected("the signed payload is not JSON") from None
        elif self.key is not None:
            raise JobRejected("the payload is not signed (UPDATE_JOB_SECRET is required)")
        else:
            payload = deserialize(raw)
        if not isinstance(payload, dict):
            raise JobRejected("the payload is not a JSON object")
        return payload

    def deserialize(self, raw: bytes) -> dict[str, Any]:
        """ARQ `job_deserializer` for the client, which reads results only: raise on data that
        does not verify, is not a result, or expired; ARQ turns it into a
        DeserializationError. Whose result it is (`id`, `q`) the client checks itself."""
        payload = self.open(raw)
        if self.key is not None and payload.get("typ") != "result":
            raise JobRejected("the signed payload is not a result")
        expires = payload.get("exp")
        if isinstance(expires, int) and expires < now_ms(self.clock):
            raise JobRejected("the result expired")
        for field in ("typ", "exp", "n"):
            payload.pop(field, None)
        return payload


class WorkerJobCodec(JobCodec):
    """The worker's side: signs results; reads jobs, turning every refused one into a call of
    `rejected_job(reason=...)` instead of an exception."""

    def __init__(
        self,
        key: bytes | None,
        *,
        max_age_s: int = 900,
        clock: Clock = time.time,
        insecure: bool = False,
        result_ttl_s: int = 7 * 24 * 3600,
    ) -> None:
        super().__init__(key, max_age_s=max_age_s, clock=clock, result_ttl_s=result_ttl_s)
        # Without a key and without --insecure-unsigned-jobs, every job is refused.
        self.insecure = insecure and self.key is None
        self._accepted: dict[str, int] = {}  # nonce -> the job's deadline (ms)
        # nonce -> why it is refused: set by the worker once Redis says the nonce was used
        # (worker/host/arq_worker.py records nonces there, so they outlive a restart).
        self._refused: dict[str, tuple[int, str]] = {}
        # Set by UpdateWorker: a signed job is accepted only when its nonce is in `_granted`,
        # i.e. this worker's own `SET NX` created the nonce's key for the bytes it read. Bytes
        # swapped in Redis after that read carry another nonce, never granted: refused.
        self.require_granted_nonce = False
        self._granted: dict[str, int] = {}  # nonce -> deadline (ms)
        self._sizes: tuple[bytes, int] | None = None  # note_size

    def deserialize(self, raw: bytes) -> dict[str, Any]:
        try:
            return self.accept(raw)
        except JobRejected as exc:
            return {
                "t": None,
                "f": REJECTED_FUNCTION,
                "a": [],
                "k": {"reason": exc.reason},
                "et": now_ms(self.clock),
            }

    def verified_nonce(self, raw: bytes) -> tuple[str, int] | None:
        """(nonce, deadline in ms) of a job that passes every check but the replay check;
        None when it is refused anyway or unsigned. The worker records the nonce in Redis
        with it before ARQ deserializes the job."""
        try:
            _, nonce, deadline = self._checked(raw)
        except JobRejected:
            return None
        return None if nonce is None else (nonce, deadline)

    def note_size(self, raw: bytes, size: int) -> None:
        """`raw` is the start of a value of `size` bytes (the worker reads at most
        MAX_JOB_BYTES + 1): the refusal then says the real size."""
        self._sizes = (raw, size)

    def grant_nonce(self, nonce: str, deadline_ms: int) -> None:
        """This worker's `SET NX` created the nonce's key: the job carrying it may run once."""
        self._granted[nonce] = deadline_ms

    def refuse_nonce(self, nonce: str, deadline_ms: int, reason: str) -> None:
        """Refuse the job carrying `nonce` (until `deadline_ms`) with `reason`."""
        self._refused[nonce] = (deadline_ms, reason)

    def accept(self, raw: bytes) -> dict[str, Any]:
        """ARQ's job dict of a job the worker may run; raise JobRejected otherwise."""
        job, nonce, deadline = self._checked(raw)
        if nonce is not None:
            self._check_replay(nonce, deadline)
        return job

    def _checked(self, raw: bytes) -> tuple[dict[str, Any], str | None, int]:
        """Every check but the replay check: ARQ's job dict, the nonce (None when unsigned)
        and the time (ms) the job must have started by; raise JobRejected otherwise."""
        if self.key is None and not self.insecure:
            raise JobRejected("the worker has no job secret (UPDATE_JOB_SECRET) to verify jobs")
        size = self._sizes[1] if self._sizes is not None and self._sizes[0] is raw else len(raw)
        if size > MAX_JOB_BYTES:
            raise JobRejected(f"the job is {size} bytes, over the {MAX_JOB_BYTES}-byte limit")
        payload = self.open(raw)
        if self.key is not None and payload.get("typ") != "job":
            raise JobRejected("the signed payload is not a job")
        function, args, kwargs = payload.get("f"), payload.get("a"), payload.get("k")
        job_try, enqueued = payload.get("t"), payload.get("et")
        if not (
            isinstance(enqueued, int)
            and isinstance(args, list)
            and isinstance(kwargs, dict)
            and (job_try is None or isinstance(job_try, int))
        ):
            raise JobRejected("the job is malformed (ARQ's t, f, a, k, et fields)")
        self._check_age(enqueued, payload.get("exp"))
        if function not in ARGUMENT_CHECKS:
            raise JobRejected(
                f"unknown function: only {UPDATE_FUNCTION} and {CHECK_FUNCTION} jobs are accepted"
            )
        if args:
            raise JobRejected("positional arguments are not accepted")
        try:
            ARGUMENT_CHECKS[function](kwargs)
        except InvalidRequest as exc:
            raise JobRejected(str(exc)) from None
        nonce = None
        if self.key is not None:
            nonce = payload.get("n")
            if not isinstance(nonce, str) or not NONCE.fullmatch(nonce):
                raise JobRejected("the job is malformed (no nonce)")
        job = {"t": job_try, "f": function, "a": [], "k": kwargs, "et": enqueued}
        return job, nonce, self._deadline(enqueued, payload.get("exp"))

    def _deadline(self, enqueued: int, expires: object) -> int:
        deadline = enqueued + self.max_age_s * 1000
        if isinstance(expires, int):
            deadline = min(deadline, expires)
        elif self.key is not None:
            raise JobRejected("the job is malformed (no expiry)")
        return deadline

    def _check_age(self, enqueued: int, expires: object) -> None:
        now = now_ms(self.clock)
        if enqueued > now + MAX_CLOCK_SKEW_MS:
            raise JobRejected(
                f"the job's enqueue time lies {(enqueued - now) // 1000} s in the future (more "
                f"than {MAX_CLOCK_SKEW_MS // 1000} s of clock skew): a job signed in advance"
            )
        if now > self._deadline(enqueued, expires):
            raise JobRejected(
                f"the job expired: it was enqueued {(now - enqueued) // 1000} s ago and a job "
                f"must start within {self.max_age_s} s (UPDATE_JOB_MAX_AGE); enqueue a new one"
            )

    def _check_replay(self, nonce: str, deadline: int) -> None:
        now = now_ms(self.clock)
        self._accepted = {n: d for n, d in self._accepted.items() if d >= now}
        self._refused = {n: r for n, r in self._refused.items() if r[0] >= now}
        if nonce in self._refused:
            raise JobRejected(self._refused[nonce][1])
        if nonce in self._accepted:
            raise JobRejected(REPLAY_REASON)
        if self.require_granted_nonce and self._granted.pop(nonce, None) is None:
            raise JobRejected(NOT_GRANTED_REASON)
        self._granted = {n: d for n, d in self._granted.items() if d >= now}
        self._accepted[nonce] = deadline


def secret_key(settings: ClientSettings) -> bytes | None:
    return settings.job_secret.reveal().encode() or None


def client_codec(settings: ClientSettings) -> JobCodec:
    """For UpdateClient: signs jobs, verifies results."""
    return JobCodec(secret_key(settings), max_age_s=settings.job_max_age)


async def rejected_job(ctx: dict[str, Any], *, reason: str, quiet: bool = False) -> dict[str, Any]:
    """The job ARQ runs instead of a refused one: log it (unless `quiet`: the worker logs
    refusals once per burst, worker/host/refusals.py), and say why in the result."""
    job_id = str(ctx.get("job_id") or "unknown")
    reason = str(reason)[:500]
    if not quiet:
        security_log.warning("job %s refused, nothing was run: %s", loggable(job_id), reason)
    if not is_job_id(job_id):
        job_id = "invalid"
    now = datetime.now(UTC)
    return rejected_summary(
        job_id=job_id, message=f"job refused: {reason}", started_at=now, finished_at=now
    ).as_dict()
