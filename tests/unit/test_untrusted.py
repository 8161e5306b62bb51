"""Untrusted strings (worker/shared/untrusted.py), the replay and clock checks of signed jobs,
results bound to their job, signed cancel requests, the cached check's binding and a
non-UTF-8 progress entry (issue 11). Fast: no Redis, no Docker."""

from __future__ import annotations

import json
import logging
import time
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

import pytest
from arq.jobs import serialize_job, serialize_result

from worker.host.settings import Settings
from worker.shared.cancel import seal_cancel, verify_cancel
from worker.shared.check import open_last_check, seal_last_check
from worker.shared.progress import decode_entry
from worker.shared.request import InvalidRequest, check_request_fields
from worker.shared.settings import Secret
from worker.shared.signing import (
    MAX_CLOCK_SKEW_MS,
    REJECTED_FUNCTION,
    REPLAY_REASON,
    JobCodec,
    JobRejected,
    WorkerJobCodec,
)
from worker.shared.untrusted import (
    InvalidJobId,
    ansible_unsafe,
    has_control_chars,
    is_job_id,
    job_id_from,
    loggable,
)

KEY = b"k" * 64
NOW = 1_700_000_000.0
NOW_MS = int(NOW * 1000)
HOSTILE = {
    "{{ }}": "x{{ lookup('ansible.builtin.pipe', 'touch /tmp/M') }}",
    "{% %}": "x{% if 1 %}y{% endif %}",
    "{# #}": "x{# c #}",
    "lookup(": "xlookup('pipe','id')",
    "newline": "x\ny",
    "NUL": "x\x00y",
    "../": "../../etc",
    "slash": "a/b",
    "space": "a b",
    "10 kB": "x" * 10_240,
    "empty": "",
    "leading dot": ".x",
    "non-ASCII": "xé",
}


def clock() -> float:
    return NOW


@pytest.mark.parametrize(
    "job_id",
    ["0f3c2a9b4e1d4c6f8a7b9c0d1e2f3a4b", "manual", "local", "worker-start", "a:b.c_d-e", "x" * 128],
)
def test_job_ids_the_worker_uses_match_the_grammar(job_id: str) -> None:
    assert is_job_id(job_id)
    assert job_id_from(job_id.encode()) == job_id
    assert loggable(job_id) == job_id


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_job_ids_are_refused_and_logged_escaped(name: str) -> None:
    value = HOSTILE[name]
    assert not is_job_id(value)
    with pytest.raises(InvalidJobId) as refused:
        job_id_from(value.encode())
    shown = refused.value.shown
    assert "\n" not in shown and "\x00" not in shown
    assert len(shown) < 120


def test_non_utf8_bytes_and_a_129_char_id_are_refused() -> None:
    for raw in (b"\xff\xfe", b"x" * 129, b"abc\r"):
        with pytest.raises(InvalidJobId):
            job_id_from(raw)


def test_loggable_cuts_and_escapes() -> None:
    assert loggable("a\nb") == "'a\\nb'"
    shown = loggable("y" * 10_000)
    assert shown.endswith("...(+9920 chars)") and len(shown) < 100
    assert loggable(b"\xff") == "'\\\\xff'"


@pytest.mark.parametrize(
    ("text", "bad"),
    [
        ("admin@example.org", False),
        ("Zoë O'Brien {{ x }}", False),
        ("a\nb", True),
        ("a\rb", True),
        ("a\x00b", True),
        ("a\x1b[31mb", True),
        ("a\x85b", True),
        ("a\u2028b", True),
        ("tab\there", True),
    ],
)
def test_requested_by_refuses_control_characters(text: str, bad: bool) -> None:
    assert has_control_chars(text) is bad
    if bad:
        with pytest.raises(InvalidRequest, match="control characters"):
            check_request_fields({"requested_by": text})
    else:
        check_request_fields({"requested_by": text})


def test_free_text_goes_to_ansible_in_its_unsafe_form() -> None:
    assert ansible_unsafe("{{ x }}") == {"__ansible_unsafe": "{{ x }}"}


# ------------------------------------------------------------------ signed jobs
def job(codec: JobCodec, enqueued_ms: int = NOW_MS, **kwargs: Any) -> bytes:
    return serialize_job(
        "process_system_update", (), kwargs, None, enqueued_ms, serializer=codec.serialize
    )


def worker() -> WorkerJobCodec:
    return WorkerJobCodec(KEY, clock=clock)


@pytest.mark.parametrize(
    ("ahead_ms", "refused"),
    [(0, False), (MAX_CLOCK_SKEW_MS, False), (MAX_CLOCK_SKEW_MS + 1000, True), (10**9, True)],
)
def test_a_job_enqueued_in_the_future_is_refused(ahead_ms: int, refused: bool) -> None:
    signer = JobCodec(KEY, clock=lambda: NOW + ahead_ms / 1000)
    result = worker().deserialize(job(signer, NOW_MS + ahead_ms, dry_run=True))
    assert (result["f"] == REJECTED_FUNCTION) is refused
    if refused:
        assert "in the future" in result["k"]["reason"]


def test_a_nonce_redis_already_holds_is_refused_as_a_replay() -> None:
    codec = worker()
    raw = job(JobCodec(KEY, clock=clock), dry_run=True)
    verified = codec.verified_nonce(raw)
    assert verified is not None
    nonce, deadline = verified
    assert deadline == NOW_MS + 900_000
    codec.refuse_nonce(nonce, deadline, REPLAY_REASON)  # what the worker does on SET NX = 0
    assert codec.deserialize(raw)["k"] == {"reason": REPLAY_REASON}


def test_verified_nonce_is_none_for_a_job_refused_anyway() -> None:
    codec = worker()
    assert codec.verified_nonce(job(JobCodec(b"o" * 64, clock=clock))) is None
    assert codec.verified_nonce(b"garbage") is None
    assert WorkerJobCodec(None, clock=clock, insecure=True).verified_nonce(b"{}") is None


def result_bytes(codec: JobCodec, job_id: str = "j1") -> bytes:
    raw = serialize_result(
        "process_system_update",
        (),
        {},
        1,
        NOW_MS,
        True,
        {"status": "successful"},
        NOW_MS,
        NOW_MS,
        "ref",
        "q",
        job_id=job_id,
        serializer=codec.serialize,
    )
    assert raw is not None
    return raw


def test_results_carry_their_job_queue_and_expiry() -> None:
    raw = result_bytes(worker(), "j1")
    payload = json.loads(json.loads(raw)["p"])
    assert (payload["typ"], payload["id"], payload["q"]) == ("result", "j1", "q")
    assert payload["exp"] == NOW_MS + 7 * 24 * 3600 * 1000
    data = JobCodec(KEY, clock=clock).deserialize(raw)
    assert data["id"] == "j1" and "exp" not in data


def test_the_client_refuses_a_job_where_a_result_belongs_and_an_expired_result() -> None:
    reader = JobCodec(KEY, clock=clock)
    with pytest.raises(JobRejected, match="not a result"):
        reader.deserialize(job(JobCodec(KEY, clock=clock)))
    late = JobCodec(KEY, clock=lambda: NOW + 8 * 24 * 3600)
    with pytest.raises(JobRejected, match="expired"):
        late.deserialize(result_bytes(worker()))


# ------------------------------------------------------------------ cancel requests
@pytest.mark.parametrize(
    ("signer_key", "queue", "job_id", "at", "valid"),
    [
        (KEY, "q", "j1", NOW, True),
        (b"o" * 64, "q", "j1", NOW, False),  # another secret
        (KEY, "other", "j1", NOW, False),  # another queue
        (KEY, "q", "j2", NOW, False),  # another job
        (KEY, "q", "j1", NOW + 700, False),  # expired (600 s)
    ],
)
def test_a_cancel_request_counts_only_for_its_job_queue_and_time(
    signer_key: bytes, queue: str, job_id: str, at: float, valid: bool
) -> None:
    raw = seal_cancel(JobCodec(signer_key, clock=clock), queue, job_id, 600)
    assert verify_cancel(JobCodec(KEY, clock=lambda: at), raw, "q", "j1") is valid


def test_an_unsigned_cancel_request_is_refused_by_a_worker_with_a_secret() -> None:
    raw = json.dumps({"typ": "cancel", "id": "j1", "q": "q", "exp": NOW_MS + 10**6}).encode()
    assert verify_cancel(JobCodec(KEY, clock=clock), raw, "q", "j1") is False
    assert verify_cancel(JobCodec(KEY, clock=clock), "not bytes", "q", "j1") is False


# ------------------------------------------------------------------ the cached check
def test_the_cached_check_is_bound_to_its_queue_and_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(job_secret=Secret("s" * 64), queue_name="update-executor:a")
    sealed = seal_last_check(settings, {"services": {}, "update_available": False})
    assert open_last_check(settings, sealed) == {"services": {}, "update_available": False}
    assert (
        open_last_check(settings.model_copy(update=dict(queue_name="update-executor:b")), sealed)
        is None
    )
    monkeypatch.setattr(time, "time", lambda: NOW * 2)
    assert open_last_check(settings, sealed) is None


# ------------------------------------------------------------------ progress entries
@pytest.mark.parametrize(
    "fields",
    [
        {b"p": b"\xff\xfe", b"s": b"00"},
        {b"\xff": b"x"},
        {b"p": b'{"job": "j1"}', b"s": b"\xc3"},
    ],
)
def test_a_non_utf8_progress_entry_is_left_out_not_raised(fields: dict[bytes, bytes]) -> None:
    assert decode_entry(b"1-0", fields, "j1", KEY) is None
    assert decode_entry(b"1-0", fields, "j1", None) is None


# ------------------------------------------------------------------ arq's own Worker
async def test_arq_s_own_worker_refuses_to_serve() -> None:
    """arq's Worker built from the worker's settings lacks UpdateWorker's
    checks."""
    from worker.host.main import StartupError, startup

    settings = Settings(job_secret=Secret("s" * 64))
    with pytest.raises(StartupError, match="update-executor worker"):
        await startup({"settings": settings})


# ------------------------------------------------------------------ LOG_FILE
def test_log_file_is_rotated_by_size(tmp_path: Path) -> None:
    from worker.shared.logs import LOG_FILE_BACKUPS, LOG_FILE_MAX_BYTES, setup_logging

    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    root.handlers = []
    try:
        setup_logging(tmp_path / "worker.log")
        files = [h for h in root.handlers if isinstance(h, RotatingFileHandler)]
        assert len(files) == 1
        assert (files[0].maxBytes, files[0].backupCount) == (LOG_FILE_MAX_BYTES, LOG_FILE_BACKUPS)
        assert LOG_FILE_MAX_BYTES == 10 * 1024 * 1024 and LOG_FILE_BACKUPS == 5
    finally:
        for handler in root.handlers:
            handler.close()
        root.handlers, root.level = saved, level
