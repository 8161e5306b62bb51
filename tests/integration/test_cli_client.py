"""The operator's CLI on the host, as docs/operations.md has them run it (issue 25):
`update-executor --env-file /etc/update-executor/update-executor.env …` reads the worker's
environment file as systemd does (never executed) and the job secret from the unit's
LoadCredential= file, so the jobs it sends are signed; exit statuses are distinct and listed.

Real Redis (the test bed's); a worker runs only for the cancel: what is checked is what the CLI
leaves in Redis and what it answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pty
import secrets
import signal
import subprocess
import time
from pathlib import Path

import pytest
import redis

from testbed import Stack
from testbed.faults import rollback_point_path
from tests.integration.conftest import (
    CLI,
    SESSION_TAG,
    Deployment,
    run_worker_burst,
    wait_for_step,
    worker_process,
)
from worker.host.recovery import ansible_processes_of, end_process_groups
from worker.shared.client import UpdateClient
from worker.shared.keys import cancel_key
from worker.shared.signing import JobCodec, JobRejected


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # Only PATH from the shell: everything else must come from --env-file and the unit.
    return subprocess.run(
        [CLI, *args],
        env=env or {"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def host_files(stack: Stack, tmp_path: Path) -> dict[str, Path]:
    """/etc/update-executor as the install recipe leaves it: an env file with no secret in
    it, the job secret as a root-only file, the unit naming it with LoadCredential=."""
    queue = f"update-executor:cli{SESSION_TAG}:{secrets.token_hex(3)}"
    marker = tmp_path / "executed"
    env_file = tmp_path / "update-executor.env"
    env_file.write_text(
        "# as deploy/update-executor.env.example\n"
        f"REDIS_QUEUE_HOST={stack.redis_host}\n"
        f"REDIS_QUEUE_PORT={stack.redis_port}\n"
        f"UPDATE_QUEUE_NAME={queue}\n"
        # sourcing this file in a shell would run the command; the CLI only reads it
        f'MIGRATION_COMMAND=sh -c "cd /code/src && alembic upgrade head"; touch {marker}\n'
    )
    secret = tmp_path / "job_secret"
    secret.write_text(secrets.token_hex(32))
    secret.chmod(0o600)
    unit = tmp_path / "update-executor.service"
    unit.write_text(
        "[Service]\n"
        f"EnvironmentFile={env_file}\n"
        f"LoadCredential=job_secret:{secret}\n"
        f"LoadCredential=github_token:{tmp_path / 'github_token'}\n"
    )
    return {"env_file": env_file, "secret": secret, "unit": unit, "marker": marker}


def test_enqueue_with_the_env_file_sends_a_job_signed_with_the_unit_s_secret(
    stack: Stack, host_files: dict[str, Path]
) -> None:
    files = host_files
    common = ("--env-file", str(files["env_file"]), "--unit", str(files["unit"]))

    enqueued = run_cli(*common, "enqueue", "--dry-run", "--requested-by", "oncall")

    assert enqueued.returncode == 0, enqueued.stderr
    job_id = json.loads(enqueued.stdout)["job_id"]
    raw = redis.Redis(host=stack.redis_host, port=stack.redis_port).get(f"arq:job:{job_id}")
    assert isinstance(raw, bytes)
    payload = JobCodec(files["secret"].read_text().strip().encode()).open(raw)
    assert payload["typ"] == "job"
    with pytest.raises(JobRejected, match="signature does not verify"):
        JobCodec(secrets.token_hex(32).encode()).open(raw)
    assert not files["marker"].exists()  # the env file was read, never run

    # `status` without an id: the latest update, the one just queued
    latest = run_cli(*common, "status")
    assert latest.returncode == 0, latest.stderr
    answer = json.loads(latest.stdout)
    assert answer["job_id"] == job_id
    assert answer["state"] == "queued"


def test_exit_statuses_are_distinct_for_not_found_and_usage(
    host_files: dict[str, Path], tmp_path: Path
) -> None:
    common = ("--env-file", str(host_files["env_file"]), "--unit", str(host_files["unit"]))

    no_update = run_cli(*common, "status")
    assert no_update.returncode == 3, no_update.stderr
    assert "no update yet" in no_update.stderr

    unknown = run_cli(*common, "status", "no-such-job")
    assert unknown.returncode == 3, unknown.stdout + unknown.stderr
    assert json.loads(unknown.stdout)["state"] == "not_found"

    broken = tmp_path / "broken.env"
    broken.write_text("REDIS_QUEUE_HOST=localhost\nexport REDIS_QUEUE_PORT=1\n")
    bad_file = run_cli("--env-file", str(broken), "status")
    assert bad_file.returncode == 2
    assert "line 2: expected NAME=value" in bad_file.stderr

    missing = run_cli("--env-file", str(tmp_path / "absent.env"), "status")
    assert missing.returncode == 2
    assert "absent.env: No such file or directory" in missing.stderr

    bad_config = tmp_path / "bad.env"
    bad_config.write_text("REDIS_QUEUE_PORT=seventy\n")
    invalid = run_cli("--env-file", str(bad_config), "status")
    assert invalid.returncode == 2
    assert "REDIS_QUEUE_PORT must be an integer" in invalid.stderr

    usage = run_cli("status", "--no-such-flag")
    assert usage.returncode == 2


def test_help_lists_the_exit_statuses_and_version_answers() -> None:
    helped = run_cli("--help")
    assert helped.returncode == 0
    for line in ("exit status:", "3   not found", "2   usage", "10  check"):
        assert line in helped.stdout, helped.stdout

    versioned = run_cli("--version")
    assert versioned.returncode == 0
    assert versioned.stdout.startswith("update-executor 0.")


def test_the_worker_refuses_env_file(host_files: dict[str, Path]) -> None:
    refused = run_cli("--env-file", str(host_files["env_file"]), "worker")

    assert refused.returncode == 2
    assert "--env-file is for the client commands" in refused.stderr


async def test_cancel_without_an_id_cancels_the_latest_queued_update(
    deployment: Deployment, client: UpdateClient
) -> None:
    """`update-executor cancel` while an update waits in the queue: the worker takes the signed
    request before starting it, the job ends canceled and nothing changed."""
    before = deployment.image_ids()
    deployment.publish(deployment.app_repo, "2")
    job_id = await client.enqueue_update(services=["api"])
    canceling = await asyncio.create_subprocess_exec(
        CLI,
        "cancel",
        "--timeout",
        "120",
        env=deployment.worker_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    key = cancel_key(deployment.settings.queue_name, job_id)
    deadline = time.monotonic() + 60
    while not await client.redis.exists(key):  # the CLI's signed request is in Redis
        assert canceling.returncode is None, await canceling.communicate()
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)

    await run_worker_burst(deployment.settings)
    out, err = await canceling.communicate()

    assert canceling.returncode == 0, err.decode()
    assert f"update job {job_id} canceled: nothing had changed" in out.decode()
    assert (await client.status(job_id))["summary"]["status"] == "canceled"
    assert deployment.image_ids() == before

    again = await asyncio.create_subprocess_exec(
        CLI, "cancel", job_id, env=deployment.worker_env(), stdout=asyncio.subprocess.PIPE
    )
    assert (await again.communicate())[0].decode().startswith(f"update job {job_id} already ended")
    assert again.returncode == 1


def test_cancel_of_an_unknown_job_is_not_found(host_files: dict[str, Path]) -> None:
    common = ("--env-file", str(host_files["env_file"]), "--unit", str(host_files["unit"]))

    assert run_cli(*common, "cancel").returncode == 3
    unknown = run_cli(*common, "cancel", "no-such-job")
    assert unknown.returncode == 3
    assert "no update job no-such-job" in unknown.stderr


async def test_rollback_on_the_host_puts_back_what_a_killed_worker_left(
    deployment: Deployment, client: UpdateClient
) -> None:
    """`update-executor rollback`: the worker was killed in the migrations (new image running,
    rollback point on disk) and is not restarted; the operator's command puts the previous
    version back and removes the point; a second run has nothing to do."""
    deployment.settings = deployment.settings.model_copy(
        update=dict(migration_command="sleep 120", job_timeout=300)
    )
    before = deployment.image_ids()
    new_app = deployment.publish(deployment.app_repo, "2")
    job_id = await client.enqueue_update(services=["api"])
    with worker_process(deployment) as worker:
        await wait_for_step(client, job_id, "migrations")  # `sleep 120` runs now
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    end_process_groups(ansible_processes_of(job_id))  # the orphaned ansible-playbook
    point = rollback_point_path(deployment.stack, deployment.settings.lock_dir, deployment.project)
    assert point.exists()
    assert deployment.image_ids()["api"] == new_app

    done = run_cli("rollback", env=deployment.worker_env())

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"rolling back from {point}" in done.stdout
    assert "Rolled back: " in done.stdout, done.stdout
    assert not point.exists()
    assert deployment.image_ids() == before

    again = run_cli("rollback", env=deployment.worker_env())
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("nothing to roll back: no rollback point in ")


def on_terminal(*args: str) -> tuple[int, str]:
    """Run the CLI with stdout on a terminal (a pty), as an operator at a shell does."""
    main, child = pty.openpty()
    try:
        done = subprocess.run(
            [CLI, *args],
            env={"PATH": "/usr/bin:/bin"},
            stdout=child,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    finally:
        os.close(child)
    chunks = []
    with contextlib.suppress(OSError):  # EIO once everything written was read
        while chunk := os.read(main, 65536):
            chunks.append(chunk)
    os.close(main)
    return done.returncode, b"".join(chunks).decode().replace("\r\n", "\n")


def test_at_a_terminal_the_cli_prints_text_and_json_on_request(
    host_files: dict[str, Path],
) -> None:
    common = ("--env-file", str(host_files["env_file"]), "--unit", str(host_files["unit"]))

    code, queued = on_terminal(*common, "enqueue", "--dry-run")
    assert code == 0
    assert queued.startswith("queued update: job "), queued
    job_id = queued.split()[-1]

    code, shown = on_terminal(*common, "status")
    assert (code, shown.strip()) == (0, f"update {job_id}: queued")

    code, as_json = on_terminal(*common, "status", "--json")
    assert code == 0
    assert json.loads(as_json)["job_id"] == job_id


def test_a_dry_run_while_a_real_update_is_in_flight_is_not_queued(
    stack: Stack, host_files: dict[str, Path]
) -> None:
    common = ("--env-file", str(host_files["env_file"]), "--unit", str(host_files["unit"]))
    real = run_cli(*common, "enqueue", "--services", "api")
    assert real.returncode == 0, real.stderr
    real_id = json.loads(real.stdout)["job_id"]

    dry = run_cli(*common, "enqueue", "--dry-run", "--wait")

    assert dry.returncode == 1
    assert f"an update is already queued or running (job {real_id})" in dry.stderr
    assert "the dry run was not queued" in dry.stderr
    queue = next(
        line.split("=", 1)[1]
        for line in host_files["env_file"].read_text().splitlines()
        if line.startswith("UPDATE_QUEUE_NAME=")
    )
    assert redis.Redis(host=stack.redis_host, port=stack.redis_port).zcard(queue) == 1
