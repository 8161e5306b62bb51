"""Notifications through Apprise: one plain-text message per update (NOTIFY_URLS, NOTIFY_ON).

The message is built from the summary only (`build_message`, pure), which holds no secret;
the Apprise URLs do (tokens), so they stay in a `Secret` and are never logged. Sending runs
in a daemon thread bounded by NOTIFY_TIMEOUT: a slow or dead receiver delays the job's
result by that much at most and never changes the update's outcome. The summary records
`notification`: sent, failed, or off (not configured, or not wanted for this outcome).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..shared.outcome import Outcome, is_failure, outcome_of
from .settings import Settings

logger = logging.getLogger("update_executor.notify")

TITLES = {
    Outcome.successful: "Update successful",
    Outcome.failed: "Update FAILED",
    Outcome.rolled_back: "Update FAILED and rolled back",
    Outcome.canceled: "Update canceled",
    Outcome.timeout: "Update timed out",
    Outcome.refused: "Update refused",
}
MAX_BODY = 4000
MAX_STEP_MESSAGE = 600


class NotificationStatus(StrEnum):
    sent = "sent"
    failed = "failed"
    off = "off"
    # A job refused for its signature or format: reported with the others of its interval in
    # one message (worker/host/refusals.py), not on its own.
    batched = "batched"


@dataclass(frozen=True)
class Message:
    title: str
    body: str


def split_urls(raw: str) -> list[str]:
    """NOTIFY_URLS: Apprise URLs separated by commas, spaces or newlines (a file may have one
    per line; lines starting with # are comments)."""
    lines = (line for line in raw.splitlines() if not line.lstrip().startswith("#"))
    return [url for url in re.split(r"[\s,]+", " ".join(lines)) if url]


def wanted(settings: Settings, outcome: Outcome) -> bool:
    return bool(settings.notify_urls) and (settings.notify_on == "always" or is_failure(outcome))


def short_digest(value: object) -> str:
    """sha256:0123456789abcdef… -> sha256:0123456789ab; None -> '?'."""
    if not isinstance(value, str) or not value:
        return "?"
    algorithm, sep, digest = value.partition(":")
    return f"{algorithm}:{digest[:12]}" if sep else value[:12]


def _image(state: object) -> str:
    if not isinstance(state, Mapping):
        return "none"
    return short_digest(state.get("digest") or state.get("image_id"))


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def service_lines(summary: Mapping[str, Any]) -> list[str]:
    lines = []
    services = summary.get("services")
    for name, entry in (services if isinstance(services, Mapping) else {}).items():
        if not isinstance(entry, Mapping):
            continue
        before, after = _image(entry.get("before")), _image(entry.get("after"))
        change = f"{before} -> {after}" if entry.get("updated") else f"{before} (unchanged)"
        health = f", {entry['health']}" if entry.get("health") else ""
        restored = (summary.get("rollback") or {}).get(name) if summary.get("rolled_back") else None
        back = f"; rolled back to {before}" if isinstance(restored, Mapping) else ""
        lines.append(f"  {name}: {change}{health}{back}")
    return lines


def build_message(summary: Mapping[str, Any], project: str) -> Message:
    """The message for one update: reads well in a chat and in a mail (plain text)."""
    outcome = outcome_of(summary)
    request = summary.get("request") if isinstance(summary.get("request"), Mapping) else None
    dry_run = " (dry run)" if request and request.get("dry_run") else ""
    title = f"{TITLES[outcome]}{dry_run}: {project}"
    lines = [
        f"Outcome: {outcome.value.replace('_', ' ')}",
        f"Project: {project}",
        f"Job: {summary.get('job_id')}",
        f"Requested by: {(request or {}).get('requested_by') or 'unknown'}",
    ]
    services = service_lines(summary)
    if services:
        lines += ["Services:", *services]
    elif request and request.get("services"):
        lines.append("Services: " + ", ".join(map(str, request["services"])))
    error = summary.get("error")
    if isinstance(error, Mapping):
        message = _clip(str(error.get("message") or ""), MAX_STEP_MESSAGE)
        lines.append(f"Failed step: {error.get('step')}: {message}")
    if outcome is not Outcome.refused and outcome is not Outcome.successful:
        restored = ", ".join(sorted(summary.get("rollback") or {})) or "nothing to restore"
        lines.append(
            f"Rolled back: yes ({restored})" if summary.get("rolled_back") else "Rolled back: no"
        )
        if summary.get("rollback_error"):
            lines.append(f"ROLLBACK FAILED: {_clip(str(summary['rollback_error']), 300)}")
        lines += database_lines(summary.get("database"))
    duration = summary.get("duration_s")
    if isinstance(duration, int | float):
        lines.append(f"Duration: {duration:.1f} s")
    return Message(title, _clip("\n".join(lines), MAX_BODY))


def database_lines(database: object) -> list[str]:
    """Whether a rollback put the database back (issue 23); nothing when it was not touched."""
    if not isinstance(database, Mapping) or database.get("action") in (None, "none"):
        return []
    action, before = database.get("action"), database.get("revision_before")
    if action == "failed":
        return [f"Database: NOT PUT BACK (at {database.get('revision_after')}, was {before})"]
    line = f"Database: put back at revision {before} ({action})"
    if action == "restored":
        line += f": {_clip(str(database.get('message') or ''), 300)}"
    return [line]


def _send_with_apprise(urls: list[str], message: Message) -> bool:
    import apprise  # noqa: PLC0415 (only a worker that notifies loads it)

    notifier = apprise.Apprise()
    for url in urls:
        if not notifier.add(url):
            # Never the URL itself: it holds the receiver's token.
            logger.error("notification: one of NOTIFY_URLS is not a valid Apprise URL")
    if not len(notifier):
        return False
    return bool(
        notifier.notify(
            title=message.title, body=message.body, body_format=apprise.NotifyFormat.TEXT
        )
    )


async def in_thread(call: Callable[[], bool], timeout: float, name: str) -> bool:
    """`call()` in a daemon thread; its answer, or TimeoutError after `timeout` seconds (the
    thread is left to finish on its own: a daemon thread never holds up the worker's exit)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bool] = loop.create_future()

    def settle(result: bool | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(bool(result))

    def run() -> None:
        result: bool | None = None
        error: BaseException | None = None
        try:
            result = call()
        except Exception as exc:
            error = exc
        # After a timeout the loop may be gone (the worker stopped): nobody waits any more.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name=name, daemon=True).start()
    return await asyncio.wait_for(future, timeout)


async def notify(
    settings: Settings,
    summary: Mapping[str, Any],
    project: str,
    send: Callable[[list[str], Message], bool] = _send_with_apprise,
) -> NotificationStatus:
    """Send the update's message when NOTIFY_ON wants it; never raises."""
    if not wanted(settings, outcome_of(summary)):
        return NotificationStatus.off
    job_id = summary.get("job_id")
    try:
        message = build_message(summary, project)
    except Exception as exc:
        logger.error("job %s: notification failed: %s", job_id, type(exc).__name__)
        return NotificationStatus.failed
    return await send_message(settings, message, f"job {job_id}", send)


async def send_message(
    settings: Settings,
    message: Message,
    label: str,
    send: Callable[[list[str], Message], bool] = _send_with_apprise,
) -> NotificationStatus:
    """Send `message` to NOTIFY_URLS within NOTIFY_TIMEOUT; `label` names it in log lines
    ("job <id>"). Never raises."""
    try:
        urls = split_urls(settings.notify_urls.reveal())
        ok = await in_thread(
            lambda: send(urls, message), settings.notify_timeout, f"notify-{label}"
        )
    except TimeoutError:
        logger.error(
            "%s: notification not sent within %.0f s (NOTIFY_TIMEOUT)",
            label,
            settings.notify_timeout,
        )
        return NotificationStatus.failed
    except Exception as exc:
        logger.error("%s: notification failed: %s", label, type(exc).__name__)
        return NotificationStatus.failed
    if not ok:
        logger.error("%s: notification failed (see Apprise's log lines above)", label)
        return NotificationStatus.failed
    logger.info("%s: notification sent", label)
    return NotificationStatus.sent
