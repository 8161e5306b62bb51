"""Capture real ansible-runner event streams of playbooks/update.yml for the summary unit tests.

Run as root on a set-up machine: `.venv/bin/python -m tests.unit.data.capture`. It starts a
test bed, plays each scenario through `worker.runner.run_playbook` (the worker's own path),
keeps the event fields the summary reads, and writes `<scenario>.events.json` with what the
summary said, after a human has checked it (`expect`). Re-run it when the playbook changes.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from testbed import TestBed, build_app_image, write_sample_project
from worker.host.jobs import job_work_dir, now, playbook_vars
from worker.host.runner import PlaybookRun, run_playbook
from worker.host.settings import Settings
from worker.host.summary import build_summary
from worker.shared.request import UpdateRequest

HERE = Path(__file__).resolve().parent
KEEP_RES = ("changed", "msg", "stderr", "censored", "skip_reason", "rc")
KEEP_DATA = ("task", "start", "end", "duration", "ignore_errors")
STATS = ("ok", "changed", "failures", "dark", "skipped", "rescued", "ignored", "artifact_data")


def slim(event: dict[str, Any]) -> dict[str, Any] | None:
    """Only what worker/host/steps.py and summary.py read; None for events they never look at."""
    kind = str(event.get("event"))
    data = event.get("event_data") or {}
    if kind == "playbook_on_stats":
        return {"event": kind, "event_data": {k: data[k] for k in STATS if k in data}}
    if kind == "playbook_on_task_start":
        return {"event": kind, "event_data": {"task": data.get("task")}}
    if kind.startswith("runner_on_") and kind != "runner_on_start":
        res = data.get("res") or {}
        slim_data = {k: data[k] for k in KEEP_DATA if k in data}
        slim_data["res"] = {k: res[k] for k in KEEP_RES if k in res}
        return {"event": kind, "event_data": slim_data}
    return None


def capture(name: str, settings: Settings, request: UpdateRequest) -> None:
    started = now()
    with job_work_dir(settings) as (work_dir, token_file):
        outcome = run_playbook(
            PlaybookRun(
                playbook=settings.playbook,
                inventory=settings.inventory,
                extravars=playbook_vars(settings, request, name, work_dir, token_file),
                ident=name,
                check_mode=request.dry_run,
            ),
            cancel=threading.Event(),
            work_root=work_dir,
        )
    summary = build_summary(
        job_id=name, request=request, outcome=outcome, started_at=started, finished_at=now()
    ).as_dict()
    events = [e for e in map(slim, outcome.events) if e is not None]
    record = {
        "scenario": name,
        "request": request.as_dict(),
        "runner_status": outcome.status.value,
        "events": events,
        "expect": {
            "status": summary["status"],
            "steps": {s["name"]: s["status"] for s in summary["steps"]},
            "error_step": (summary["error"] or {}).get("step"),
            "updated": {n: s["updated"] for n, s in summary["services"].items()},
        },
    }
    (HERE / f"{name}.events.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"{name}: {summary['status']} {record['expect']}")


def main() -> None:
    with TestBed() as stack:
        os.environ["DOCKER_HOST"] = stack.docker_host
        build_app_image(stack, "acme/app", "1")
        build_app_image(stack, "acme/frontend", "1")
        compose_file = write_sample_project(stack, stack.base_dir / "cap", "cap")
        stack.compose(compose_file, "cap", "up", "-d", "--wait")
        token = stack.base_dir / "token"
        token.write_text(stack.registry_password)
        base = Settings.from_env(
            {
                "COMPOSE_FILE_PATH": str(compose_file),
                "COMPOSE_PROJECT_NAME": "cap",
                "REGISTRY_URL": stack.registry,
                "REGISTRY_USERNAME": stack.registry_username,
                "GITHUB_TOKEN_FILE": str(token),
                "MIGRATION_COMMAND": "/app/migrate",
                "LOG_FILE": "",
            }
        )
        services = ("api", "worker", "frontend")
        build_app_image(stack, "acme/app", "2", registry_only=True)
        capture("full_update", base, UpdateRequest(services=services))
        capture("nothing_new", base, UpdateRequest(services=services, run_migrations=False))
        build_app_image(stack, "acme/app", "3", behaviour="migrate_fail", registry_only=True)
        capture("migration_failed", base, UpdateRequest(services=("api",)))
        wrong = stack.base_dir / "wrong"
        wrong.write_text("wrong-password")
        bad_login = Settings.from_env(
            {
                **os.environ,
                "GITHUB_TOKEN_FILE": str(wrong),
                "REGISTRY_USERNAME": "updater",
                "COMPOSE_FILE_PATH": str(compose_file),
                "REGISTRY_URL": stack.registry,
                "LOG_FILE": "",
            }
        )
        capture("login_failed", bad_login, UpdateRequest(services=services))
        capture("unknown_service", base, UpdateRequest(services=("nope",)))


if __name__ == "__main__":
    main()
