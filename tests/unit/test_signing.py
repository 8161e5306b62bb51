"""Signed jobs and results (worker/shared/signing.py), the settings behind them, the start-up
check and the cool-down (worker/host/cooldown.py). Fast: no Redis, no Docker."""

from __future__ import annotations

import json
import logging
import pickle
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from arq.jobs import deserialize_job_raw, serialize_job, serialize_result

from tests.summary_schema import assert_valid_summary
from worker.host import cooldown
from worker.host.main import StartupError, check_job_signing, worker_kwargs
from worker.host.settings import Settings
from worker.shared.connection import redis_settings
from worker.shared.request import REQUEST_FIELDS
from worker.shared.serialization import serialize
from worker.shared.settings import ConfigError, Secret
from worker.shared.signing import (
    CHECK_FUNCTION,
    MAX_JOB_BYTES,
    REJECTED_FUNCTION,
    UPDATE_FUNCTION,
    JobCodec,
    JobRejected,
    WorkerJobCodec,
    mac,
    rejected_job,
)

KEY = b"k" * 64
OTHER_KEY = b"o" * 64
NOW = 1_700_000_000.0  # seconds
NOW_MS = int(NOW * 1000)
MARKER = "MARKER"  # put in bad payloads: no refusal reason may quote it


def clock() -> float:
    return NOW


def client(key: bytes | None = KEY, max_age_s: int = 900) -> JobCodec:
    return JobCodec(key, max_age_s=max_age_s, clock=clock)


def worker(key: bytes | None = KEY, *, insecure: bool = False) -> WorkerJobCodec:
    return WorkerJobCodec(key, max_age_s=900, clock=clock, insecure=insecure)


def job(
    function: str = UPDATE_FUNCTION,
    *args: Any,
    codec: JobCodec | None = None,
    enqueued_ms: int = NOW_MS,
    **kwargs: Any,
) -> bytes:
    """A job as ARQ's enqueue_job writes it, through `codec`'s serializer (the client's)."""
    serializer = (codec or client()).serialize
    return serialize_job(function, args, kwargs, None, enqueued_ms, serializer=serializer)


# A keyword argument no Python call could spell.
ODD_NAME: dict[str, Any] = {"$(id)": 1}


def signed_payload(**payload: Any) -> bytes:
    """An envelope around any payload, signed with the right key."""
    base: dict[str, Any] = {
        "typ": "job",
        "t": None,
        "f": UPDATE_FUNCTION,
        "a": [],
        "k": {},
        "et": NOW_MS,
    }
    base.update(exp=NOW_MS + 900_000, n="nonce-1")
    base.update(payload)
    return client().seal({k: v for k, v in base.items() if v is not ...})


def envelope(text: str) -> bytes:
    """An envelope around any text, with a valid MAC."""
    return json.dumps({"ue": 1, "p": text, "s": mac(KEY, text.encode())}).encode()


def tamper_signature(raw: bytes) -> bytes:
    data = json.loads(raw)
    data["s"] = ("0" if data["s"][0] != "0" else "1") + data["s"][1:]
    return json.dumps(data).encode()


def flip_in_payload(raw: bytes, old: bytes, new: bytes) -> bytes:
    assert raw.count(old) == 1 and len(old) == len(new)
    return raw.replace(old, new)


def outcome(raw: bytes, codec: WorkerJobCodec | None = None) -> tuple[str, dict[str, Any]]:
    """(function ARQ will call, its kwargs), read the way ARQ's run_job reads a job."""
    function, args, kwargs, _, _ = deserialize_job_raw(
        raw, deserializer=(codec or worker()).deserialize
    )
    assert not args
    return function, kwargs


# ------------------------------------------------------------------------------ good jobs
def test_a_signed_job_reaches_the_update_function_unchanged() -> None:
    raw = job(services=["api", "worker"], run_migrations=False, requested_by="admin")
    envelope = json.loads(raw)
    assert set(envelope) == {"ue", "p", "s"}
    payload = json.loads(envelope["p"])
    assert payload["typ"] == "job"
    assert payload["exp"] == NOW_MS + 900_000
    assert len(payload["n"]) == 32
    function, args, kwargs, job_try, enqueued = deserialize_job_raw(
        raw, deserializer=worker().deserialize
    )
    assert (function, list(args), cast(object, job_try), enqueued) == (
        UPDATE_FUNCTION,
        [],
        None,
        NOW_MS,
    )
    assert kwargs == {
        "services": ["api", "worker"],
        "run_migrations": False,
        "requested_by": "admin",
    }


def test_every_request_field_is_accepted() -> None:
    values: dict[str, Any] = {
        "services": ["api"],
        "run_migrations": True,
        "create_backup": False,
        "dry_run": True,
        "requested_by": None,
        "revert": False,
        "hosts": ["web1", "db"],
    }
    assert set(values) == set(REQUEST_FIELDS)
    assert outcome(job(**values)) == (UPDATE_FUNCTION, values)
    revert: dict[str, Any] = {
        "services": None,
        "run_migrations": False,
        "revert": True,
        "requested_by": "oncall",
    }
    assert outcome(job(**revert)) == (UPDATE_FUNCTION, revert)


def test_two_identical_requests_are_two_jobs() -> None:
    codec = worker()
    assert outcome(job(dry_run=True), codec)[0] == UPDATE_FUNCTION
    assert outcome(job(dry_run=True), codec)[0] == UPDATE_FUNCTION  # another nonce


def test_results_are_signed_and_verified_with_exceptions_whitelisted() -> None:
    data = {"status": "successful", "steps": []}
    raw = serialize_result(
        UPDATE_FUNCTION, (), {}, 1, NOW_MS, True, data, NOW_MS, NOW_MS, "ref", "q", "id1",
        serializer=worker().serialize,
    )  # fmt: skip
    assert raw is not None and json.loads(json.loads(raw)["p"])["typ"] == "result"
    back = client().deserialize(raw)
    assert back["r"] == data and back["id"] == "id1" and "typ" not in back
    failed = worker().serialize({"s": False, "r": TimeoutError("slow"), "id": "x"})
    assert isinstance(client().deserialize(failed)["r"], TimeoutError)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (serialize({"s": True, "r": {"status": "successful"}}), "not signed"),
        (JobCodec(OTHER_KEY).serialize({"s": True, "r": {}}), "signature does not verify"),
        (pickle.dumps({"s": True, "r": {}}), "pickle"),
    ],
    ids=["unsigned", "other-key", "pickle"],
)
def test_a_client_refuses_results_that_do_not_verify(raw: bytes, reason: str) -> None:
    with pytest.raises(JobRejected, match=reason):
        client().deserialize(raw)


# ------------------------------------------------------------------------------ bad jobs
def _nested() -> bytes:
    return b"[" * 30_000 + b"]" * 30_000  # under the size limit, over json's recursion limit


BAD_JOBS: list[tuple[str, Callable[[], bytes], str]] = [
    # not signed JSON at all
    ("pickle", lambda: serialize_job(UPDATE_FUNCTION, (), {}, None, NOW_MS), "pickle"),
    (
        "pickle-of-os-system",
        lambda: serialize_job("os.system", ("id",), {}, None, NOW_MS),
        "pickle",
    ),
    (
        "plain-json",
        lambda: serialize_job(UPDATE_FUNCTION, (), {}, None, NOW_MS, serializer=serialize),
        "not signed",
    ),
    ("garbage", lambda: b"\xff\xfe\x00 garbage " + MARKER.encode(), "not JSON"),
    ("empty", lambda: b"", "not JSON"),
    ("truncated", lambda: job(dry_run=True)[:-7], "not JSON"),
    ("deeply-nested", _nested, "not JSON"),
    ("json-list", lambda: b'["process_system_update"]', "not signed"),
    # envelopes that do not verify
    ("wrong-secret", lambda: job(dry_run=True, codec=client(OTHER_KEY)), "does not verify"),
    (
        "one-byte-changed-in-payload",
        lambda: flip_in_payload(job(dry_run=True), b"true", b"tru3"),
        "does not verify",
    ),
    (
        "one-byte-changed-to-enable-migrations",
        lambda: flip_in_payload(job(run_migrations=False), b"false", b"falsE"),
        "does not verify",
    ),
    ("signature-changed", lambda: tamper_signature(job(dry_run=True)), "does not verify"),
    (
        "unsigned-envelope",
        lambda: json.dumps({"ue": 1, "p": "{}", "s": ""}).encode(),
        "does not verify",
    ),
    ("envelope-version-2", lambda: job().replace(b'"ue":1', b'"ue":2'), "unknown version"),
    ("signed-text-not-json", lambda: envelope("not json {"), "signed payload is not JSON"),
    ("signed-list", lambda: envelope("[1, 2]"), "not a JSON object"),
    ("signed-object-without-type", lambda: envelope('{"f": "x"}'), "not a job"),
    # signed, but not an acceptable job
    (
        "signed-result-as-job",
        lambda: client().serialize({"s": True, "r": {}, "f": UPDATE_FUNCTION}),
        "not a job",
    ),
    (
        "expired",
        lambda: job(dry_run=True, enqueued_ms=NOW_MS - 901_000),
        "expired: it was enqueued 901 s ago",
    ),
    (
        "expiry-beyond-the-worker-limit",
        lambda: job(codec=client(max_age_s=86_400), enqueued_ms=NOW_MS - 3_600_000),
        "expired",
    ),
    ("no-expiry", lambda: signed_payload(exp=...), "no expiry"),
    ("no-nonce", lambda: signed_payload(n=...), "no nonce"),
    ("enqueue-time-not-a-number", lambda: signed_payload(et="now"), "malformed"),
    ("kwargs-not-an-object", lambda: signed_payload(k=["x"]), "malformed"),
    ("unknown-function", lambda: job("os.system"), "unknown function"),
    ("the-rejected-job-function", lambda: job(REJECTED_FUNCTION, reason="x"), "unknown function"),
    ("positional-arguments", lambda: job(UPDATE_FUNCTION, "api"), "positional arguments"),
    (
        "extra-argument-compose-file",
        lambda: job(compose_file="/tmp/evil.yml"),
        "unexpected argument compose_file",
    ),
    ("extra-argument-odd-name", lambda: job(**ODD_NAME), "unexpected argument (invalid name)"),
    ("run_migrations-yes", lambda: job(run_migrations="yes"), "run_migrations must be true or"),
    ("dry_run-1", lambda: job(dry_run=1), "dry_run must be true or false"),
    ("create_backup-null", lambda: job(create_backup=None), "create_backup must be true or false"),
    ("services-a-string", lambda: job(services="api"), "services must be a non-empty list"),
    ("services-empty", lambda: job(services=[]), "services must be a non-empty list"),
    (
        "services-shell-metacharacters",
        lambda: job(services=["api", f"{MARKER}; rm -rf /"]),
        "invalid service name at services[1]",
    ),
    ("services-path", lambda: job(services=["../../etc/passwd"]), "invalid service name"),
    ("services-absolute-path", lambda: job(services=["/" + MARKER]), "invalid service name"),
    ("services-command-substitution", lambda: job(services=["$(id)"]), "invalid service name"),
    ("services-number", lambda: job(services=[1]), "invalid service name"),
    ("services-long-name", lambda: job(services=["a" * 64]), "invalid service name"),
    ("services-too-many", lambda: job(services=["a"] * 101), "more than 100"),
    (
        "requested_by-too-long",
        lambda: job(requested_by=MARKER * 50),
        "requested_by must be a string of at most 200",
    ),
    ("requested_by-a-number", lambda: job(requested_by=7), "requested_by must be a string"),
    (
        "oversized",
        lambda: job(requested_by=MARKER * 20_000),
        f"over the {MAX_JOB_BYTES}-byte limit",
    ),
]


@pytest.mark.parametrize(
    ("build", "reason"), [(b, r) for _, b, r in BAD_JOBS], ids=[i for i, _, _ in BAD_JOBS]
)
def test_a_bad_job_becomes_a_rejected_job_with_its_reason(
    build: Callable[[], bytes], reason: str
) -> None:
    function, kwargs = outcome(build())
    assert function == REJECTED_FUNCTION
    assert set(kwargs) == {"reason"}
    assert reason in kwargs["reason"]
    assert MARKER not in kwargs["reason"]
    assert len(kwargs["reason"]) < 300


# ------------------------------------------------------------------------------ check jobs
@pytest.mark.parametrize(
    "kwargs", [{}, {"services": None}, {"services": ["api"]}, {"services": ["api", "worker"]}]
)
def test_a_signed_check_job_reaches_the_check_function(kwargs: dict[str, Any]) -> None:
    assert outcome(job(CHECK_FUNCTION, **kwargs)) == (CHECK_FUNCTION, kwargs)


BAD_CHECK_JOBS: list[tuple[str, Callable[[], bytes], str]] = [
    (
        "update-argument",
        lambda: job(CHECK_FUNCTION, dry_run=True),
        "unexpected argument dry_run for check_for_updates (accepted: services)",
    ),
    (
        "compose-file",
        lambda: job(CHECK_FUNCTION, compose_file="/tmp/x.yml"),
        "unexpected argument compose_file",
    ),
    ("odd-name", lambda: job(CHECK_FUNCTION, **ODD_NAME), "unexpected argument (invalid name)"),
    ("positional", lambda: job(CHECK_FUNCTION, ["api"]), "positional arguments"),
    ("services-string", lambda: job(CHECK_FUNCTION, services="api"), "non-empty list"),
    ("services-empty", lambda: job(CHECK_FUNCTION, services=[]), "non-empty list"),
    (
        "services-shell",
        lambda: job(CHECK_FUNCTION, services=[f"{MARKER};id"]),
        "invalid service name at services[0]",
    ),
    ("services-number", lambda: job(CHECK_FUNCTION, services=["api", 7]), "services[1]"),
    ("services-too-many", lambda: job(CHECK_FUNCTION, services=["a"] * 101), "more than 100"),
    ("unsigned", lambda: job(CHECK_FUNCTION, codec=client(None)), "not signed"),
    ("wrong-secret", lambda: job(CHECK_FUNCTION, codec=client(OTHER_KEY)), "does not verify"),
    ("expired", lambda: job(CHECK_FUNCTION, enqueued_ms=NOW_MS - 901_000), "expired"),
    ("near-miss-name", lambda: job("check_for_update"), "unknown function"),
]


@pytest.mark.parametrize(
    ("build", "reason"),
    [(b, r) for _, b, r in BAD_CHECK_JOBS],
    ids=[i for i, _, _ in BAD_CHECK_JOBS],
)
def test_a_bad_check_job_is_refused_with_its_reason(
    build: Callable[[], bytes], reason: str
) -> None:
    function, kwargs = outcome(build())
    assert function == REJECTED_FUNCTION
    assert reason in kwargs["reason"]
    assert MARKER not in kwargs["reason"]


def test_a_replayed_check_job_is_refused() -> None:
    codec, raw = worker(), job(CHECK_FUNCTION)
    assert outcome(raw, codec)[0] == CHECK_FUNCTION
    assert "replay" in outcome(raw, codec)[1]["reason"]


def test_a_replayed_job_is_refused_the_second_time() -> None:
    codec, raw = worker(), job(dry_run=True)
    assert outcome(raw, codec)[0] == UPDATE_FUNCTION
    function, kwargs = outcome(raw, codec)
    assert function == REJECTED_FUNCTION
    assert "replay" in kwargs["reason"]


def test_accepted_nonces_are_forgotten_once_their_job_expired() -> None:
    now = [NOW]
    codec = WorkerJobCodec(KEY, max_age_s=900, clock=lambda: now[0])
    for _ in range(3):
        assert outcome(job(dry_run=True), codec)[0] == UPDATE_FUNCTION
    assert len(codec._accepted) == 3
    now[0] += 1000
    assert outcome(job(dry_run=True, enqueued_ms=int(now[0] * 1000)), codec)[0] == UPDATE_FUNCTION
    assert len(codec._accepted) == 1


def test_a_worker_without_a_secret_refuses_everything_unless_insecure() -> None:
    plain = serialize_job(
        UPDATE_FUNCTION, (), {"dry_run": True}, None, NOW_MS, serializer=serialize
    )
    function, kwargs = outcome(plain, worker(None))
    assert function == REJECTED_FUNCTION and "no job secret" in kwargs["reason"]

    insecure = worker(None, insecure=True)
    assert outcome(plain, insecure) == (UPDATE_FUNCTION, {"dry_run": True})
    assert outcome(job(dry_run=True), insecure)[0] == UPDATE_FUNCTION  # not verified
    # the other checks still apply
    assert outcome(job("os.system", codec=client(None)), insecure)[0] == REJECTED_FUNCTION
    expired = job(codec=client(None), enqueued_ms=NOW_MS - 901_000)
    assert "expired" in outcome(expired, insecure)[1]["reason"]
    assert outcome(pickle.dumps({"f": UPDATE_FUNCTION}), insecure)[0] == REJECTED_FUNCTION


def test_insecure_is_ignored_when_the_worker_has_a_secret() -> None:
    plain = serialize_job(UPDATE_FUNCTION, (), {}, None, NOW_MS, serializer=serialize)
    assert outcome(plain, worker(KEY, insecure=True))[0] == REJECTED_FUNCTION


async def test_the_rejected_job_logs_and_returns_a_failed_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="update_executor.security")
    summary = await rejected_job({"job_id": "abc"}, reason="the payload is not JSON")
    assert_valid_summary(summary)
    assert summary["status"] == "failed"
    assert summary["job_id"] == "abc"
    assert summary["error"] == {
        "step": "validation",
        "message": "job refused: the payload is not JSON",
    }
    assert summary["steps"] == [] and summary["request"] is None
    records = [r for r in caplog.records if r.name == "update_executor.security"]
    assert [r.getMessage() for r in records] == [
        "job abc refused, nothing was run: the payload is not JSON"
    ]


# ------------------------------------------------------------------------------ settings
def test_job_secret_sources_in_order_of_preference(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("f" * 40 + "\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "job_secret").write_text("c" * 40)
    both = {"CREDENTIALS_DIRECTORY": str(creds), "UPDATE_JOB_SECRET": "e" * 40}
    settings = Settings.from_env({**both, "UPDATE_JOB_SECRET_FILE": str(tmp_path / "file")})
    assert settings.job_secret.reveal() == "f" * 40
    assert Settings.from_env(both).job_secret.reveal() == "c" * 40
    assert Settings.from_env({"UPDATE_JOB_SECRET": "e" * 40}).job_secret.reveal() == "e" * 40
    assert not Settings.from_env({}).job_secret
    assert "f" * 40 not in repr(settings)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"UPDATE_JOB_SECRET": "short"}, "at least 32 characters"),
        ({"UPDATE_JOB_SECRET_FILE": "/nonexistent/secret"}, "cannot be read"),
        ({"REDIS_QUEUE_SSL": "maybe"}, "REDIS_QUEUE_SSL must be true or false"),
        ({"REDIS_QUEUE_SSL_CA_FILE": "/etc/hostname"}, "REDIS_QUEUE_SSL is not true"),
        ({"REDIS_QUEUE_SSL": "1", "REDIS_QUEUE_SSL_CA_FILE": "/nonexistent"}, "cannot be read"),
        (
            {"REDIS_QUEUE_SSL": "yes", "REDIS_QUEUE_SSL_CERT_FILE": "/etc/hostname"},
            "go together",
        ),
        ({"UPDATE_MIN_INTERVAL": "-1"}, "UPDATE_MIN_INTERVAL must be between"),
        ({"UPDATE_JOB_MAX_AGE": "0"}, "UPDATE_JOB_MAX_AGE must be between"),
    ],
)
def test_bad_security_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_an_empty_secret_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        Settings.from_env({"UPDATE_JOB_SECRET_FILE": str(tmp_path / "empty")})


def test_redis_acl_user_password_file_and_tls_reach_arq(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(" pass word \n")
    (tmp_path / "ca.pem").write_text("x")
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "key.pem").write_text("x")
    settings = Settings.from_env(
        {
            "REDIS_QUEUE_USERNAME": "updater",
            "REDIS_QUEUE_PASSWORD_FILE": str(tmp_path / "pw"),
            "REDIS_QUEUE_SSL": "true",
            "REDIS_QUEUE_SSL_CA_FILE": str(tmp_path / "ca.pem"),
            "REDIS_QUEUE_SSL_CERT_FILE": str(tmp_path / "cert.pem"),
            "REDIS_QUEUE_SSL_KEY_FILE": str(tmp_path / "key.pem"),
        }
    )
    redis = redis_settings(settings)
    assert (redis.username, redis.password) == ("updater", " pass word ")
    assert redis.ssl is True and redis.ssl_check_hostname is True
    assert redis.ssl_ca_certs == str(tmp_path / "ca.pem")
    assert (redis.ssl_certfile, redis.ssl_keyfile) == (
        str(tmp_path / "cert.pem"),
        str(tmp_path / "key.pem"),
    )
    plain = redis_settings(Settings.from_env({"REDIS_QUEUE_PASSWORD": "p"}))
    assert (plain.username, plain.password, plain.ssl) == (None, "p", False)


def test_the_worker_is_wired_to_the_signed_codec() -> None:
    kwargs = worker_kwargs(Settings(job_secret=Secret("s" * 40)))
    assert {f.name for f in kwargs["functions"]} == {
        UPDATE_FUNCTION,
        CHECK_FUNCTION,
        REJECTED_FUNCTION,
    }
    now_ms = int(time.time() * 1000)
    raw = job(dry_run=True, codec=JobCodec(b"s" * 40), enqueued_ms=now_ms)
    function, *_ = deserialize_job_raw(raw, deserializer=kwargs["job_deserializer"])
    assert function == UPDATE_FUNCTION
    other = job(dry_run=True, codec=JobCodec(OTHER_KEY), enqueued_ms=now_ms)
    function, *_ = deserialize_job_raw(other, deserializer=kwargs["job_deserializer"])
    assert function == REJECTED_FUNCTION  # signed with another key


def test_no_secret_stops_the_worker_unless_insecure(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(StartupError, match="no job secret"):
        check_job_signing(Settings())
    caplog.set_level(logging.WARNING)
    check_job_signing(Settings(insecure_unsigned_jobs=True))
    assert any("INSECURE" in r.getMessage() for r in caplog.records)
    check_job_signing(Settings(job_secret=Secret("s" * 40)))


# ------------------------------------------------------------------------------ cool-down
class FakeRedis:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    async def get(self, key: str) -> bytes | None:
        value = self.data.get(key)
        return value.encode() if value is not None else None

    async def set(self, key: str, value: str, ex: int | None = None) -> None:
        self.data[key] = value


@pytest.fixture(autouse=True)
def _fresh_cooldown() -> None:
    cooldown._last_finished.clear()


async def test_an_update_inside_the_interval_is_refused() -> None:
    redis, settings = FakeRedis(), Settings(compose_project_name="shop", min_interval=60)
    assert await cooldown.check_cooldown(redis, settings) is None
    await cooldown.record_update(redis, settings)
    assert "update-executor:last-update:shop" in redis.data
    message = await cooldown.check_cooldown(redis, settings)
    assert message is not None
    assert "at least 60 s apart (UPDATE_MIN_INTERVAL); try again in 60 s" in message
    # another project is not affected
    other = Settings(compose_project_name="blog", min_interval=60)
    assert await cooldown.check_cooldown(redis, other) is None


async def test_the_interval_survives_a_deleted_key_and_ignores_a_future_one() -> None:
    redis, settings = FakeRedis(), Settings(compose_project_name="shop", min_interval=60)
    await cooldown.record_update(redis, settings)
    redis.data.clear()  # a Redis writer cannot lift the cool-down of a running worker
    assert await cooldown.check_cooldown(redis, settings) is not None
    cooldown._last_finished.clear()  # a restarted worker reads Redis
    assert await cooldown.check_cooldown(redis, settings) is None
    redis.data[cooldown.cooldown_key(settings)] = "99999999999"  # far future: ignored
    assert await cooldown.check_cooldown(redis, settings) is None
    redis.data[cooldown.cooldown_key(settings)] = "garbage"
    assert await cooldown.check_cooldown(redis, settings) is None


async def test_an_interval_of_zero_disables_the_cooldown() -> None:
    redis, settings = FakeRedis(), Settings(compose_project_name="shop", min_interval=0)
    await cooldown.record_update(redis, settings)
    assert await cooldown.check_cooldown(redis, settings) is None
    assert redis.data == {}
