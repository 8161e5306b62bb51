"""Issue 22: a comment or docstring that names a file of this repository names one that exists
(stale names of files that had moved sent readers looking for code
that had moved). Checked: Python comments and docstrings in worker/, tests/, testbed/, bench/
and the role's Python, and the comments of the Makefile, pyproject.toml and the YAML files.
A path counts when it exists from the repository's root, or when some file's path ends with
it (`host/jobs.py`, `jobs.py`)."""

from __future__ import annotations

import ast
import io
import re
import subprocess
import tokenize
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PATH = re.compile(
    r"(?<![\w./<$~-])((?:[\w.-]+/)*\w[\w.-]*\.(?:py|ya?ml|md|toml|json|cfg|service|sh|env|example))\b"
)
# Names that are not ours: other projects' files, files a test creates, examples for users.
NOT_OURS = re.compile(
    r"(?:docker-compose[\w.-]*|compose[\w.-]*|scripts/external_update_worker\.py|"
    r"external_update_worker\.py|backend/src/[\w./-]+|system_update\.py|alembic\.ini|"
    r"prometheus\.yml|config\.json|requirements\.yml|env\.py|site\.yml|hosts\.yml|main\.py|"
    r"[\w-]+\.schema\.json|\.env[\w.-]*|[\w.-]*\.(?:env|example)|setup\.py|playbook\.yml|"
    r"ansible_collections/[\w./-]+|site-packages/[\w./-]+|module_utils/basic\.py|docker\.service)"
)


def repository_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return listed.stdout.split()


def python_comments(path: Path) -> Iterator[tuple[int, str]]:
    source = path.read_text()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            docstring = ast.get_docstring(node, clean=False)
            if docstring:
                line = node.body[0].lineno if node.body else 1
                yield line, docstring


def hash_comments(path: Path) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if "#" in line:
            yield number, line[line.index("#") :]


def commented_files() -> list[Path]:
    files = [ROOT / name for name in repository_files()]
    python = [
        f
        for f in files
        if f.suffix == ".py"
        and f.parts[len(ROOT.parts)] in {"worker", "tests", "testbed", "bench", "playbooks"}
    ]
    other = [ROOT / "Makefile", ROOT / "pyproject.toml"]
    other += [f for f in files if f.suffix in {".yml", ".yaml"} and "playbooks" in f.parts]
    return [f for f in python + other if f.exists()]


def unknown_paths() -> list[str]:
    known = repository_files()
    problems = []
    for path in commented_files():
        comments = python_comments(path) if path.suffix == ".py" else hash_comments(path)
        for line, text in comments:
            for name in PATH.findall(text):
                if NOT_OURS.fullmatch(name.split("/")[-1]) or NOT_OURS.fullmatch(name):
                    continue
                if (ROOT / name).exists() or any(f.endswith("/" + name) for f in known):
                    continue
                problems.append(f"{path.relative_to(ROOT)}:{line}: {name}")
    return problems


def test_comments_name_only_files_that_exist() -> None:
    assert unknown_paths() == []


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("# see worker/host/jobs.py", ["worker/host/jobs.py"]),
        ("# in shared/result.py and jobs.py", ["shared/result.py", "jobs.py"]),
        ("# the docker-compose.prod.yml of the app", ["docker-compose.prod.yml"]),
        ("# https://example.org/a/b.py is a URL", []),
    ],
)
def test_the_path_pattern(text: str, found: list[str]) -> None:
    assert PATH.findall(text) == found
