"""The docs name only settings and flags that exist, with the defaults the code has (issue 25).
`make lint` runs this file too.

- Every environment variable of ours named in README.md, docs/*.md or the env file example is
  read somewhere in worker/ (a setting of the models, or a string constant there).
- The configuration table (docs/configuration.md) and the settings models
  (worker/host/settings.py `Settings`, which extends worker/shared/settings.py
  `ClientSettings`) agree both ways: every setting read from the environment (and the `X_FILE`
  of each secret read from a file) has a row, every row is a setting, and each row's default
  is the field's: a literal (`300`, `localhost`, `true`) or `empty`, possibly followed by words
  in parentheses; words alone only for a default the code computes on the host.
- Every `update-executor <command> --flag` in the docs is an option of that command (or a
  global one).
"""

from __future__ import annotations

import argparse
import ast
import functools
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from worker.command import build_parser
from worker.host.settings import Settings
from worker.shared.settings import ClientSettings, Credential, Secret, WhenUnset, marker

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENV_EXAMPLE = ROOT / "deploy" / "update-executor.env.example"
# Our variables (others, such as DOCKER_HOST or POSTGRES_USER, are the deployment's).
OURS = re.compile(
    r"(?:REDIS_QUEUE_|UPDATE_|COMPOSE_(?:FILE_PATH|PROJECT_NAME|ENV_PASSTHROUGH)|REGISTRY_"
    r"|GITHUB_TOKEN|MIGRATION_|HEALTH_TIMEOUT|JOB_TIMEOUT|LOG_FILE|BACKUP_|ROLLBACK_ON"
    r"|STOP_GRACE|WORKER_POLL|NOTIFY_|HISTORY_|METRICS_|HOOK_TIMEOUT|REFUSAL_)[A-Z0-9_]*"
)
# A default the code computes on the host (which file is writable, where the package is).
COMPUTED = object()


def code_sources() -> Iterator[ast.Module]:
    for path in sorted((ROOT / "worker").rglob("*.py")):
        yield ast.parse(path.read_text(), str(path))


def model_settings() -> dict[str, object]:
    """{variable: default} of every setting the models read from the environment; a secret's
    file `X_FILE` (worker/shared/settings.py, SecretFiles) has no default (empty)."""
    found: dict[str, object] = {}
    for field in Settings.model_fields.values():
        variable = field.validation_alias
        if not isinstance(variable, str):
            continue  # not read from the environment (insecure_unsigned_jobs)
        found[variable] = _default(field)
        credential = marker(field, Credential)
        if credential is not None:
            found.setdefault(f"{variable}_FILE", None)
    return found


def _default(field: FieldInfo) -> object:
    if field.default_factory is not None or marker(field, WhenUnset) is not None:
        return COMPUTED
    assert field.default is not PydanticUndefined, "every setting has a default"
    return field.default


@functools.cache
def code_variables() -> frozenset[str]:
    """Every variable the settings models read, and every string constant of worker/ that
    looks like one of our variables (the role's and the CLI's)."""
    names = {
        node.value
        for tree in code_sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and OURS.fullmatch(node.value)
    }
    return frozenset(names | set(model_settings()))


def named_in_docs() -> dict[str, set[str]]:
    """{variable: files} for every variable of ours in backticks or at a line's start."""
    names: dict[str, set[str]] = {}
    for path in [*DOCS, ENV_EXAMPLE]:
        text = path.read_text()
        for match in re.finditer(r"(?:`|^#?\s*)([A-Z][A-Z0-9_]{2,})\b", text, re.MULTILINE):
            if OURS.fullmatch(match.group(1)) and not match.group(1).endswith("_"):
                names.setdefault(match.group(1), set()).add(path.name)
    return names


@functools.cache
def readme_table() -> dict[str, str]:
    """{variable: default cell} of the configuration table (docs/configuration.md)."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    table = text[text.index("| variable") :]
    table = table[: table.index("\n\n")]
    rows: dict[str, str] = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", cells[0]):
            rows[name] = cells[1]
    return rows


def test_every_variable_the_docs_name_is_read_by_the_code() -> None:
    known = code_variables()
    unknown = {name: files for name, files in named_in_docs().items() if name not in known}

    assert unknown == {}, f"named in the docs, read nowhere in worker/: {unknown}"


def test_every_setting_is_in_the_table_and_every_row_is_a_setting() -> None:
    table, settings = readme_table(), model_settings()
    undocumented = sorted(name for name in settings if name not in table)
    unknown = sorted(name for name in table if name not in settings)

    assert undocumented == [], f"settings missing from docs/configuration.md: {undocumented}"
    assert unknown == [], f"rows of docs/configuration.md that are no setting: {unknown}"


def test_every_setting_has_a_one_line_description() -> None:
    missing = [
        name
        for name, field in Settings.model_fields.items()
        if isinstance(field.validation_alias, str)
        and not (field.description and "\n" not in field.description)
    ]

    assert missing == []


def test_the_api_side_s_settings_are_the_worker_s() -> None:
    """One declaration per setting: the worker's model extends the API side's."""
    assert issubclass(Settings, ClientSettings)
    for name, field in ClientSettings.model_fields.items():
        inherited = Settings.model_fields[name]
        assert (inherited.validation_alias, inherited.default) == (
            field.validation_alias,
            field.default,
        )


def documented_default(cell: str) -> str | None:
    """The default a table cell gives: `empty` -> "", a literal -> its text (each possibly
    followed by words in parentheses); None for words (a default the code computes)."""
    if re.fullmatch(r"empty(?: \(.*\))?", cell):
        return ""
    literal = re.fullmatch(r"`([^`]*)`(?: \(.*\))?", cell)
    return literal.group(1) if literal else None


def as_text(value: object) -> str:
    if value is None or value in ((), "", Secret("")):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@pytest.mark.parametrize("name", sorted(model_settings()))
def test_the_documented_default_is_the_code_s(name: str) -> None:
    cell = readme_table().get(name)
    # A missing row fails here too (no skip: a skipped check reads as a passed one).
    assert cell is not None, f"{name} has no row in docs/configuration.md's table"
    default, documented = model_settings()[name], documented_default(cell)
    if default is COMPUTED:
        assert documented is None, f"{name}: computed on the host, so described in words"
    elif isinstance(default, Path) and documented:
        assert Path(documented) == default, f"docs/configuration.md says {cell}"
    else:
        assert documented == as_text(default), (
            f"docs/configuration.md says {cell}, the code {default!r}"
        )


def options_by_command() -> dict[str, set[str]]:
    parser = build_parser()
    global_options = {o for a in parser._actions for o in a.option_strings}
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {
        command: global_options | {o for a in sub._actions for o in a.option_strings}
        for command, sub in subparsers.choices.items()
    }


def test_every_cli_flag_the_docs_name_exists() -> None:
    commands = options_by_command()
    wrong: list[str] = []
    for path in DOCS:
        for call in re.findall(r"update-executor((?: --?[\w-]+(?:[ =][^\s`-][^\s`]*)?)*)"
                               r" (\w[\w-]*)([^`\n]*)", path.read_text()):  # fmt: skip
            before, command, after = call
            if command not in commands:
                continue  # prose such as "update-executor is …"
            for flag in re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", before + after):
                if flag not in commands[command]:
                    wrong.append(f"{path.name}: update-executor {command} {flag}")

    assert wrong == []


def test_the_checks_find_what_they_look_for() -> None:
    """The scanners are not vacuous: they see the settings, the table and the commands."""
    assert {"HEALTH_TIMEOUT", "REDIS_QUEUE_PORT", "UPDATE_QUEUE_NAME"} <= code_variables()
    assert model_settings()["HEALTH_TIMEOUT"] == 300
    assert model_settings()["HISTORY_MAX_BYTES"] == 10 * 1024 * 1024
    assert model_settings()["UPDATE_JOB_SECRET_FILE"] is None
    assert model_settings()["LOG_FILE"] is COMPUTED
    assert "insecure_unsigned_jobs" not in model_settings()
    assert readme_table()["HEALTH_TIMEOUT"] == "`300`"
    assert documented_default("`0.05`") == "0.05"
    assert documented_default("empty (off)") == ""
    assert documented_default("`/x` (the unit's state directory)") == "/x"
    assert documented_default("`/x` when writable, else none") is None
    assert "REDIS_QUEUE_HOST" in named_in_docs()
    assert "--wait" in options_by_command()["enqueue"]
