"""Strings that come from Redis or from a job: the grammar a job id must match, the form free
text is handed to Ansible in, and how such strings are shown in log lines.

Ansible templates extra-vars: a job id or a name with `{{ lookup('pipe', ...) }}` in it would
run a command on the host. So every string from outside either matches a grammar that has no
template syntax (job ids, service names), or goes to the playbook marked unsafe (free text),
which Ansible never templates (docs/internals.md, "What may be templated").
"""

from __future__ import annotations

import re
from typing import Any

# A job id: what the client generates (uuid4 hex) and what ARQ, Redis keys, ansible-runner's
# ident (a path component) and the playbook's variables can all carry as is.
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
# Longest attacker-supplied text put in one log line.
MAX_LOGGED = 80


class InvalidJobId(ValueError):
    """A job id that does not match JOB_ID; `shown` is a log-safe rendering of it."""

    def __init__(self, value: object) -> None:
        self.shown = loggable(value)
        super().__init__(f"invalid job id {self.shown}")


def is_job_id(value: object) -> bool:
    return isinstance(value, str) and JOB_ID.fullmatch(value) is not None


def job_id_from(value: object) -> str:
    """A job id read from Redis (bytes or str) if it matches the grammar; else InvalidJobId."""
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("ascii")
        except UnicodeDecodeError:
            raise InvalidJobId(value) from None
    if not is_job_id(value):
        raise InvalidJobId(value)
    assert isinstance(value, str)
    return value


def check_job_id(value: str) -> str:
    """`value` if it is a job id; else InvalidJobId (a ValueError)."""
    if not is_job_id(value):
        raise InvalidJobId(value)
    return value


def loggable(value: object, limit: int = MAX_LOGGED) -> str:
    """`value` for a log line: one line (repr-escaped: no raw newline or control character),
    at most about `limit` characters, with how much was cut."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "backslashreplace")
    text = value if isinstance(value, str) else str(value)
    if is_job_id(text):
        return text
    cut = len(text) - limit
    shown = repr(text[:limit]) if cut > 0 else repr(text)
    return f"{shown}...(+{cut} chars)" if cut > 0 else shown


def escaped(value: object, limit: int | None = None) -> str:
    """`value` for display on one line (a log line, a table cell): control characters (newlines,
    ANSI escapes, NUL, C1, U+2028/9) written as Python escapes (`\\n`, `\\x1b`), the rest as
    is; cut to its last `limit` characters (the end of an output says most). For text the
    worker does not choose: a migration's or a hook's output, a step message."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "backslashreplace")
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = "…" + text[-(limit - 1) :]
    if not has_control_chars(text):
        return text
    return "".join(repr(c)[1:-1] if has_control_chars(c) else c for c in text)


def has_control_chars(text: str) -> bool:
    """Control characters (newlines, NUL, escape, C1...) that free text must not carry."""
    return any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or c in "\u2028\u2029" for c in text)


def ansible_unsafe(value: str) -> dict[str, Any]:
    """`value` as an extra-var Ansible will not template: ansible-runner passes extra-vars as
    JSON (`-e {...}`), and Ansible's JSON reader turns this form into an unsafe string."""
    return {"__ansible_unsafe": value}
