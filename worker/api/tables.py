"""The CLI's tables: `update-executor check` and `update-executor history`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..shared.check import status_text
from ..shared.untrusted import escaped

# Exit status of `update-executor check`: 0 all up to date, 1 an error (for any service, or
# the check did not run), 10 an update is available (and no error); 2 is a bad request.
EXIT_UP_TO_DATE = 0
EXIT_ERROR = 1
EXIT_UPDATE_AVAILABLE = 10


def short_digest(digest: str | None) -> str:
    """`sha256:0123456789ab` (12 hex digits, like docker's short IDs), `-` when unknown."""
    if not digest:
        return "-"
    algorithm, _, value = digest.partition(":")
    return f"{algorithm}:{value[:12]}" if value else digest[:19]


def check_exit_status(result: Mapping[str, Any]) -> int:
    services = result.get("services") or {}
    if result.get("error") or any(s.get("error") for s in services.values()):
        return EXIT_ERROR
    return EXIT_UPDATE_AVAILABLE if result.get("update_available") else EXIT_UP_TO_DATE


def format_check_table(result: Mapping[str, Any]) -> str:
    """The check as a table: service, running digest, available digest, status."""
    if result.get("error"):
        return f"the check did not run: {result['error']}"
    rows = [("SERVICE", "RUNNING", "AVAILABLE", "STATUS")]
    for name, check in (result.get("services") or {}).items():
        rows.append(
            (
                name,
                short_digest(check.get("local_digest")),
                short_digest(check.get("remote_digest")),
                status_text(check),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True))
        + "  "
        + row[3]
        for row in rows
    ]
    lines.append(f"checked at {result.get('checked_at')} (job {result.get('job_id')})")
    return "\n".join(lines)


def format_history_table(records: Sequence[Mapping[str, Any]]) -> str:
    """`update-executor history`: one line per record, oldest first."""
    if not records:
        return "no history yet"
    rows = [("FINISHED", "KIND", "OUTCOME", "BY", "SERVICES", "JOB", "ERROR")]
    for entry in records:
        services = entry.get("services") or {}
        changed = [
            name
            for name, svc in services.items()
            if isinstance(svc, Mapping) and (svc.get("updated") or svc.get("update_available"))
        ]
        error = entry.get("error") or {}
        rows.append(
            (
                str(entry.get("finished_at") or "-")[:19].replace("T", " "),
                str(entry.get("kind") or "-"),
                str(entry.get("outcome") or entry.get("status") or "-"),
                str(entry.get("requested_by") or "-"),
                ",".join(changed) or "-",
                str(entry.get("job_id") or "-"),
                # the message may carry container output: one line, no escape sequences
                escaped(f"{error.get('step')}: {error.get('message')}" if error else "")[:80],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    ).rstrip()


def _image(state: Mapping[str, Any] | None) -> str:
    state = state or {}
    return short_digest(state.get("digest") or state.get("image_id"))


def summary_hosts(summary: object) -> dict[str, dict[str, Any]]:
    """The per-host outcome of a fleet update (the summary's `hosts`, issue 24), read
    defensively: {host: {status, rolled_back, error}} in the summary's order; {} for a summary
    without per-host detail (one host, a refused job, an older worker)."""
    hosts = summary.get("hosts") if isinstance(summary, Mapping) else None
    if not isinstance(hosts, Mapping):
        return {}
    found: dict[str, dict[str, Any]] = {}
    for name, entry in hosts.items():
        if not isinstance(name, str) or not isinstance(entry, Mapping):
            continue
        error = entry.get("error")
        if isinstance(error, Mapping):
            error = f"{error.get('step')}: {error.get('message')}"
        found[name] = {
            "status": str(entry.get("status") or "unknown"),
            "rolled_back": entry.get("rolled_back") is True,
            "error": escaped(str(error))[:300] if error else None,
        }
    return found


def host_status_fields(answer: Mapping[str, Any]) -> dict[str, Any]:
    """`hosts` for /status and `update-executor status --json`: the per-host outcome of the
    job's summary, when it has one (else nothing: the answer keeps its shape)."""
    hosts = summary_hosts(answer.get("summary"))
    return {"hosts": hosts} if hosts else {}


def format_hosts(summary: Mapping[str, Any]) -> list[str]:
    """One line per host of a fleet update: `  host web2: failed, rolled back: recreate: ...`."""
    hosts = summary_hosts(summary)
    width = max((len(name) for name in hosts), default=0)
    lines = []
    for name, entry in hosts.items():
        back = ", rolled back" if entry["rolled_back"] else ""
        error = f": {entry['error']}" if entry["error"] else ""
        lines.append(f"  host {name.ljust(width)}  {entry['status']}{back}{error}")
    return lines


def format_summary(summary: Mapping[str, Any]) -> str:
    """An update's summary for a person at a terminal: the outcome, one line per service, the
    migration, the error and what the rollback did (`--json` prints the whole summary)."""
    request = summary.get("request") or {}
    who = f" (requested by {request['requested_by']})" if request.get("requested_by") else ""
    duration = summary.get("duration_s")
    took = f" in {duration:.1f} s" if isinstance(duration, int | float) else ""
    dry = " (dry run: nothing changed)" if request.get("dry_run") else ""
    kind = "revert" if request.get("revert") else "update"
    asked = request.get("hosts")
    on = f" on {escaped(','.join(map(str, asked)))}" if isinstance(asked, list) and asked else ""
    lines = [f"{kind} {summary.get('job_id')}{on}: {summary.get('status')}{took}{dry}{who}"]
    lines.extend(format_hosts(summary))
    services = summary.get("services") or {}
    width = max((len(str(name)) for name in services), default=0)
    for name, service in services.items():
        if not isinstance(service, Mapping):
            continue
        if service.get("updated"):
            change = f"{_image(service.get('before'))} -> {_image(service.get('after'))}"
        else:
            change = f"unchanged ({_image(service.get('after') or service.get('before'))})"
        health = f"  {service['health']}" if service.get("health") else ""
        lines.append(f"  {str(name).ljust(width)}  {change}{health}")
    migrations = summary.get("migrations") or {}
    if migrations.get("ran"):
        lines.append(f"  migrations: exit status {migrations.get('rc')}")
    error = summary.get("error")
    if isinstance(error, Mapping):
        lines.append(f"failed in {error.get('step')}: {error.get('message')}")
    restored = [name for name, entry in (summary.get("rollback") or {}).items() if entry]
    if summary.get("rollback_error"):
        lines.append(f"THE ROLLBACK FAILED: {summary['rollback_error']}")
    elif summary.get("rolled_back"):
        lines.append(f"rolled back: {', '.join(restored) or 'nothing had changed'}")
    return "\n".join(lines)
