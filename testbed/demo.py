"""`make demo`: a sample production-shaped stack updated from v1 to v2 through the real queue.

Starts a private dockerd, a registry with htpasswd auth and a Redis (`TestBed`), deploys the
sample project at version 1, publishes version 2 to the registry only, starts the real worker
(`update-executor worker`, as systemd would), enqueues an update with the client an API would
use, and prints a readable report and the JSON summary. Everything is removed at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from testbed import (
    TestBed,
    build_app_image,
    http_get,
    running_image_ids,
    service_url,
    write_sample_project,
)
from testbed.siteenv import site_environment
from testbed.stack import Stack
from worker.host.settings import Settings
from worker.shared.client import UpdateClient

PROJECT = "demo"
APP_REPO = "acme/app"
FRONTEND_REPO = "acme/frontend"


def say(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def versions(stack: Stack, compose_file: Path) -> dict[str, str]:
    """The version each app service serves: api over its published port, as a browser would."""
    api = http_get(f"{service_url(stack, f'{PROJECT}-api')}/version").strip()
    frontend = stack.compose(compose_file, PROJECT, "exec", "-T", "frontend", "cat", "/www/version")
    return {"api": api, "frontend": frontend.stdout.strip()}


def worker_environment(stack: Stack, compose_file: Path, token_file: Path) -> dict[str, str]:
    """The worker's configuration, as an operator would put it in the EnvironmentFile."""
    return {
        **stack.env(),
        **site_environment(
            stack,
            compose_file=compose_file,
            project=PROJECT,
            token_file=token_file,
            # the demo image ships `alembic upgrade head` as a stand-in for the real migration
            migration_command="alembic upgrade head",
            # the secret the API and the worker share to sign jobs (docs/security.md); a file
            # (UPDATE_JOB_SECRET_FILE) or a systemd credential in production
            UPDATE_JOB_SECRET=secrets.token_hex(32),
        ),
    }


def print_report(summary: dict[str, Any], before: dict[str, str], after: dict[str, str]) -> None:
    print(f"\nstatus: {summary['status']}   duration: {summary['duration_s']:.1f}s")
    if summary["error"]:
        print(f"error in {summary['error']['step']}: {summary['error']['message']}")
    print("\nsteps:")
    for step in summary["steps"]:
        name, status, secs = step["name"], step["status"], step["duration_s"]
        print(f"  {name:<11} {status:<8} {secs:6.1f}s  {step['message']}")
    print("\nservices:")
    for name, service in summary["services"].items():
        old = (service["before"] or {}).get("image_id") or "-"
        new = (service["after"] or {}).get("image_id") or "-"
        mark = "updated" if service["updated"] else "unchanged"
        print(f"  {name:<9} {old[7:19]} -> {new[7:19]}  {mark:<9} health: {service['health']}")
    print(f"\nserved versions before: {before}   after: {after}")
    if summary["migrations"]["ran"]:
        print(
            f"migration (rc {summary['migrations']['rc']}): {summary['migrations']['output_tail']}"
        )


async def enqueue_and_wait(settings: Settings, requested_by: str = "make demo") -> dict[str, Any]:
    async with await UpdateClient.connect(settings) as client:
        job_id = (await client.submit_update(requested_by=requested_by)).job_id
        print(f"queued job {job_id}", flush=True)
        return await client.result(job_id, timeout=600)


def main() -> int:
    started = time.monotonic()
    with TestBed() as stack:
        say(
            f"test bed up: dockerd {stack.docker_host}, registry {stack.registry}, "
            f"redis 127.0.0.1:{stack.redis_port}"
        )
        say("building version 1 of the app and frontend images and deploying the stack")
        build_app_image(stack, APP_REPO, "1")
        build_app_image(stack, FRONTEND_REPO, "1")
        compose_file = write_sample_project(stack, stack.base_dir / PROJECT, PROJECT)
        stack.compose(compose_file, PROJECT, "up", "-d", "--wait")
        before = versions(stack, compose_file)
        untouched_before = {
            k: v for k, v in running_image_ids(stack, PROJECT).items() if k in ("db", "cache")
        }
        print(f"serving: {before}")

        say("publishing version 2 to the registry (only there, as CI would)")
        build_app_image(stack, APP_REPO, "2", registry_only=True)
        build_app_image(stack, FRONTEND_REPO, "2", registry_only=True)

        token_file = stack.base_dir / "github_token"
        token_file.write_text(stack.registry_password)
        token_file.chmod(0o600)
        env = worker_environment(stack, compose_file, token_file)
        settings = Settings.from_env(env)

        say("starting the worker (update-executor worker) and enqueuing an update")
        cli = str(Path(sys.executable).parent / "update-executor")
        worker = subprocess.Popen([cli, "worker"], env=env)
        try:
            os.environ["DOCKER_HOST"] = stack.docker_host
            summary = asyncio.run(enqueue_and_wait(settings))
        finally:
            worker.terminate()
            worker.wait(timeout=60)

        after = versions(stack, compose_file)
        say("report")
        print_report(summary, before, after)
        untouched_after = {
            k: v for k, v in running_image_ids(stack, PROJECT).items() if k in ("db", "cache")
        }
        print(f"db and cache untouched: {untouched_before == untouched_after}")
        say("summary (JSON, the job's result)")
        print(json.dumps(summary, indent=2))
        stack.compose(compose_file, PROJECT, "down", "--timeout", "1", check=False)
    say(f"done in {time.monotonic() - started:.0f}s; everything started was stopped and removed")
    return 0 if summary["status"] == "successful" and after == {"api": "2", "frontend": "2"} else 1


if __name__ == "__main__":
    sys.exit(main())
