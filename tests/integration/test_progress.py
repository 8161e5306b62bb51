"""Live progress end to end: a real worker runs the real playbook against the test bed's dockerd,
registry and Redis, and what a UI reads from Redis while and after it runs (worker/host/progress.py,
UpdateClient.progress/status/latest_update, `update-executor enqueue --wait`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from tests.integration.conftest import CliOutcome, Deployment, Outcome, update
from tests.summary_schema import assert_valid_summary
from worker.host.main import create_worker
from worker.shared.client import UpdateClient
from worker.shared.keys import RESULT_TTL_S, STREAM_MAXLEN, progress_key

PLANNED = ["preflight", "lock", "login", "snapshot", "pull", "recreate", "migrations", "report"]


def step_pairs(entries: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(kind, step) of the step entries, without the corrections: a later step_ended of a step
    that already ended (the summary settled its status differently, e.g. the pull's from the
    images it brought, whether or not compose downloaded layers; see docs/progress.md)."""
    pairs: list[tuple[str, str]] = []
    for entry in entries:
        if not entry["kind"].startswith("step_"):
            continue
        pair = (entry["kind"], entry["name"])
        if not (entry["kind"] == "step_ended" and pair in pairs):
            pairs.append(pair)
    return pairs


def ended(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The last step_ended entry of each step (a later one corrects an earlier one)."""
    return {e["name"]: e for e in entries if e["kind"] == "step_ended"}


def assert_matches_summary(entries: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Every step the summary ran is in the stream with the same status, in playbook order."""
    ends = ended(entries)
    for step in summary["steps"]:
        assert ends.get(step["name"], {}).get("status", "skipped") == step["status"], step
    ran = [s["name"] for s in summary["steps"] if s["name"] in ends]
    assert [name for kind, name in step_pairs(entries) if kind == "step_started"] == ran
    # each step starts, then ends, before the next one starts
    pairs = step_pairs(entries)
    assert pairs == [(kind, name) for name in ran for kind in ("step_started", "step_ended")]
    job_end = entries[-1]
    assert job_end["kind"] == "job_ended"
    assert job_end["status"] == summary["status"]
    assert job_end["error"] == summary["error"]


async def raw_stream(client: UpdateClient, deployment: Deployment, job_id: str) -> str:
    key = progress_key(deployment.settings.queue_name, job_id)
    return repr(await client.redis.xrange(key))


async def test_a_full_update_streams_every_planned_step(updated_once: Outcome) -> None:
    summary, deployment = updated_once.summary, updated_once.deployment
    assert summary["status"] == "successful"
    job_id = summary["job_id"]

    entries = updated_once.progress
    assert entries[0]["kind"] == "job_started"
    assert entries[0]["planned"] == PLANNED
    assert_matches_summary(entries, summary)
    assert {"preflight", "pull", "recreate", "migrations", "report"} <= set(ended(entries))
    for entry in entries:
        assert {"id", "kind", "at"} <= set(entry)
    for entry in ended(entries).values():
        assert entry["duration_s"] >= 0
        assert isinstance(entry["message"], str)
    # ids increase; `since` returns only what came after
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    async with await UpdateClient.connect(deployment.settings) as client:
        assert await client.progress(job_id) == entries  # the stream stays as it was
        assert await client.progress(job_id, since=ids[3]) == entries[4:]
        assert await client.progress(job_id, since=ids[-1]) == []
        raw = await raw_stream(client, deployment, job_id)

    status = updated_once.status
    assert status["current_step"] is None
    assert status["progress"]["done"] == status["progress"]["planned"] == len(PLANNED)
    assert [s["name"] for s in status["progress"]["steps"]] == [
        "preflight", "lock", "login", "snapshot", "backup", "pull", "recreate", "migrations",
        "report",
    ]  # fmt: skip

    # bounded, and it expires with the result (as read right after the update)
    assert 0 < updated_once.ttls["progress"] <= RESULT_TTL_S
    assert updated_once.ttls["progress_len"] == len(entries) < STREAM_MAXLEN
    assert updated_once.ttls["latest"] > 0
    # no secret in the stream
    assert deployment.stack.registry_password not in raw
    assert deployment.settings.job_secret.reveal() not in raw

    # an API started afterwards finds it
    latest = updated_once.latest
    assert latest is not None
    assert latest["job_id"] == job_id
    assert latest["state"] == "finished"
    assert latest["summary"]["status"] == "successful"


async def test_a_failed_update_streams_the_failed_step_and_the_rollback(
    rolled_back_once: Outcome,
) -> None:
    summary = rolled_back_once.summary
    assert summary["status"] == "failed"
    assert summary["error"]["step"] == "recreate"
    assert summary["rolled_back"] is True

    entries = rolled_back_once.progress
    assert_matches_summary(entries, summary)
    ends = ended(entries)
    assert ends["recreate"]["status"] == "failed"
    assert "unhealthy" in ends["recreate"]["message"]
    assert ends["rollback"]["status"] == "changed"
    assert "migrations" not in ends  # never reached
    names = [name for kind, name in step_pairs(entries) if kind == "step_started"]
    assert names[names.index("recreate") :] == ["recreate", "rollback", "report"]

    status = rolled_back_once.status
    steps = {s["name"]: s for s in status["progress"]["steps"]}
    assert steps["rollback"]["planned"] is False
    assert steps["migrations"]["status"] == "skipped"
    assert status["progress"]["done"] < status["progress"]["planned"]


async def test_a_refused_request_ends_its_stream_with_the_error(outcome_site: Deployment) -> None:
    """Refused before the playbook runs: the session's outcome site serves, nothing changes."""
    deployment = outcome_site
    async with await UpdateClient.connect(deployment.settings) as client:
        summary = await update(client, deployment, services=["db"])  # not an update service
        job_id = summary["job_id"]
        entries = await client.progress(job_id)
        assert [e["kind"] for e in entries] == ["job_ended"]
        assert entries[0]["status"] == "failed"
        assert entries[0]["error"] == summary["error"]
        assert entries[0]["error"]["step"] == "validation"

        # A Redis writer without the job secret cannot make a UI show progress: a forged entry
        # (or one copied from another job's stream) is left out.
        key = progress_key(deployment.settings.queue_name, job_id)
        forged = {"kind": "job_ended", "at": "x", "status": "successful", "job": job_id}
        await client.redis.xadd(key, {"p": json.dumps(forged), "s": "0" * 64})
        assert await client.progress(job_id) == entries
        assert (await client.status(job_id))["progress"]["steps"] == []


def test_progress_while_a_real_worker_runs_and_the_cli_waits(cli_updated_once: CliOutcome) -> None:
    done = cli_updated_once  # `enqueue --wait` served by `update-executor worker` (conftest.py)
    deployment, seen, stdout, stderr = done.deployment, done.seen, done.stdout, done.stderr

    assert done.returncode == 0, stdout[-3000:] + stderr
    summary = assert_valid_summary(json.loads(stdout))
    assert summary["status"] == "successful"
    assert done.after_images["api"] == done.new_app

    # while it ran, status() named the step and counted done < planned, never going back
    running = [s for s in seen if s["state"] == "running" and s["current_step"]]
    assert running, seen
    assert {s["job_id"] for s in seen} == {summary["job_id"]}
    assert all(s["progress"]["done"] < s["progress"]["planned"] == 8 for s in running)
    assert len({s["current_step"] for s in running}) >= 2  # it moved on while we watched
    progress = [s["progress"]["done"] for s in seen]
    assert progress == sorted(progress)
    assert seen[-1]["current_step"] is None
    assert seen[-1]["progress"]["done"] == 8

    # the CLI printed one plain line per step start and end, then the summary on stdout
    lines = stderr.splitlines()
    assert "\r" not in stderr
    for step in PLANNED:
        assert f"step {step} started" in lines, stderr
        assert any(line.startswith(f"step {step} ok ") or line.startswith(f"step {step} changed ")
                   for line in lines), (step, stderr)  # fmt: skip
    started = [line.split()[1] for line in lines if line.endswith(" started")]
    assert started == [*PLANNED[:4], "backup", *PLANNED[4:]]  # backup: unplanned, skipped
    assert deployment.stack.registry_password not in stdout + stderr

    # `status JOB_ID` shows the final progress
    assert done.status_returncode == 0, done.status_stderr
    answer = json.loads(done.status_stdout)
    assert answer["current_step"] is None
    assert answer["progress"]["done"] == answer["progress"]["planned"] == 8


async def test_an_aborted_update_shows_the_step_it_was_cut_off_in(
    deployment: Deployment, client: UpdateClient
) -> None:
    """Aborted in the migration: while it runs status() names the step; afterwards no step is
    running any more and the migration step is failed, whatever the job's end looked like."""
    deployment.settings = deployment.settings.model_copy(update=dict(migration_command="sleep 120"))
    deployment.publish(deployment.app_repo, "2")
    job_id = await client.enqueue_update(services=["api"])
    worker = create_worker(deployment.settings, poll_delay=0.1, handle_signals=False)
    worker_task = asyncio.create_task(worker.main())
    try:
        deadline = time.monotonic() + 120
        while (status := await client.status(job_id))["current_step"] != "migrations":
            assert status["state"] != "finished", status
            assert time.monotonic() < deadline, status
            await asyncio.sleep(0.2)
        assert status["state"] == "running"
        assert status["progress"]["done"] == 6  # preflight … recreate
        assert await client.abort(job_id, timeout=120) is True
    finally:
        worker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker_task
        await worker.close()

    status = await client.status(job_id)
    assert status["state"] == "finished"
    assert status["summary"]["status"] == "canceled"
    assert status["current_step"] is None
    steps = {s["name"]: s for s in status["progress"]["steps"]}
    assert steps["migrations"]["status"] == "failed"
    assert steps["report"]["status"] != "running"
