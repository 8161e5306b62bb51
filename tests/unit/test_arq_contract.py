"""UpdateWorker (worker/host/arq_worker.py) hardens arq's Worker by overriding some of its
methods, private ones among them, and reads a few private attributes: nothing in arq promises
that they keep their meaning. This test fails loudly when an arq release changes the code of
any method we override or call, or drops an attribute we read. Then: read the new arq code of
the method named, adapt UpdateWorker, and record the new digest here (and widen the pin in
pyproject.toml)."""

from __future__ import annotations

import hashlib
import inspect

import arq
import arq.worker
import pytest

from worker.host.arq_worker import UpdateWorker

# arq 0.28.0: sha256 of inspect.getsource(arq.worker.Worker.<name>), first 16 hex digits.
ARQ_CODE = {
    "__init__": "edfb0cd7e05e77cf",
    "_poll_iteration": "f8d39d823a0a59f2",
    "record_health": "108f4b8686c9402d",
    "start_jobs": "b45797cfa40bed7f",
    "run_job": "589a19059ff84ee7",
    "finish_job": "903f09c92830d3fd",
    "finish_failed_job": "3e16087f318a7acf",
    "_wait_for_tasks_to_complete": "c186389a00b11500",
    "handle_sig": "985ff7ba01aa8f04",
    # Called, not overridden: must exist.
    "_sleep_until_tasks_complete": None,
    "_jobs_started": None,
}
# Private attributes of arq's Worker that UpdateWorker reads (set in Worker.__init__).
ARQ_ATTRIBUTES = ("_job_completion_wait",)


def digest(name: str) -> str:
    source = inspect.getsource(getattr(arq.worker.Worker, name))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def test_every_override_is_listed() -> None:
    overridden = {
        name
        for name, member in vars(UpdateWorker).items()
        if callable(member) and hasattr(arq.worker.Worker, name)
    }
    assert overridden <= set(ARQ_CODE), f"record arq's code of {overridden - set(ARQ_CODE)}"


@pytest.mark.parametrize("name", sorted(ARQ_CODE))
def test_arq_s_code_is_the_one_updateworker_was_written_against(name: str) -> None:
    assert hasattr(arq.worker.Worker, name), f"arq {arq.VERSION} has no Worker.{name}"
    expected = ARQ_CODE[name]
    if expected is not None:
        assert digest(name) == expected, (
            f"arq {arq.VERSION} changed Worker.{name}: review UpdateWorker against it"
        )


def test_the_private_attributes_we_read_exist() -> None:
    init = inspect.getsource(arq.worker.Worker.__init__)
    missing = [name for name in ARQ_ATTRIBUTES if f"self.{name} =" not in init]
    assert missing == [], f"arq {arq.VERSION} no longer sets {missing}"
