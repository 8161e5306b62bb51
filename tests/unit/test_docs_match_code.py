"""The docs name only settings and flags that exist, with the defaults the code has (issue 25).
`make lint` runs this file too.

- Every environment variable of ours named in README.md, docs/*.md or the env file example is
  read somewhere in worker/ (a string constant there).
- The configuration table (docs/configuration.md) gives, for each row whose default is one
  literal (`300`, `localhost`, `true`, empty), the default the settings reader has in its call
  (`reader.integer("HEALTH_TIMEOUT", 300, …)`).
- Every `update-executor <command> --flag` in the docs is an option of that command (or a
  global one).
"""

from __future__ import annotations

import argparse
import ast
import functools
import operator
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.command import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENV_EXAMPLE = ROOT / "deploy" / "update-executor.env.example"
# Our variables (others, such as DOCKER_HOST or POSTGRES_USER, are the deployment's).
OURS = re.compile(
    r"(?:REDIS_QUEUE_|UPDATE_|COMPOSE_(?:FILE_PATH|PROJECT_NAME|ENV_PASSTHROUGH)|REGISTRY_"
    r"|GITHUB_TOKEN|MIGRATION_|HEALTH_TIMEOUT|JOB_TIMEOUT|LOG_FILE|BACKUP_|ROLLBACK_ON"
    r"|STOP_GRACE|WORKER_POLL|NOTIFY_|HISTORY_|METRICS_|HOOK_TIMEOUT)[A-Z0-9_]*"
)
READER_METHODS = {"text", "integer", "decimal", "boolean", "path"}
_ARITHMETIC = {ast.Mult: operator.mul, ast.Add: operator.add, ast.Pow: operator.pow}


def _constant(node: ast.expr) -> object:
    """A literal default, with the arithmetic settings use (10 * 1024 * 1024); else a marker."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        left, right = _constant(node.left), _constant(node.right)
        if isinstance(left, int) and isinstance(right, int):
            return _ARITHMETIC[type(node.op)](left, right)
    return NotImplemented


def code_sources() -> Iterator[ast.Module]:
    for path in sorted((ROOT / "worker").rglob("*.py")):
        yield ast.parse(path.read_text(), str(path))


@functools.cache
def code_variables() -> frozenset[str]:
    """Every string constant of worker/ that looks like one of our variables (a secret's
    `X` is also read as `X_FILE`: EnvReader.secret)."""
    names = {
        node.value
        for tree in code_sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and OURS.fullmatch(node.value)
    }
    secrets = {
        node.args[0].value
        for tree in code_sources()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "secret"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    }
    return frozenset(names | {f"{name}_FILE" for name in secrets})


@functools.cache
def code_defaults() -> dict[str, object]:
    """{variable: default} of the settings readers' calls with a literal default."""
    found: dict[str, object] = {}
    for tree in code_sources():
        for node in ast.walk(tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute | ast.Name)
                and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
                in READER_METHODS
                and len(node.args) >= 2
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                continue
            default = _constant(node.args[1])
            if default is not NotImplemented:
                found[node.args[0].value] = default
    return found


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


def test_the_readme_table_lists_the_settings_the_code_reads() -> None:
    table = readme_table()
    missing = sorted(name for name in code_defaults() if name not in table)

    assert missing == [], f"read by the settings, not in docs/configuration.md's table: {missing}"


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@pytest.mark.parametrize("name", sorted(readme_table()))
def test_the_readme_default_is_the_code_s(name: str) -> None:
    cell = readme_table()[name]
    defaults = code_defaults()
    literal = re.fullmatch(r"`([^`]*)`", cell)
    if name not in defaults or (literal is None and cell != "empty"):
        return  # a default the code computes, described in words
    expected = "" if cell == "empty" else literal.group(1) if literal else cell
    assert _as_text(defaults[name]) == expected, (
        f"docs/configuration.md says {cell}, the code {defaults[name]!r}"
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
    assert code_defaults()["HEALTH_TIMEOUT"] == 300
    assert code_defaults()["HISTORY_MAX_BYTES"] == 10 * 1024 * 1024
    assert readme_table()["HEALTH_TIMEOUT"] == "`300`"
    assert "REDIS_QUEUE_HOST" in named_in_docs()
    assert "--wait" in options_by_command()["enqueue"]
