import asyncio
import pickle

import pytest

from worker.shared.serialization import RemoteJobError, deserialize, serialize


def test_jobs_round_trip_as_json() -> None:
    job = {"t": 1, "f": "process_system_update", "a": [], "k": {"services": ["api"]}, "et": 1}
    raw = serialize(job)
    assert raw.startswith(b"{")
    assert deserialize(raw) == job


@pytest.mark.parametrize(
    ("error", "expected_type"),
    [
        (asyncio.CancelledError("aborted"), asyncio.CancelledError),
        (TimeoutError("slow"), TimeoutError),
        (ValueError("boom"), RemoteJobError),
    ],
)
def test_exceptions_come_back_as_whitelisted_types(
    error: BaseException, expected_type: type[BaseException]
) -> None:
    back = deserialize(serialize({"r": error, "s": False}))
    assert isinstance(back["r"], expected_type)
    if isinstance(back["r"], RemoteJobError):
        assert back["r"].kind == "ValueError"
        assert back["r"].message == "boom"


def test_an_exception_tag_cannot_name_a_class_to_import() -> None:
    back = deserialize(b'{"r": {"__exception__": "os.system", "message": "id"}}')
    assert isinstance(back["r"], RemoteJobError)
    assert back["r"].kind == "os.system"


def test_a_look_alike_object_with_more_keys_stays_a_dict() -> None:
    raw = b'{"__exception__": "ValueError", "message": "x", "extra": 1}'
    assert deserialize(raw) == {"__exception__": "ValueError", "message": "x", "extra": 1}


@pytest.mark.parametrize(
    "raw",
    [
        pickle.dumps({"f": "process_system_update"}),
        b"\x80\x04garbage",
        b"",
        b"not json",
    ],
)
def test_pickle_and_garbage_are_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        deserialize(raw)


def test_unknown_objects_are_not_serialized_silently() -> None:
    with pytest.raises(TypeError, match="cannot serialize object"):
        serialize({"x": object()})
