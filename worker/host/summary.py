"""Turn what the playbook did (ansible-runner events and its `set_stats` report) into the job's
summary. Pure functions only, so every branch has a fast unit test.

The summary's shape is documented in `docs/result.schema.json`; tests validate every summary
they see against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..shared.request import UpdateRequest
from ..shared.result import (
    NOT_REACHED,
    Step,
    StepResult,
    StepStatus,
    Summary,
    UpdateStatus,
    rejected_summary,
)
from .failures import describe

# The result's types live on the shared side (worker/shared/result.py): the API reads them.
__all__ = [
    "NOT_REACHED",
    "RunOutcome",
    "Step",
    "StepResult",
    "StepStatus",
    "Summary",
    "UpdateStatus",
    "build_summary",
    "rejected_summary",
]

STATS_KEY = "update_executor"
MAX_MESSAGE = 1000


@dataclass
class StepAccumulator:
    """What the events of one step's tasks add up to."""

    tasks: int = 0
    ok: int = 0
    changed: int = 0
    failed: int = 0
    skipped: int = 0
    first_start: datetime | None = None
    last_end: datetime | None = None
    duration_s: float = 0.0
    failure: str = ""
    skip_reasons: list[str] = field(default_factory=list)


def step_of_task(task_name: str) -> Step | None:
    """'Pull | Pull the new images' -> Step.pull; names without a known prefix -> None."""
    prefix, sep, _ = task_name.partition("|")
    if not sep:
        return None
    try:
        return Step(prefix.strip().lower())
    except ValueError:
        return None


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _clip(text: str, limit: int = MAX_MESSAGE) -> str:
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-(limit - 1) :]


def failure_message(result: Mapping[str, Any], task: str = "") -> str:
    """The most useful text of a failed task's result: one sentence for compose's failures and a
    failed command (failures.describe), else its msg, plus stderr when it adds to it."""
    if result.get("censored"):
        # no_log tasks (login): ansible hides the result, so we say what we know.
        return "the task's output is hidden (no_log); see the worker log for the cause"
    sentence = describe(task, result)
    if sentence is not None:
        return _clip(sentence)
    message = str(result.get("msg") or "").strip()
    stderr = str(result.get("stderr") or result.get("module_stderr") or "").strip()
    if stderr and stderr not in message:
        message = f"{message}: {stderr}" if message else stderr
    return _clip(message or "failed")


RUNNER_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "failed",
}


def task_result(event: Mapping[str, Any]) -> tuple[Step, str, Mapping[str, Any]] | None:
    """A task's result event as (step, "ok"|"failed"|"skipped", event_data); None for any
    other event and for tasks without a known step prefix."""
    kind = RUNNER_EVENTS.get(str(event.get("event")))
    if kind is None:
        return None
    data: Mapping[str, Any] = event.get("event_data") or {}
    step = step_of_task(str(data.get("task", "")))
    return None if step is None else (step, kind, data)


def did_bookkeeping(result: Mapping[str, Any]) -> bool:
    """The run's own bookkeeping, which the role reports as no change of the host (so that a
    no-op update reports changed=0, issue 13) but the summary shows as its step's work, as
    before: the lock taken (`acquired`) or released (`released`), the registry login
    (community.docker's `login_result`)."""
    return (
        result.get("acquired") is True
        or result.get("released") is True
        or bool(result.get("login_result"))
    )


def add_task_result(acc: StepAccumulator, kind: str, data: Mapping[str, Any]) -> None:
    """Count one task result (see `task_result`) into its step's accumulator."""
    acc.tasks += 1
    result = data.get("res") or {}
    if kind == "failed" and data.get("ignore_errors"):
        kind = "ok"
    if kind == "failed":
        acc.failed += 1
        if not acc.failure:
            acc.failure = failure_message(result, str(data.get("task") or ""))
    elif kind == "skipped":
        acc.skipped += 1
        reason = str(result.get("skip_reason") or "")
        if reason:
            acc.skip_reasons.append(reason)
    elif result.get("changed") or did_bookkeeping(result):
        acc.changed += 1
    else:
        acc.ok += 1
    start, end = _parse_time(data.get("start")), _parse_time(data.get("end"))
    if start and (acc.first_start is None or start < acc.first_start):
        acc.first_start = start
    if end and (acc.last_end is None or end > acc.last_end):
        acc.last_end = end
    acc.duration_s += float(data.get("duration") or 0.0)


def accumulated_status(acc: StepAccumulator | None) -> StepStatus:
    """A step's status from its tasks: failed if one failed (not ignored), else changed if
    one changed, else ok; skipped when no task of it ran."""
    if acc is None or acc.tasks == acc.skipped:
        return StepStatus.skipped
    if acc.failed:
        return StepStatus.failed
    return StepStatus.changed if acc.changed else StepStatus.ok


def accumulate_steps(events: Iterable[Mapping[str, Any]]) -> dict[Step, StepAccumulator]:
    """Group ansible-runner's per-task results by step."""
    steps: dict[Step, StepAccumulator] = {}
    for event in events:
        parsed = task_result(event)
        if parsed is not None:
            step, kind, data = parsed
            add_task_result(steps.setdefault(step, StepAccumulator()), kind, data)
    return steps


def step_results(
    accumulated: Mapping[Step, StepAccumulator], messages: Mapping[Step, str]
) -> list[StepResult]:
    """One result per step, in playbook order; steps with no task event count as skipped."""
    results: list[StepResult] = []
    failed_before = False
    for step in Step:
        acc = accumulated.get(step)
        result = StepResult(name=step.value, status=accumulated_status(acc))
        if step in HOOK_STEPS and result.status is StepStatus.skipped:
            continue  # no hook configured or reached: no such step in the summary
        if result.status is StepStatus.skipped:
            result.message = NOT_REACHED if failed_before and step is not Step.report else ""
        elif result.status is StepStatus.failed and acc is not None:
            result.message = acc.failure
        if acc is not None:
            if acc.first_start and acc.last_end:
                result.duration_s = (acc.last_end - acc.first_start).total_seconds()
            else:
                result.duration_s = acc.duration_s
        if not result.message:
            result.message = messages.get(step, "")
        failed_before = failed_before or result.status is StepStatus.failed
        results.append(result)
    return results


# Steps that only appear in a summary when one of their tasks ran (lifecycle hooks).
HOOK_STEPS = frozenset({Step.pre_update, Step.post_update})


def hook_results(report: Mapping[str, Any]) -> dict[str, Any]:
    """{service: {"pre-update"|"post-update": {command, rc, output_tail}}} of the hooks that ran."""
    hooks = report.get("hooks")
    results: dict[str, Any] = {}
    for service, kinds in (hooks if isinstance(hooks, Mapping) else {}).items():
        if not isinstance(kinds, Mapping):
            continue
        results[str(service)] = {
            str(kind): {
                "command": str(run.get("command") or ""),
                "rc": run.get("rc") if isinstance(run.get("rc"), int) else None,
                "output_tail": _clip(str(run.get("output_tail") or ""), 4000),
            }
            for kind, run in kinds.items()
            if kind in (Step.pre_update.value, Step.post_update.value) and isinstance(run, Mapping)
        }
    return results


def _image_state(value: object) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    return {
        "container_id": value.get("container_id"),
        "image_id": value.get("image_id"),
        "digest": value.get("digest"),
    }


def service_results(report: Mapping[str, Any], targets: Sequence[str]) -> dict[str, Any]:
    """Per target service: image, before/after image ID and digest, updated, health."""
    reported = report.get("services") or {}
    services: dict[str, Any] = {}
    for name in targets:
        entry = reported.get(name) or {}
        before, after = _image_state(entry.get("before")), _image_state(entry.get("after"))
        updated = bool(
            after
            and after.get("image_id")
            and (before is None or before.get("image_id") != after.get("image_id"))
        )
        services[name] = {
            "image": entry.get("image"),
            "before": before,
            "after": after,
            "updated": updated,
            "health": entry.get("health"),
        }
    return services


def migration_result(report: Mapping[str, Any]) -> dict[str, Any]:
    migrations = report.get("migrations") or {}
    rc = migrations.get("rc")
    return {
        "ran": bool(migrations.get("ran")),
        "rc": rc if isinstance(rc, int) else None,
        "output_tail": _clip(str(migrations.get("output_tail") or ""), 4000),
    }


def step_messages(
    request: UpdateRequest, report: Mapping[str, Any], services: Mapping[str, Any]
) -> dict[Step, str]:
    """Short human messages for steps that went well, from the playbook's report."""
    targets = report.get("targets") or list(request.services)
    skipped = report.get("skipped") or {}
    messages = {Step.preflight: "targets: " + (", ".join(targets) or "none")}
    if skipped:
        messages[Step.preflight] += "; skipped: " + ", ".join(
            f"{name} ({reason})" for name, reason in sorted(skipped.items())
        )
    updated = [name for name, service in services.items() if service["updated"]]
    verb = "would recreate" if request.dry_run else "recreated"
    messages[Step.recreate] = f"{verb}: {', '.join(updated)}" if updated else "no image changed"
    restored = [n for n, r in (report.get("rollback") or {}).items() if r]
    if restored:
        messages[Step.rollback] = "rolled back: " + ", ".join(restored)
    if request.revert:
        of = f" from before job {report['revert_of']}" if report.get("revert_of") else ""
        messages[Step.rollback] = (
            f"reverted to the images{of}: {', '.join(restored)}"
            if restored
            else f"nothing to put back: the services already run the images{of}"
        )
    if report.get("rollback_error"):
        messages[Step.rollback] = f"ROLLBACK FAILED: {report['rollback_error']}"
    for step in HOOK_STEPS:
        ran = [
            f"{service}: exit {kinds[step.value]['rc']}"
            for service, kinds in hook_results(report).items()
            if step.value in kinds
        ]
        if ran:
            messages[step] = "; ".join(ran)
    migrations = report.get("migrations") or {}
    if migrations.get("ran"):
        messages[Step.migrations] = f"exit code {migrations.get('rc')}"
    elif not request.run_migrations:
        messages[Step.migrations] = "not requested"
    elif request.dry_run:
        messages[Step.migrations] = "dry run: not run"
    elif migrations.get("skip_reason"):  # a no-op update: nothing recreated, none pending
        messages[Step.migrations] = _clip(str(migrations["skip_reason"]), 200)
    return messages


def ansible_stats(stats_event_data: Mapping[str, Any]) -> dict[str, int]:
    """Totals over hosts of ansible's play recap (ok, changed, failures, ...)."""
    names = {
        "ok": "ok",
        "changed": "changed",
        "failures": "failures",
        "dark": "unreachable",
        "skipped": "skipped",
        "rescued": "rescued",
        "ignored": "ignored",
    }
    totals = dict.fromkeys(names.values(), 0)
    for key, name in names.items():
        per_host = stats_event_data.get(key) or {}
        if isinstance(per_host, Mapping):
            totals[name] = sum(int(v) for v in per_host.values())
    return totals


@dataclass
class RunOutcome:
    """What one playbook run produced, as the runner wrapper collected it."""

    status: UpdateStatus
    events: list[dict[str, Any]] = field(default_factory=list)
    rc: int | None = None
    error: str = ""  # set when the run failed outside any task (syntax error, runner crash)

    @property
    def stats_event(self) -> Mapping[str, Any]:
        for event in reversed(self.events):
            if event.get("event") == "playbook_on_stats":
                data: Mapping[str, Any] = event.get("event_data") or {}
                return data
        return {}

    def host_reports(self, key: str = STATS_KEY) -> dict[str, Mapping[str, Any]]:
        """{inventory host: its report under `key`}: the playbook publishes it per host
        (`set_stats` with `per_host: true`, issue 20), read from the result of each host's
        set_stats task (ansible-runner's stats event carries only the global ones); the last
        one of a host wins. Older playbooks published one global copy: then {"": that}."""
        found: dict[str, Mapping[str, Any]] = {}
        for event in self.events:
            if event.get("event") != "runner_on_ok":
                continue
            data = event.get("event_data") or {}
            res = data.get("res")
            stats = res.get("ansible_stats") if isinstance(res, Mapping) else None
            published = stats.get("data") if isinstance(stats, Mapping) else None
            if isinstance(published, Mapping) and isinstance(published.get(key), Mapping):
                found[str(data.get("host") or "")] = published[key]
        if not found:
            artifact = self.stats_event.get("artifact_data") or {}
            if isinstance(artifact.get(key), Mapping):
                found[""] = artifact[key]
        return found

    def host_report(self, key: str = STATS_KEY) -> Mapping[str, Any]:
        """The report of the run's host (the worker runs one host: the first one published)."""
        reports = self.host_reports(key)
        return next(iter(reports.values()), {})

    @property
    def report(self) -> Mapping[str, Any]:
        return self.host_report(STATS_KEY)


def build_summary(
    *,
    job_id: str,
    request: UpdateRequest,
    outcome: RunOutcome,
    started_at: datetime,
    finished_at: datetime,
) -> Summary:
    """The job's result for one playbook run."""
    report = outcome.report
    targets = list(report.get("targets") or request.services)
    services = service_results(report, targets)
    steps = step_results(accumulate_steps(outcome.events), step_messages(request, report, services))
    pull_changed_by_images(steps, services)
    status = outcome.status
    error: dict[str, str] | None = None
    failed = next((s for s in steps if s.status is StepStatus.failed), None)
    if status is UpdateStatus.successful and failed is not None:
        status = UpdateStatus.failed  # an ignored-then-failed step still fails the update
    if status is not UpdateStatus.successful:
        if failed is not None:
            error = {"step": failed.name, "message": failed.message}
        else:
            running = _step_in_progress(outcome.events)
            default = {
                UpdateStatus.canceled: "the update was canceled",
                UpdateStatus.timeout: "the update ran out of time",
            }.get(status, "the playbook failed")
            error = {"step": running or "playbook", "message": outcome.error or default}
    return Summary(
        job_id=job_id,
        status=status,
        started_at=started_at,
        finished_at=finished_at,
        request=request,
        steps=steps,
        services=services,
        migrations=migration_result(report),
        stats=ansible_stats(outcome.stats_event),
        error=error,
        compose_project=report.get("compose_project"),
        rolled_back=bool(report.get("rolled_back")),
        rollback=dict(report.get("rollback") or {}),
        rollback_error=report.get("rollback_error") or None,
        backup=backup_result(report),
        database=dict(report["database"]) if isinstance(report.get("database"), Mapping) else None,
        hooks=hook_results(report),
    )


def pull_changed_by_images(steps: Sequence[StepResult], services: Mapping[str, Any]) -> None:
    """The pull step's status from what it brought, not from community.docker's `changed`
    flag, which compose's output does not always set: `changed` when a target now runs an
    image it did not run before, `ok` when none does (a pull that failed stays failed)."""
    for step in steps:
        if step.name == Step.pull.value and step.status in (StepStatus.ok, StepStatus.changed):
            updated = any(service.get("updated") for service in services.values())
            step.status = StepStatus.changed if updated else StepStatus.ok


def backup_result(report: Mapping[str, Any]) -> dict[str, Any] | None:
    backup = report.get("backup")
    if not isinstance(backup, Mapping) or not backup.get("ran"):
        return None
    return {
        "ran": True,
        "path": backup.get("path"),
        "size_bytes": backup.get("size_bytes"),
        "rc": backup.get("rc"),
    }


def _step_in_progress(events: Sequence[Mapping[str, Any]]) -> str | None:
    """The step of the last task that started, for errors that stop a run mid-task."""
    for event in reversed(events):
        if event.get("event") == "playbook_on_task_start":
            step = step_of_task(str((event.get("event_data") or {}).get("task", "")))
            if step is not None:
                return step.value
    return None
