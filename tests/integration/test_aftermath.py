"""What operators get around an update (issue 16), on the test bed: notifications to a real
HTTP receiver through Apprise's json://, the update history read back through the client,
the CLI and the router, and the Prometheus metrics scraped from a real worker process.

Each scenario runs a real update, a real rollback (an unhealthy new version) and a refused
job through the queue, the real ARQ worker and the real playbook.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Any

import httpx
import pytest
from fastapi import FastAPI, Header, HTTPException
from prometheus_client.parser import text_string_to_metric_families

from testbed.procs import free_port
from tests.integration.conftest import CLI, Deployment, update, worker_process
from tests.summary_schema import assert_valid_summary
from worker.api import build_router
from worker.host.notify import short_digest
from worker.shared.client import UpdateClient
from worker.shared.keys import history_key
from worker.shared.settings import Secret

ADMIN = {"X-Admin-Token": "history-test-token"}


@dataclass
class Receiver:
    """An HTTP server on loopback that keeps every JSON body POSTed to it."""

    server: ThreadingHTTPServer
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.server.server_address[1]}/hook"


@pytest.fixture
def deployment(shared_deployment: Deployment) -> Deployment:
    """The module's deployment on a queue of each test's own (history, metrics and the
    latest update are per queue); each test publishes its own versions."""
    return shared_deployment.with_fresh_queue()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Receiver(server, received)
    finally:
        server.shutdown()
        server.server_close()


async def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """A command (the CLI, as an operator runs it) without blocking the event loop."""
    return await asyncio.to_thread(
        subprocess.run, list(argv), env=env, capture_output=True, text=True, check=False
    )


def digests(summary: dict[str, Any], service: str) -> tuple[str, str]:
    entry = summary["services"][service]
    return short_digest(entry["before"]["digest"]), short_digest(entry["after"]["digest"])


async def test_notifications_and_history_of_an_update_a_rollback_and_a_refused_job(
    deployment: Deployment, client: UpdateClient, receiver: Receiver, tmp_path: Path
) -> None:
    history_file = tmp_path / "state" / "history.jsonl"
    history_file.parent.mkdir()
    deployment.settings = deployment.settings.model_copy(
        update=dict(
            notify_urls=Secret(receiver.url),
            notify_on="always",
            history_file=history_file,
        )
    )
    project = deployment.project

    # 1. a successful update (notified because NOTIFY_ON=always)
    deployment.publish(deployment.app_repo, deployment.next_version())
    ok = await update(client, deployment, services=["api"], requested_by="alice@example.org")
    assert ok["status"] == "successful", ok["error"]
    assert ok["notification"] == "sent"
    assert len(receiver.messages) == 1
    message = receiver.messages[0]
    assert message["title"] == f"Update successful: {project}"
    before, after = digests(ok, "api")
    assert before != after
    body = message["message"].splitlines()
    assert "Requested by: alice@example.org" in body
    assert f"  api: {before} -> {after}, healthy" in body
    assert any(line.startswith("Duration: ") for line in body)

    # 2. an unhealthy new version: rolled back
    deployment.publish(deployment.app_repo, deployment.next_version(), behaviour="unhealthy")
    bad = await update(client, deployment, services=["api"], requested_by="bob@example.org")
    assert bad["status"] == "failed"
    assert bad["rolled_back"] is True
    assert bad["notification"] == "sent"
    message = receiver.messages[1]
    assert message["title"] == f"Update FAILED and rolled back: {project}"
    assert message["type"] == "info"
    body = message["message"].splitlines()
    assert "Outcome: rolled back" in body
    assert "Requested by: bob@example.org" in body
    assert any(line.startswith("Failed step: recreate: ") for line in body)
    assert "Rolled back: yes (api)" in body
    tried_before, tried_after = digests(bad, "api")
    assert f"  api: {tried_before} -> {tried_after}, " in message["message"]
    assert f"rolled back to {tried_before}" in message["message"]

    # 3. a job the worker refuses (db is not an update service)
    refused = await update(client, deployment, services=["db"], requested_by="carol@example.org")
    assert refused["status"] == "failed"
    assert refused["error"]["step"] == "validation"
    assert refused["notification"] == "sent"
    message = receiver.messages[2]
    assert message["title"] == f"Update refused: {project}"
    assert "Failed step: validation: " in message["message"]
    assert "db" in message["message"]

    # No secret in any message: neither the registry password nor the job secret.
    everything = json.dumps(receiver.messages)
    assert deployment.stack.registry_password not in everything
    assert deployment.settings.job_secret.reveal() not in everything

    # A record forged in Redis without the secret is left out.
    forged = {"kind": "update", "job_id": "forged", "outcome": "successful"}
    await client.redis.xadd(
        history_key(deployment.settings.queue_name), {"p": json.dumps(forged), "s": "0" * 64}
    )

    jobs = [ok["job_id"], bad["job_id"], refused["job_id"]]

    def check_records(records: list[dict[str, Any]]) -> None:
        assert [r["job_id"] for r in records] == jobs
        first, second, third = records
        assert (first["kind"], first["outcome"], first["requested_by"]) == (
            "update",
            "successful",
            "alice@example.org",
        )
        assert first["services"]["api"]["before"] == ok["services"]["api"]["before"]["digest"]
        assert first["services"]["api"]["after"] == ok["services"]["api"]["after"]["digest"]
        assert first["request"]["services"] == ["api"]
        assert first["error"] is None and first["rolled_back"] is False
        assert (second["kind"], second["outcome"], second["status"]) == (
            "update",
            "rolled_back",
            "failed",
        )
        assert second["rolled_back"] is True
        assert second["error"]["step"] == "recreate"
        # the image it tried, and (rolled_back) that the old one runs again
        assert second["services"]["api"]["after"] != second["services"]["api"]["before"]
        assert (third["kind"], third["outcome"]) == ("refused", "refused")
        assert third["error"]["step"] == "validation"
        for record in records:
            assert record["started_at"] and record["finished_at"]
            assert record["notification"] == "sent"

    # from the client
    check_records(await client.history(10))

    # from the CLI (JSON and the table), as an operator on the host runs it
    env = deployment.worker_env()
    answer = await run(CLI, "history", "--json", "--limit", "10", env=env)
    assert answer.returncode == 0, answer.stderr
    check_records(json.loads(answer.stdout))
    table = await run(CLI, "history", env=env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["FINISHED", "KIND", "OUTCOME"]
    assert [line.split()[2] for line in lines[1:]] == ["update", "update", "refused"]
    assert "forged" not in table.stdout

    # from the router, behind the host's auth
    def require_admin(x_admin_token: Annotated[str | None, Header()] = None) -> None:
        if x_admin_token != ADMIN["X-Admin-Token"]:
            raise HTTPException(status_code=401, detail="not authenticated")

    app = FastAPI()
    app.include_router(build_router(lambda: client, require_admin))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        assert (await http.get("/system/update/history")).status_code == 401
        response = await http.get("/system/update/history?limit=10", headers=ADMIN)
    assert response.status_code == 200
    check_records(response.json()["records"])

    # and the host's file: the same three records (the forged one never reached it), 0600
    assert os.stat(history_file).st_mode & 0o777 == 0o600
    on_file = [json.loads(line) for line in history_file.read_text().splitlines()]
    check_records([{"id": "-", **record} for record in on_file])
    from_file = await run(CLI, "history", "--json", "--file", str(history_file), env=env)
    assert [r["job_id"] for r in json.loads(from_file.stdout)] == jobs

    for summary in (ok, bad, refused):
        assert_valid_summary(summary)


# ------------------------------------------------------------------ metrics


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback http)
        return parse(response.read().decode())


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError):
            value = condition()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


UPDATES = "update_executor_updates_total"
COUNT = ("update_executor_update_duration_seconds_count", ())


def count(samples: dict[Any, float], status: str) -> float:
    return samples[(UPDATES, (("status", status),))]


async def test_metrics_after_an_update_and_a_rollback_with_an_unreachable_receiver(
    deployment: Deployment, client: UpdateClient, tmp_path: Path
) -> None:
    port, dead = free_port(), free_port()  # nothing listens on `dead`
    textfile = tmp_path / "textfile" / "update_executor.prom"
    textfile.parent.mkdir()
    env = {
        "METRICS_PORT": str(port),
        "METRICS_TEXTFILE": str(textfile),
        "NOTIFY_URLS": f"json://127.0.0.1:{dead}/hook",
        "NOTIFY_ON": "always",
        "NOTIFY_TIMEOUT": "20",
        "HISTORY_FILE": "-",
    }
    url = f"http://127.0.0.1:{port}/metrics"
    with worker_process(deployment, **env) as worker:
        start = wait_for(lambda: scrape(url), 60, "the metrics endpoint")
        assert worker.poll() is None
        assert count(start, "successful") == count(start, "failed") == 0
        assert start[COUNT] == 0
        assert parse(textfile.read_text())[COUNT] == 0  # written at start
        info = [key for key in start if key[0] == "update_executor_info"]
        assert info == [("update_executor_info", (("version", "0.1.0"),))]

        deployment.publish(deployment.app_repo, deployment.next_version())
        job = await client.enqueue_update(services=["api"], requested_by="metrics-test")
        ok = assert_valid_summary(await client.result(job, timeout=200))
        # the receiver is unreachable: the update's outcome is unchanged, the summary says so
        assert ok["status"] == "successful", ok["error"]
        assert ok["notification"] == "failed"
        after_update = scrape(url)
        assert count(after_update, "successful") == 1
        assert count(after_update, "failed") == 0
        assert after_update[COUNT] == 1
        assert after_update[("update_executor_update_duration_seconds_sum", ())] == pytest.approx(
            ok["duration_s"], abs=0.01
        )
        assert after_update[("update_executor_rollbacks_total", ())] == 0
        pull = ("update_executor_step_duration_seconds_count", (("step", "pull"),))
        assert after_update[pull] == 1
        last_ok = ("update_executor_last_update_timestamp_seconds", (("status", "successful"),))
        assert after_update[last_ok] == pytest.approx(time.time(), abs=120)
        inode = textfile.stat().st_ino

        deployment.publish(deployment.app_repo, deployment.next_version(), behaviour="unhealthy")
        job = await client.enqueue_update(services=["api"], requested_by="metrics-test")
        bad = assert_valid_summary(await client.result(job, timeout=200))
        assert bad["status"] == "failed"
        assert bad["rolled_back"] is True
        after_rollback = scrape(url)
        assert count(after_rollback, "successful") == 1
        assert count(after_rollback, "failed") == 1
        assert after_rollback[("update_executor_rollbacks_total", ())] == 1
        assert after_rollback[COUNT] == 2
        assert after_rollback[pull] == 2
        # the textfile says the same, and was replaced whole (a new inode, no temp file left)
        assert textfile.stat().st_ino != inode
        assert list(textfile.parent.iterdir()) == [textfile]
        in_file = parse(textfile.read_text())
        for key in (
            ("update_executor_rollbacks_total", ()),
            COUNT,
            (UPDATES, (("status", "failed"),)),
        ):
            assert in_file[key] == after_rollback[key]
        # only on loopback

        # a check: the gauge says how many services have a newer image
        check = await client.check_for_updates(timeout=60)
        assert check["error"] is None
        available = sum(1 for c in check["services"].values() if c["update_available"])
        assert available >= 1  # api runs the healthy version again, the registry has the other
        assert scrape(url)[("update_executor_updates_available", ())] == available

        # a job without a signature: refused, counted with its reason, recorded
        unsigned_settings = deployment.settings.model_copy(update=dict(job_secret=Secret("")))
        async with await UpdateClient.connect(unsigned_settings) as unsigned:
            job = await unsigned.enqueue_update(services=["api"])
        refused = await client.result(job, timeout=60)
        assert refused["error"]["message"].startswith("job refused: the payload is not signed")
        after_refusal = scrape(url)
        assert after_refusal[("update_executor_refused_jobs_total", (("reason", "unsigned"),))] == 1
        assert count(after_refusal, "failed") == 1  # a refused job is not an update
        # refusals of unsigned jobs are recorded in bulk, in the background (issue 21)
        for _ in range(300):  # up to 30 s
            records = await client.history(10)
            if len(records) >= 4:
                break
            await asyncio.sleep(0.1)
        assert [r["kind"] for r in records] == ["update", "update", "check", "refused"]
        assert records[2]["job_id"] == check["job_id"]
        assert (records[3]["job_id"], records[3]["count"]) == (job, 1)

        listening = await run("ss", "-Hltn", f"sport = :{port}")
        assert listening.stdout.split()[3] == f"127.0.0.1:{port}"
