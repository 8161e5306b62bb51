"""Notifications, history and metrics around a job (issue 16): the pure parts, table-driven.
The real receivers (an HTTP server for Apprise, Redis, a Prometheus scrape) are in
tests/integration/test_aftermath.py."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.summary_schema import assert_valid_summary
from worker.api.tables import format_history_table
from worker.host.history import append_line, check_record, encode_record, update_record
from worker.host.metrics import Metrics
from worker.host.notify import (
    Message,
    NotificationStatus,
    build_message,
    in_thread,
    notify,
    short_digest,
    split_urls,
)
from worker.host.settings import Settings
from worker.shared.history import decode_record, read_history_file
from worker.shared.outcome import Outcome, outcome_of, refusal_reason
from worker.shared.request import UpdateRequest
from worker.shared.result import StepResult, StepStatus, Summary, UpdateStatus, rejected_summary
from worker.shared.settings import ConfigError, Secret

T0 = datetime(2026, 11, 30, 3, 0, 0, tzinfo=UTC)
T1 = datetime(2026, 11, 30, 3, 1, 5, tzinfo=UTC)
OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64


def summary(
    status: UpdateStatus = UpdateStatus.successful,
    *,
    rolled_back: bool = False,
    error: dict[str, str] | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    updated = status is UpdateStatus.successful
    return Summary(
        job_id="job1",
        status=status,
        started_at=T0,
        finished_at=T1,
        request=UpdateRequest(services=("api",), requested_by="ops@example.org", dry_run=dry_run),
        steps=[
            StepResult("pull", StepStatus.changed, 12.5, ""),
            StepResult("recreate", StepStatus.failed if error else StepStatus.changed, 30.0),
            StepResult("backup", StepStatus.skipped, 0.0),
        ],
        services={
            "api": {
                "image": "ghcr.io/acme/app:latest",
                "before": {"container_id": "c1", "image_id": "sha256:1", "digest": OLD},
                "after": {"container_id": "c2", "image_id": "sha256:2", "digest": NEW},
                "updated": updated,
                "health": "healthy",
            }
        },
        migrations={"ran": False, "rc": None, "output_tail": ""},
        stats={},
        error=error,
        compose_project="shop",
        rolled_back=rolled_back,
        rollback={"api": {"image_id": "sha256:1", "health": "healthy"}} if rolled_back else {},
    ).as_dict()


FAILED = {"step": "recreate", "message": "api did not become healthy in 60 s"}


def refused(step: str, message: str) -> dict[str, Any]:
    return rejected_summary(
        job_id="job9", message=message, started_at=T0, finished_at=T0, step=step
    ).as_dict()


# ------------------------------------------------------------------ outcome


@pytest.mark.parametrize(
    ("data", "outcome"),
    [
        (summary(), Outcome.successful),
        (summary(UpdateStatus.failed, error=FAILED), Outcome.failed),
        (summary(UpdateStatus.failed, error=FAILED, rolled_back=True), Outcome.rolled_back),
        (summary(UpdateStatus.canceled, error=FAILED), Outcome.canceled),
        (summary(UpdateStatus.timeout, error=FAILED), Outcome.timeout),
        (refused("cooldown", "the last update ended 3 s ago"), Outcome.refused),
        (refused("validation", "unknown service: x"), Outcome.refused),
        (refused("preflight", "docker compose config failed"), Outcome.failed),
        (refused("worker", "the worker failed"), Outcome.failed),
    ],
)
def test_outcome(data: dict[str, Any], outcome: Outcome) -> None:
    assert outcome_of(data) is outcome


@pytest.mark.parametrize(
    ("step", "message", "reason"),
    [
        ("cooldown", "the last update ended 3 s ago", "cooldown"),
        ("validation", "unknown service: x", "validation"),
        ("validation", "job refused: the signature does not verify (…)", "signature"),
        ("validation", "job refused: the payload is not signed (…)", "unsigned"),
        ("validation", "job refused: the job expired: it was enqueued 999 s ago", "expired"),
        (
            "validation",
            "job refused: this signed job was already accepted once: a replay",
            "replay",
        ),
        ("validation", "job refused: the payload is a pickle (ARQ's default)", "malformed"),
        ("validation", "job refused: something new", "other"),
    ],
)
def test_refusal_reason_is_one_of_a_few_words(step: str, message: str, reason: str) -> None:
    assert refusal_reason(refused(step, message)) == reason


# ------------------------------------------------------------------ notifications


@pytest.mark.parametrize(
    ("raw", "urls"),
    [
        ("", []),
        ("json://127.0.0.1:8000/hook", ["json://127.0.0.1:8000/hook"]),
        (
            "mailto://u:p@example.org, tgram://bot/chat",
            ["mailto://u:p@example.org", "tgram://bot/chat"],
        ),
        ("# ops team\njson://a/1\n\n  json://b/2  \n", ["json://a/1", "json://b/2"]),
        ("json://a/1 json://b/2,json://c/3", ["json://a/1", "json://b/2", "json://c/3"]),
    ],
)
def test_split_urls(raw: str, urls: list[str]) -> None:
    assert split_urls(raw) == urls


@pytest.mark.parametrize(
    ("value", "short"),
    [(OLD, "sha256:aaaaaaaaaaaa"), (None, "?"), ("", "?"), ("abcdef0123456789", "abcdef012345")],
)
def test_short_digest(value: object, short: str) -> None:
    assert short_digest(value) == short


def test_message_of_a_success() -> None:
    message = build_message(summary(), "shop")
    assert message.title == "Update successful: shop"
    assert message.body.splitlines() == [
        "Outcome: successful",
        "Project: shop",
        "Job: job1",
        "Requested by: ops@example.org",
        "Services:",
        "  api: sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb, healthy",
        "Duration: 65.0 s",
    ]


def test_message_of_a_rollback_says_what_failed_and_that_it_was_rolled_back() -> None:
    message = build_message(summary(UpdateStatus.failed, error=FAILED, rolled_back=True), "shop")
    assert message.title == "Update FAILED and rolled back: shop"
    body = message.body.splitlines()
    assert "Outcome: rolled back" in body
    assert (
        "  api: sha256:aaaaaaaaaaaa (unchanged), healthy; rolled back to sha256:aaaaaaaaaaaa"
        in body
    )
    assert "Failed step: recreate: api did not become healthy in 60 s" in body
    assert "Rolled back: yes (api)" in body


def test_message_of_a_refused_job_and_of_a_dry_run() -> None:
    message = build_message(refused("cooldown", "the last update ended 3 s ago"), "shop")
    assert message.title == "Update refused: shop"
    assert "Failed step: cooldown: the last update ended 3 s ago" in message.body
    assert "Rolled back" not in message.body
    assert "Requested by: unknown" in message.body
    assert build_message(summary(dry_run=True), "shop").title == "Update successful (dry run): shop"


def settings(**changes: Any) -> Settings:
    return Settings.from_env({"LOG_FILE": ""}).model_copy(update=dict(**changes))


@pytest.mark.parametrize(
    ("urls", "notify_on", "data", "sent"),
    [
        ("", "always", summary(), False),
        ("json://x/", "failure", summary(), False),
        ("json://x/", "always", summary(), True),
        ("json://x/", "failure", summary(UpdateStatus.failed, error=FAILED), True),
        ("json://x/", "failure", refused("cooldown", "too soon"), True),
    ],
)
async def test_notify_on(urls: str, notify_on: str, data: dict[str, Any], sent: bool) -> None:
    messages: list[Message] = []

    def send(_: list[str], message: Message) -> bool:
        messages.append(message)
        return True

    status = await notify(
        settings(notify_urls=Secret(urls), notify_on=notify_on), data, "shop", send
    )
    assert status is (NotificationStatus.sent if sent else NotificationStatus.off)
    assert len(messages) == int(sent)


async def test_a_hanging_or_failing_sender_is_bounded_and_reported_failed() -> None:
    release = threading.Event()
    chosen = settings(notify_urls=Secret("json://x/"), notify_on="always", notify_timeout=0.2)
    try:
        status = await notify(chosen, summary(), "shop", lambda *_: release.wait(30))
        assert status is NotificationStatus.failed
    finally:
        release.set()

    def boom(*_: object) -> bool:
        raise RuntimeError("receiver exploded")

    assert await notify(chosen, summary(), "shop", boom) is NotificationStatus.failed
    assert await notify(chosen, summary(), "shop", lambda *_: False) is NotificationStatus.failed


async def test_in_thread_returns_the_answer() -> None:
    assert await in_thread(lambda: True, 5, "t") is True
    with pytest.raises(TimeoutError):
        event = threading.Event()
        try:
            await in_thread(lambda: event.wait(10), 0.05, "t")
        finally:
            event.set()
    await asyncio.sleep(0)


def test_summary_has_notification_off_by_default_and_stays_schema_valid() -> None:
    data = summary()
    assert data["notification"] == "off"
    assert_valid_summary(data)
    assert_valid_summary({**data, "notification": "sent"})
    assert_valid_summary(refused("cooldown", "too soon"))


# ------------------------------------------------------------------ settings


def test_notification_and_history_settings(tmp_path: Path) -> None:
    urls = tmp_path / "urls"
    urls.write_text("json://127.0.0.1:9/hook\n")
    chosen = Settings.from_env(
        {
            "LOG_FILE": "",
            "NOTIFY_URLS_FILE": str(urls),
            "NOTIFY_ON": "always",
            "HISTORY_FILE": str(tmp_path / "h.jsonl"),
            "METRICS_PORT": "9321",
            "METRICS_TEXTFILE": str(tmp_path / "ue.prom"),
        }
    )
    assert chosen.notify_urls.reveal() == "json://127.0.0.1:9/hook"
    assert "127.0.0.1:9" not in repr(chosen)
    assert chosen.notify_on == "always"
    assert chosen.history_file == tmp_path / "h.jsonl"
    assert (chosen.metrics_host, chosen.metrics_port) == ("127.0.0.1", 9321)
    assert chosen.metrics_textfile == tmp_path / "ue.prom"
    credentials = tmp_path / "creds"
    credentials.mkdir()
    (credentials / "notify_urls").write_text("json://a/1")
    from_systemd = Settings.from_env(
        {
            "LOG_FILE": "",
            "CREDENTIALS_DIRECTORY": str(credentials),
            "STATE_DIRECTORY": str(tmp_path),
        }
    )
    assert from_systemd.notify_urls.reveal() == "json://a/1"
    assert from_systemd.history_file == tmp_path / "history.jsonl"
    assert Settings.from_env({"LOG_FILE": "", "HISTORY_FILE": "-"}).history_file is None
    assert Settings.from_env({"LOG_FILE": ""}).metrics_port is None


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NOTIFY_ON": "sometimes"}, "NOTIFY_ON must be failure or always"),
        ({"METRICS_PORT": "70000"}, "METRICS_PORT must be between"),
        ({"NOTIFY_URLS_FILE": "/nonexistent/urls"}, "NOTIFY_URLS_FILE"),
    ],
)
def test_bad_settings(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({"LOG_FILE": "", **env})


# ------------------------------------------------------------------ history


def test_update_record_of_a_rollback() -> None:
    record = update_record(summary(UpdateStatus.failed, error=FAILED, rolled_back=True))
    assert record["kind"] == "update"
    assert record["outcome"] == "rolled_back"
    assert record["status"] == "failed"
    assert record["requested_by"] == "ops@example.org"
    assert record["request"]["services"] == ["api"]
    assert record["services"] == {
        "api": {"image": "ghcr.io/acme/app:latest", "before": OLD, "after": NEW, "updated": False}
    }
    assert record["error"] == FAILED
    assert record["rolled_back"] is True
    assert (record["started_at"], record["finished_at"]) == (T0.isoformat(), T1.isoformat())


def test_the_record_of_a_revert_says_revert() -> None:
    reverted = summary()
    reverted["request"] = {**reverted["request"], "run_migrations": False, "revert": True}
    record = update_record(reverted)
    assert (record["kind"], record["outcome"]) == ("revert", "successful")
    assert record["request"]["revert"] is True


def test_refused_and_check_records() -> None:
    record = update_record(refused("validation", "unknown service: x"))
    assert (record["kind"], record["outcome"], record["request"]) == ("refused", "refused", None)
    check = check_record(
        {
            "job_id": "c1",
            "checked_at": T0.isoformat(),
            "update_available": True,
            "error": None,
            "services": {
                "api": {
                    "image": "i",
                    "local_digest": OLD,
                    "remote_digest": NEW,
                    "update_available": True,
                }
            },
        }
    )
    assert (check["kind"], check["status"]) == ("check", "update_available")
    assert check["services"]["api"] == {
        "image": "i",
        "before": OLD,
        "after": NEW,
        "update_available": True,
    }
    failed = check_record({"job_id": "c2", "error": "registry down", "services": {}})
    assert failed["status"] == "error"
    assert failed["error"] == {"step": "check", "message": "registry down"}


@pytest.mark.parametrize("key", [b"k" * 32, None])
def test_records_verify_only_with_the_secret(key: bytes | None) -> None:
    fields = encode_record({"job_id": "j", "at": 1}, key)  # written under the id 1-0
    assert decode_record("1-0", fields, key) == {"id": "1-0", "job_id": "j", "at": 1}
    forged = {"p": json.dumps({"job_id": "evil"}), "s": ""}
    assert (decode_record("2-0", forged, key) is None) is (key is not None)
    tampered = {**fields, "p": fields["p"].replace('"j"', '"x"')}
    assert (decode_record("3-0", tampered, key) is None) is (key is not None)


def test_history_file_is_private_append_only_and_rotated(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    for n in range(30):
        append_line(path, {"job_id": f"j{n}", "pad": "x" * 100}, max_bytes=1000)
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert path.stat().st_size <= 1000
    assert path.with_name("history.jsonl.1").exists()
    assert path.with_name("history.jsonl.3").exists()
    assert not path.with_name("history.jsonl.4").exists()
    last = read_history_file(path, 10)
    assert [r["job_id"] for r in last] == [f"j{n}" for n in range(20, 30)]
    with path.open("a") as handle:
        handle.write("not json\n")
    assert read_history_file(path, 1)[0]["job_id"] == "j29"


def test_history_file_is_never_written_through_a_symlink(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("")
    (tmp_path / "h.jsonl").symlink_to(target)
    with pytest.raises(OSError):
        append_line(tmp_path / "h.jsonl", {"job_id": "j"}, 10_000)
    assert target.read_text() == ""


def test_history_table() -> None:
    assert format_history_table([]) == "no history yet"
    table = format_history_table(
        [
            update_record(summary()),
            update_record(summary(UpdateStatus.failed, error=FAILED, rolled_back=True)),
        ]
    ).splitlines()
    assert table[0].split() == ["FINISHED", "KIND", "OUTCOME", "BY", "SERVICES", "JOB", "ERROR"]
    assert "successful" in table[1] and "api" in table[1]
    assert "rolled_back" in table[2] and "recreate: api did not become healthy" in table[2]


# ------------------------------------------------------------------ metrics


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_updates_rollbacks_refusals_and_steps() -> None:
    metrics = Metrics(version="9.9.9")
    metrics.observe_update(summary())
    metrics.observe_update(summary(UpdateStatus.failed, error=FAILED, rolled_back=True))
    metrics.observe_update(refused("cooldown", "too soon"))
    metrics.observe_update(summary(dry_run=True))  # not an update
    metrics.observe_check({"services": {"a": {"update_available": True}, "b": {}}, "error": None})
    got = samples(metrics)
    assert got[("update_executor_updates_total", (("status", "successful"),))] == 1
    assert got[("update_executor_updates_total", (("status", "failed"),))] == 1
    assert got[("update_executor_updates_total", (("status", "timeout"),))] == 0
    assert got[("update_executor_rollbacks_total", ())] == 1
    assert got[("update_executor_refused_jobs_total", (("reason", "cooldown"),))] == 1
    assert got[("update_executor_update_duration_seconds_count", ())] == 2
    assert got[("update_executor_update_duration_seconds_sum", ())] == 130.0
    assert got[("update_executor_step_duration_seconds_count", (("step", "pull"),))] == 2
    assert ("update_executor_step_duration_seconds_count", (("step", "backup"),)) not in got
    assert got[("update_executor_updates_available", ())] == 1
    assert got[("update_executor_info", (("version", "9.9.9"),))] == 1
    assert got[("update_executor_last_update_timestamp_seconds", (("status", "failed"),))] > 0
    metrics.observe_check({"services": {}, "error": "registry down"})  # keeps what it knew
    assert samples(metrics)[("update_executor_updates_available", ())] == 1


def test_metrics_textfile_is_replaced_whole(tmp_path: Path) -> None:
    metrics = Metrics()
    path = tmp_path / "update_executor.prom"
    chosen = settings(metrics_textfile=path)
    metrics.write_textfile(chosen)
    first = path.stat().st_ino
    metrics.observe_update(summary())
    metrics.write_textfile(chosen)
    assert path.stat().st_ino != first  # a new file renamed over, never rewritten in place
    assert list(tmp_path.iterdir()) == [path]  # no temp file left
    families = {f.name for f in text_string_to_metric_families(path.read_text())}
    assert "update_executor_updates" in families
    metrics.write_textfile(settings(metrics_textfile=tmp_path / "missing" / "x.prom"))  # logged
