"""Issue 21, the worker's side, in its pure parts: a signed job runs only when this worker's
own `SET NX` recorded its nonce (grant_nonce), so bytes swapped in Redis between the worker's
read and ARQ's are refused; an oversized value is refused with its real size. No Redis."""

from __future__ import annotations

from pathlib import Path

from arq.jobs import serialize_job

from worker.host.history import encode_record
from worker.shared.history import decode_record
from worker.shared.signing import (
    MAX_JOB_BYTES,
    NOT_GRANTED_REASON,
    REJECTED_FUNCTION,
    REPLAY_REASON,
    JobCodec,
    WorkerJobCodec,
)

KEY = b"k" * 64
NOW = 1_700_000_000.0


def clock() -> float:
    return NOW


def job(**kwargs: object) -> bytes:
    signer = JobCodec(KEY, clock=clock)
    return serialize_job(
        "process_system_update", (), kwargs, None, int(NOW * 1000), serializer=signer.serialize
    )


def worker_codec() -> WorkerJobCodec:
    codec = WorkerJobCodec(KEY, clock=clock)
    codec.require_granted_nonce = True  # as UpdateWorker sets it
    return codec


def test_a_job_whose_nonce_this_worker_did_not_record_is_refused() -> None:
    codec = worker_codec()
    read, swapped = job(dry_run=True), job(dry_run=False)
    verified = codec.verified_nonce(read)
    assert verified is not None
    codec.grant_nonce(*verified)  # SET NX created the key for the bytes the worker read
    # ARQ deserializes other bytes (swapped in Redis after the worker's read): refused
    assert codec.deserialize(swapped)["k"] == {"reason": NOT_GRANTED_REASON}
    # the bytes it read run once; a second time they are a replay
    assert codec.deserialize(read)["f"] == "process_system_update"
    assert codec.deserialize(read)["k"] == {"reason": REPLAY_REASON}


def test_a_nonce_recorded_before_is_refused_as_a_replay() -> None:
    codec = worker_codec()
    raw = job(dry_run=True)
    verified = codec.verified_nonce(raw)
    assert verified is not None
    codec.refuse_nonce(*verified, REPLAY_REASON)  # SET NX found the key
    assert codec.deserialize(raw)["k"] == {"reason": REPLAY_REASON}


def test_without_the_worker_a_codec_accepts_each_nonce_once() -> None:
    codec = WorkerJobCodec(KEY, clock=clock)  # require_granted_nonce off (tests, tools)
    raw = job(dry_run=True)
    assert codec.deserialize(raw)["f"] == "process_system_update"
    assert codec.deserialize(raw)["k"] == {"reason": REPLAY_REASON}


def test_an_oversized_value_read_in_part_is_refused_with_its_real_size() -> None:
    codec = worker_codec()
    start = b"x" * (MAX_JOB_BYTES + 1)  # what the worker reads of a 512 MB value
    codec.note_size(start, 512 * 1024 * 1024)
    refused = codec.deserialize(start)
    assert refused["f"] == REJECTED_FUNCTION
    assert refused["k"]["reason"] == (
        f"the job is {512 * 1024 * 1024} bytes, over the {MAX_JOB_BYTES}-byte limit"
    )


# ---------------------------------------------------------------- the unit's limits
UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "update-executor.service"


def unit_sections() -> dict[str, dict[str, str]]:
    sections: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        elif line and line[0] not in "#;" and "=" in line:
            key, value = line.split("=", 1)
            current[key.strip()] = value.strip()
    return sections


def test_a_crash_loop_ends_in_a_failed_unit_and_resources_are_bounded() -> None:
    """A worker crashing at every start (Restart=always) must hit StartLimitBurst within
    StartLimitIntervalSec, or the unit loops for ever (`make test-systemd` shows it fail)."""
    unit = unit_sections()
    burst = int(unit["Unit"]["StartLimitBurst"])
    interval = int(unit["Unit"]["StartLimitIntervalSec"])
    restart_every = int(unit["Service"]["RestartSec"])
    assert unit["Service"]["Restart"] == "always"
    assert burst > 1 and burst * restart_every < interval
    assert unit["Service"]["MemoryMax"].endswith(("M", "G"))
    assert 64 <= int(unit["Service"]["TasksMax"]) <= 4096


# ---------------------------------------------------------------- history records bound to their id
def test_a_history_record_verifies_only_under_the_id_it_was_written_under() -> None:
    fields = encode_record({"job_id": "j1", "at": 1700000000000}, KEY)
    assert decode_record(b"1700000000000-0", fields, KEY) is not None
    assert decode_record("1700000000001-0", fields, KEY) is None  # added again later
    assert decode_record("1700000000000-1", fields, KEY) is None  # a copy next to it
    assert decode_record("1600000000000-0", fields, KEY) is None  # moved before older ones
    unbound = encode_record({"job_id": "j1"}, KEY)  # signed, but not bound (before issue 21)
    assert decode_record("1700000000000-0", unbound, KEY) is None
    assert decode_record("5-0", encode_record({"job_id": "j1"}, None), None) is not None
