"""The worker's configuration as its systemd unit sees it, for `update-executor --env-file`.

`parse_env_file` reads systemd's `EnvironmentFile=` format as systemd does (comments, quotes,
backslash escapes and continuations) and never runs anything: sourcing the file in a shell
would run `MIGRATION_COMMAND=sh -c "…"` as a command. `unit_credentials` reads a unit's
`LoadCredential=name:path` lines, so the CLI finds the job secret where the unit does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
CREDENTIAL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}")
# Credentials the API side's settings read, and the variable that names each one's file.
CLIENT_CREDENTIALS = {
    "job_secret": "UPDATE_JOB_SECRET_FILE",
    "redis_password": "REDIS_QUEUE_PASSWORD_FILE",
}
_ESCAPED_IN_DOUBLE_QUOTES = '"\\`$'
QUOTES = ("'", '"')


class EnvFileError(ValueError):
    """The file is not in systemd's EnvironmentFile format."""


def _value(text: str, start: int) -> tuple[str, int]:
    """The value that starts at `start` (after `=`), and the index after its line: systemd's
    states (env-file.c): before a value whitespace is skipped and a quote opens a quoted part;
    after a closing quote that state comes back (`"a" "b"` is `ab`)."""
    out: list[str] = []
    i, n = start, len(text)
    state = "pre"  # pre | plain | ' | "
    trailing = 0  # unquoted whitespace at the end, which systemd drops
    while i < n:
        char = text[i]
        if state in QUOTES and char == state:
            state = "pre"
        elif state == "'":
            out.append(char)
        elif state == '"' and char == "\\" and i + 1 < n:
            i += 1
            if text[i] != "\n":  # an escaped newline continues the line
                if text[i] not in _ESCAPED_IN_DOUBLE_QUOTES:
                    out.append("\\")
                out.append(text[i])
        elif state == '"':
            out.append(char)
        elif char == "\n":
            break
        elif char == "\\" and i + 1 < n:
            i += 1
            if text[i] != "\n":
                out.append(text[i])
            state, trailing = "plain", 0
        elif state == "pre" and char in " \t":
            pass
        elif state == "pre" and char in QUOTES:
            state = char
        else:
            out.append(char)
            state = "plain"
            trailing = trailing + 1 if char in " \t" else 0
        i += 1
    if state in QUOTES:
        raise EnvFileError("a quoted value is not closed")
    value = "".join(out)
    return (value[: len(value) - trailing] if trailing else value), i + 1


def parse_env_file(text: str) -> dict[str, str]:
    """KEY=VALUE pairs of an EnvironmentFile; later lines win, as in systemd."""
    values: dict[str, str] = {}
    i, n, line_no = 0, len(text), 1
    while i < n:
        end = text.find("\n", i)
        line = text[i : n if end < 0 else end]
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            i = n if end < 0 else end + 1
            line_no += 1
            continue
        key, sep, _ = stripped.partition("=")
        key = key.strip()
        if not sep or VARIABLE_NAME.fullmatch(key) is None:
            raise EnvFileError(f"line {line_no}: expected NAME=value, got {stripped[:40]!r}")
        start = i + line.index("=") + 1
        try:
            values[key], i = _value(text, start)
        except EnvFileError as exc:
            raise EnvFileError(f"line {line_no}: {exc}") from None
        line_no += text.count("\n", start, i)
    return values


def unit_credentials(unit_text: str) -> dict[str, str]:
    """{credential name: path} from a unit's `LoadCredential=name:path` lines."""
    found: dict[str, str] = {}
    for raw in unit_text.splitlines():
        key, sep, value = raw.strip().partition("=")
        if not sep or key.strip() != "LoadCredential":
            continue
        name, colon, path = value.strip().partition(":")
        if colon and CREDENTIAL_NAME.fullmatch(name) and path.startswith("/"):
            found[name] = path
    return found


def client_environment(
    environ: dict[str, str], env_file: dict[str, str], credentials: dict[str, str]
) -> dict[str, str]:
    """The environment the CLI reads its settings from: the shell's, the env file's values over
    it (as the unit sees them), and each credential the unit loads for a secret that neither
    names (`UPDATE_JOB_SECRET_FILE` for `job_secret`, …)."""
    merged = {**environ, **env_file}
    for credential, variable in CLIENT_CREDENTIALS.items():
        plain = variable.removesuffix("_FILE")
        if credential in credentials and not merged.get(variable) and not merged.get(plain):
            merged[variable] = credentials[credential]
    return merged


def command_environment(
    environ: Mapping[str, str], env_file: Path | None, unit: Path
) -> dict[str, str]:
    """What the CLI's settings are read from: the shell's environment, or with an env file what
    the unit sees (the file's values, and the secrets of the unit's LoadCredential= lines).
    Raises OSError for an unreadable file, EnvFileError for one not in the format."""
    if env_file is None:
        return dict(environ)
    values = parse_env_file(env_file.read_text())
    credentials = unit_credentials(unit.read_text()) if unit.is_file() else {}
    return client_environment(dict(environ), values, credentials)
