"""One sentence for a failed task of the playbook, as the UI shows it (issue 20).

community.docker's compose modules fail with compose's own text, `General error: container
app-api-1 is unhealthy` followed by compose's JSON progress events when there were any; a
command run with `docker_compose_v2_exec` that exits non-zero fails with `Task failed: Action
failed: Unknown error.`, its exit code and output being elsewhere in the result. `describe`
turns both into a sentence that names the container (or service) and the cause; any other
message is kept as it is. The raw text stays in the task's event (and in the role's report:
`rollback_cause`, `migrations.output_tail`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["describe"]

_COMPOSE_PREFIX = re.compile(r"^(?:General error|Error response from daemon):\s*", re.IGNORECASE)
_UNKNOWN_ERROR = re.compile(r"^(?:Task failed:\s*)?(?:Action failed:\s*)?Unknown error\.?\s*:?\s*")
_UNHEALTHY = re.compile(r"container (\S+) is unhealthy")
_EXITED = re.compile(r"container (\S+) exited \((-?\d+)\)")
_NOT_COMPLETED = re.compile(r"service \"?([^\s\"]+)\"? didn't complete successfully: exit (-?\d+)")
_EVENT_START = re.compile(r":?\s*\{\s*\"")


def _last_line(*texts: str) -> str:
    for text in texts:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return lines[-1][-300:]
    return ""


def _without_events(text: str) -> str:
    """Compose's message without the JSON progress events glued to it (one a line, or inline)."""
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("{"):
            try:
                json.loads(stripped)
                continue
            except ValueError:
                pass
        lines.append(line)
    joined = " ".join(part.strip() for part in lines if part.strip())
    match = _EVENT_START.search(joined)
    return joined[: match.start()].strip() if match else joined


def _compose_sentence(message: str) -> str | None:
    known = (_UNHEALTHY, _EXITED, _NOT_COMPLETED)
    if not _COMPOSE_PREFIX.match(message.strip()) and not any(p.search(message) for p in known):
        return None
    text = _without_events(_COMPOSE_PREFIX.sub("", message.strip()))
    if (found := _UNHEALTHY.search(text)) is not None:
        return (
            f"Container {found.group(1)} is unhealthy: its healthcheck failed after the recreate."
        )
    if (found := _EXITED.search(text)) is not None:
        return (
            f"Container {found.group(1)} exited with code {found.group(2)} right after it started."
        )
    if (found := _NOT_COMPLETED.search(text)) is not None:
        service, code = found.group(1), found.group(2)
        return f"Service {service} did not complete successfully: it exited with code {code}."
    return (text or message.strip()).rstrip(".") + "."


def _command_sentence(task: str, result: Mapping[str, Any]) -> str:
    args = (result.get("invocation") or {}).get("module_args") or {}
    service = str(args.get("service") or "").strip()
    what = "The migration command" if task.startswith("Migrations |") else "The command"
    where = f" in service {service}" if service else ""
    rc = result.get("rc")
    status = f" exited with code {rc}" if isinstance(rc, int) else " failed"
    tail = _last_line(str(result.get("stderr") or ""), str(result.get("stdout") or ""))
    return f"{what}{where}{status}" + (f": {tail}" if tail else ".")


def describe(task: str, result: Mapping[str, Any]) -> str | None:
    """The sentence for a failed task's result, or None when its message says it already."""
    message = str(result.get("msg") or "").strip()
    if _UNKNOWN_ERROR.match(message) and ("rc" in result or "stdout" in result):
        return _command_sentence(task, result)
    if message:
        return _compose_sentence(message)
    return None
