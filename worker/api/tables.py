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


def format_summary(summary: Mapping[str, Any]) -> str:
    """An update's summary for a person at a terminal: the outcome, one line per service, the
    migration, the error and what the rollback did (`--json` prints the whole summary)."""
    request = summary.get("request") or {}
    who = f" (requested by {request['requested_by']})" if request.get("requested_by") else ""
    duration = summary.get("duration_s")
    took = f" in {duration:.1f} s" if isinstance(duration, int | float) else ""
    dry = " (dry run: nothing changed)" if request.get("dry_run") else ""
    kind = "revert" if request.get("revert") else "update"
    lines = [f"{kind} {summary.get('job_id')}: {summary.get('status')}{took}{dry}{who}"]
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
