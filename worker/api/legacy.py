"""The shapes the application's UI reads: the fields of its original "check for updates" and
"update" endpoints, computed from a check result or a status answer. Pure functions, no
FastAPI: the router adds them to its answers (worker/api/routes.py), so the original page
works unchanged (docs/api.md, "The original application's UI").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from ..shared.client import JobState

# How rollback_error and the `/status` error start when a rollback left the database as the
# failed update left it (issue 23, tasks/database_rollback.yml).
NOT_PUT_BACK = "THE DATABASE WAS NOT PUT BACK"

# The application's UI names two groups of services: those of its backend image (api, worker)
# and those of its frontend image. By default a service whose image's name ends in "frontend"
# (or "-web", "-ui") is the frontend, every other one the backend.
FRONTEND_NAME = re.compile(r"(^|[/_.-])(frontend|web|ui)\Z")


def image_repository(image: str) -> str:
    """`ghcr.io/org/app-frontend:latest` -> `ghcr.io/org/app-frontend` (no tag, no digest)."""
    name = image.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def service_group(image: str | None, frontend_images: Iterable[str] | None = None) -> str:
    """ "frontend" or "backend" for a service's image: `frontend_images` (repositories, with or
    without the registry and tag) when given, else the image's name."""
    repository = image_repository(image or "")
    if frontend_images is not None:
        wanted = {image_repository(ref) for ref in frontend_images}
        return (
            "frontend"
            if any(repository == ref or repository.endswith("/" + ref) for ref in wanted)
            else "backend"
        )
    return "frontend" if FRONTEND_NAME.search(repository) else "backend"


def legacy_check_fields(
    check: Mapping[str, Any], frontend_images: Iterable[str] | None = None
) -> dict[str, Any]:
    """The fields the application's "check for updates" page reads (`has_updates`,
    `backend_update_available`, ..., `message`), from a check result."""
    services: Mapping[str, Any] = check.get("services") or {}
    frontend = None if frontend_images is None else list(frontend_images)
    fields: dict[str, Any] = {"has_updates": bool(check.get("update_available"))}
    news = []
    for group in ("backend", "frontend"):
        members = [
            info
            for _name, info in sorted(services.items())
            if isinstance(info, Mapping) and service_group(info.get("image"), frontend) == group
        ]
        available = any(bool(info.get("update_available")) for info in members)
        if available:
            news.append(group)
        fields[f"{group}_update_available"] = available
        for which in ("current", "remote"):
            key = "local_digest" if which == "current" else "remote_digest"
            digests = [str(info[key]) for info in members if info.get(key)]
            fields[f"{group}_{which}_digest"] = digests[0] if digests else None
    errors = [
        f"{name}: {info.get('error')}"
        for name, info in sorted(services.items())
        if isinstance(info, Mapping) and info.get("error")
    ]
    if check.get("error"):
        message = f"The check could not run: {check['error']}"
    elif check.get("checked_at") is None:
        message = "No check has finished yet; the worker is checking, ask again in a moment."
    elif news:
        message = "Updates available: " + " and ".join(news) + "."
    else:
        message = "The system is up to date."
    if errors and not check.get("error"):
        message += " Not checked: " + "; ".join(errors)
    if check.get("cached") and check.get("checked_at") is not None:
        message += (
            f" (last check, {check['checked_at']}; a new one is still running)"
            if check.get("pending")
            else f" (last check, {check['checked_at']})"
        )
    fields["message"] = message
    return fields


def _step_message(answer: Mapping[str, Any]) -> str:
    """`step 5/8: recreate` while an update runs, from a status answer."""
    current = answer.get("current_step")
    progress = answer.get("progress") or {}
    planned = [
        str(step.get("name"))
        for step in progress.get("steps") or []
        if isinstance(step, Mapping) and step.get("planned")
    ]
    if answer.get("state") == JobState.queued:
        return "queued: waiting for the update worker"
    if current is None:
        return "starting" if not planned or progress.get("done", 0) == 0 else "finishing"
    if current in planned:
        return f"step {planned.index(current) + 1}/{len(planned)}: {current}"
    return f"step {current}"


def legacy_status_fields(answer: Mapping[str, Any] | None) -> dict[str, Any]:
    """The fields the application's update page polls: `status` (idle | updating | completed
    | failed), `message`, `error` (a string or null), from a status answer (None: no update)."""
    if answer is None:
        return {"status": "idle", "message": "No update has been run.", "error": None}
    if answer.get("state") in (JobState.queued, JobState.running):
        return {"status": "updating", "message": _step_message(answer), "error": None}
    summary = answer.get("summary") or {}
    if summary.get("status") == "successful":
        updated = sorted(
            name
            for name, info in (summary.get("services") or {}).items()
            if isinstance(info, Mapping) and info.get("updated")
        )
        message = (
            "Update completed: " + ", ".join(updated) + " updated."
            if updated
            else "Update completed: everything was up to date."
        )
        return {"status": "completed", "message": message, "error": None}
    raw_error = summary.get("error")
    error: Mapping[str, Any] = raw_error if isinstance(raw_error, Mapping) else {}
    step = str(error.get("step") or "the queue")
    text = str(
        error.get("message") or f"The update ended {summary.get('status') or 'without a result'}."
    )
    if summary.get("rolled_back"):
        outcome = "The previous version was restored (rolled back)."
    elif summary.get("rollback_error"):
        outcome = f"THE ROLLBACK FAILED: {summary['rollback_error']}"
    else:
        outcome = "Not rolled back."
    database = database_sentence(summary)
    # Said once: the playbook's failure message (and rollback_error) may say it already.
    key = NOT_PUT_BACK if database.startswith(NOT_PUT_BACK) else database
    if database and key not in f"{text} {outcome}":
        outcome = f"{outcome} {database}"
    return {
        "status": "failed",
        "message": f"Update {summary.get('status') or 'failed'} at {step}.",
        "error": f"{text} {outcome}",
    }


def database_sentence(summary: Mapping[str, Any]) -> str:
    """Whether the rollback put the database back (issue 23), for the `/status` error: the
    sentence the playbook's failure message uses, so that it is not said twice. Empty when the
    update did not touch the database's revision (no migration ran, or nothing to roll back)."""
    database = summary.get("database")
    if not isinstance(database, Mapping):
        return ""
    action, before = database.get("action"), database.get("revision_before")
    if action == "failed":
        return f"{NOT_PUT_BACK}: it is at revision {database.get('revision_after')}, not {before}."
    if action in ("downgraded", "restored", "unchanged"):
        sentence = f"The database was put back at revision {before} ({action})."
        if action == "restored" and database.get("message"):
            sentence += f" {database['message']}"
        return sentence
    migrations = summary.get("migrations")
    ran = isinstance(migrations, Mapping) and migrations.get("ran")
    if database.get("mode") == "off" and ran and summary.get("rolled_back"):
        why = str(database.get("message") or "DB_ROLLBACK is off").rstrip(".")
        return f"The database was not put back ({why}): it is as the update left it."
    return ""


def idle_answer() -> dict[str, Any]:
    """GET /status with no update at all (or the latest expired): `idle`."""
    return {
        "job_id": None,
        "state": None,
        "current_step": None,
        "progress": None,
        "summary": None,
        **legacy_status_fields(None),
    }
