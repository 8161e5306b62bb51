"""Turn what the playbook did (ansible-runner events and its `set_stats` report) into the job's
summary. Pure functions only, so every branch has a fast unit test.

The summary's shape is documented in `docs/result.schema.json`; tests validate every summary
they see against it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..shared.cutoff import CutOffRollback, add_rollback, with_rollback
from ..shared.request import UpdateRequest
from ..shared.result import (
    NOT_REACHED,
    HostStatus,
    Step,
    StepResult,
    StepStatus,
    Summary,
    UpdateStatus,
    rejected_summary,
    worst_status,
)
from .steps import HOOK_STEPS, StepTracker, clip, did_bookkeeping, failure_message, step_of_task

# The result's types live on the shared side (worker/shared/result.py): the API reads them.
__all__ = [
    "HOOK_STEPS",
    "NOT_REACHED",
    "RunOutcome",
    "Step",
    "StepResult",
    "StepStatus",
    "Summary",
    "UpdateStatus",
    "build_summary",
    "did_bookkeeping",
    "failure_message",
    "rejected_summary",
    "step_of_task",
]

STATS_KEY = "update_executor"
ROLLBACK_STATS_KEY = "update_executor_rollback"
# Tasks of playbooks/update.yml the fleet part of the summary reads (issue 24, docs/internals.md).
FLEET_BATCH_TASK = "Fleet | Record the hosts of this batch"
UPDATE_REPORT_TASK = "Report | Publish the update summary for the worker"
FLEET_ROLLBACK_REPORT_TASK = "Report | Publish the rollback summary for the worker"
RESULT_EVENTS = frozenset({"runner_on_ok", "runner_on_failed", "runner_on_unreachable"})


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
                "output_tail": clip(str(run.get("output_tail") or ""), 4000),
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
        "output_tail": clip(str(migrations.get("output_tail") or ""), 4000),
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
    registry = report.get("registry")
    if isinstance(registry, Mapping) and registry.get("nothing_new") is True:
        # update_start asked the registry before the login (issue 20): no login, no pull.
        found = registry.get("services")
        digests = ", ".join(
            f"{name} {str(entry.get('local_digest') or '')[:19]}"
            for name, entry in (found.items() if isinstance(found, Mapping) else [])
            if isinstance(entry, Mapping)
        )
        messages[Step.login] = "not needed: nothing new in the registry"
        messages[Step.pull] = clip(f"nothing new in the registry ({digests})", 200)
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
        messages[Step.migrations] = clip(str(migrations["skip_reason"]), 200)
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


def fleet_batches(events: Sequence[Mapping[str, Any]]) -> tuple[list[list[str]], list[str]]:
    """The batches of the run, in order, and every host of the play (in inventory order), from
    the facts `Fleet | Record the hosts of this batch` set on each host of a batch that started."""
    batches: list[list[str]] = []
    hosts: list[str] = []
    for event in events:
        data = event.get("event_data") or {}
        if event.get("event") != "runner_on_ok" or data.get("task") != FLEET_BATCH_TASK:
            continue
        res = data.get("res")
        facts = res.get("ansible_facts") if isinstance(res, Mapping) else None
        fleet = facts.get("_update_fleet") if isinstance(facts, Mapping) else None
        if not isinstance(fleet, Mapping):
            continue
        batch = [str(host) for host in fleet.get("batch") or []]
        if batch and batch not in batches:
            batches.append(batch)
        for host in [*(fleet.get("play_hosts") or []), *batch]:
            if str(host) not in hosts:
                hosts.append(str(host))
    return batches, hosts


def _published(
    events: Sequence[Mapping[str, Any]], task: str, key: str
) -> dict[str, Mapping[str, Any]]:
    """{host: the first report published under `key` by the task named `task`}."""
    found: dict[str, Mapping[str, Any]] = {}
    for event in events:
        data = event.get("event_data") or {}
        if event.get("event") != "runner_on_ok" or data.get("task") != task:
            continue
        res = data.get("res")
        stats = res.get("ansible_stats") if isinstance(res, Mapping) else None
        published = stats.get("data") if isinstance(stats, Mapping) else None
        if isinstance(published, Mapping) and isinstance(published.get(key), Mapping):
            found.setdefault(str(data.get("host") or ""), published[key])
    return found


def _hosts_with_results(events: Sequence[Mapping[str, Any]]) -> list[str]:
    """The hosts with a task result, in the order they came: in a plain run, a host that was
    unreachable (or failed before its report) has no report."""
    hosts: list[str] = []
    for event in events:
        host = str((event.get("event_data") or {}).get("host") or "")
        if str(event.get("event")) in RESULT_EVENTS and host and host not in hosts:
            hosts.append(host)
    return hosts


def host_error(events: Sequence[Mapping[str, Any]], host: str) -> dict[str, str] | None:
    """The host's error as the top-level one is built (its first failed step and that step's
    first failure), from its own events; a failure outside any step (the fleet play's) is
    step `playbook`; an unreachable host, step `connection`."""
    tracker = StepTracker()
    first_other: dict[str, str] | None = None
    for event in events:
        data = event.get("event_data") or {}
        if str(data.get("host") or "") != host:
            continue
        kind = event.get("event")
        if kind == "runner_on_unreachable" and first_other is None:
            res = data.get("res") or {}
            first_other = {"step": "connection", "message": failure_message(res, "unreachable")}
        elif (
            kind == "runner_on_failed"
            and not data.get("ignore_errors")
            and step_of_task(str(data.get("task") or "")) is None
            and first_other is None
        ):
            res = data.get("res") or {}
            first_other = {
                "step": "playbook",
                "message": failure_message(res, str(data.get("task") or "")),
            }
        tracker.feed(event, datetime.now().astimezone())
    failed = tracker.first_failed()
    if failed is not None:
        return {"step": failed.step.value, "message": failed.stream_message}
    return first_other


def host_results(
    outcome: RunOutcome, request: UpdateRequest
) -> tuple[dict[str, Any], list[list[str]]]:
    """Per inventory host: how its update ended (issue 24), and the batches in order. A host
    that never started (its batch came after a failed one) is `not_started`; one whose update
    and report ran is `failed` when a task of it failed (or it was unreachable), else
    `successful`; one cut off by a cancel or a timeout takes the run's status."""
    events = outcome.events
    batches, hosts = fleet_batches(events)
    reports = _published(events, UPDATE_REPORT_TASK, STATS_KEY)
    reverts = _published(events, FLEET_ROLLBACK_REPORT_TASK, ROLLBACK_STATS_KEY)
    for name in outcome.host_reports():
        if name and name not in reports:  # a global or older copy
            reports[name] = outcome.host_reports()[name]
    for name in [*reports, *_hosts_with_results(events)]:
        if name and name not in hosts:
            hosts.append(name)
    if not batches and hosts:  # a plain run (no fleet play): every host in one batch
        hosts.sort()  # the order results came in is the forks', not the inventory's
        batches = [list(hosts)]
    results: dict[str, Any] = {}
    for name in hosts:
        batch = next((i for i, b in enumerate(batches) if name in b), None)
        report = reports.get(name) or {}
        error = host_error(events, name)
        if batch is None and not report and error is None:
            status = HostStatus.not_started
        elif error is not None:
            status = HostStatus.failed
        elif report:
            status = HostStatus.successful
        else:  # started, cut off before its report (a cancel, a timeout, a crash)
            status = HostStatus(
                outcome.status.value
                if outcome.status is not UpdateStatus.successful
                else UpdateStatus.failed.value
            )
            error = {"step": "playbook", "message": outcome.error or "the update was cut off"}
        targets = list(report.get("targets") or request.services)
        revert = reverts.get(name)
        results[name] = {
            "status": status.value,
            "batch": batch,
            "compose_project": report.get("compose_project"),
            "services": service_results(report, targets) if report else {},
            "migrations": migration_result(report),
            "error": error,
            "rolled_back": bool(report.get("rolled_back")),
            "rollback": dict(report.get("rollback") or {}),
            "rollback_error": report.get("rollback_error") or None,
            "database": dict(report["database"])
            if isinstance(report.get("database"), Mapping)
            else None,
            "reverted": None
            if revert is None
            else {
                "rolled_back": bool(revert.get("rolled_back")),
                "rollback": dict(revert.get("rollback") or {}),
                "rollback_error": revert.get("rollback_error") or None,
            },
        }
    return results, batches


def build_summary(
    *,
    job_id: str,
    request: UpdateRequest,
    outcome: RunOutcome,
    started_at: datetime,
    finished_at: datetime,
    steps: StepTracker | None = None,
    cut_off: CutOffRollback | None = None,
    notes: Mapping[Step, str] | None = None,
) -> Summary:
    """The job's result for one playbook run. `steps`: the tracker the progress reporter fed
    the run's events as they came (else one is fed `outcome.events` here); the summary's steps
    are read from it, and the verdicts settled here (the pull's status from the images, the
    step a cancel or timeout cut off) go into it, for the progress stream's last entries.
    `cut_off`: the worker's own rollback of a run cut off mid-way; `notes`: messages for steps
    that have none (e.g. a backup asked for with no BACKUP_COMMAND)."""
    tracker = steps if steps is not None else StepTracker.over(outcome.events, finished_at)
    report = outcome.report
    targets = list(report.get("targets") or request.services)
    services = service_results(report, targets)
    tracker.settle_pull(any(service.get("updated") for service in services.values()))
    status = outcome.status
    failed = tracker.first_failed()
    if status is UpdateStatus.successful and failed is not None:
        status = UpdateStatus.failed  # an ignored-then-failed step still fails the update
    error: dict[str, str] | None = None
    if status is not UpdateStatus.successful:
        if failed is not None:
            error = {"step": failed.step.value, "message": failed.stream_message}
        else:  # stopped mid-task (a cancel, a timeout, a crash of the run): the running step
            running = tracker.last_task_step
            default = {
                UpdateStatus.canceled: "the update was canceled",
                UpdateStatus.timeout: "the update ran out of time",
            }.get(status, "the playbook failed")
            error = {
                "step": running.value if running else "playbook",
                "message": outcome.error or default,
            }
        if cut_off is not None:
            error["message"] = with_rollback(error["message"], cut_off)
        if failed is None:
            tracker.cut_off(error["step"], error["message"])  # it fails, with the error
    messages = {**(notes or {}), **step_messages(request, report, services)}
    hosts, batches = host_results(outcome, request)
    if len(hosts) > 1:  # a fleet: the worst host decides; the error names the first failed host
        status = worst_status(status, (entry["status"] for entry in hosts.values()))
        first_failed = next(
            (
                (name, entry["error"])
                for batch in batches
                for name in batch
                if (entry := hosts.get(name)) and entry["error"]
            ),
            None,
        )
        if first_failed is not None:
            name, host_err = first_failed
            error = {"step": host_err["step"], "message": f"{name}: {host_err['message']}"}
    summary = Summary(
        job_id=job_id,
        status=status,
        started_at=started_at,
        finished_at=finished_at,
        request=request,
        steps=tracker.results(messages),
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
        hosts=hosts,
        batches=batches,
    )
    if cut_off is not None:
        add_rollback(summary, cut_off)
    return summary


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
