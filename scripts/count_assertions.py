"""Print what the suite checks, to compare before and after a change to the tests (issue 22).

    .venv/bin/python scripts/count_assertions.py [--no-collect]

collected: the tests pytest collects (parametrised cases each count); asserts: `assert`
statements in tests/ (an AST count, helpers included); test functions: `def test_*` in tests/.
Nothing in CI runs it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"


def count_source() -> tuple[int, int]:
    asserts = functions = 0
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Assert):
                asserts += 1
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test_"
            ):
                functions += 1
    return asserts, functions


def count_collected() -> int:
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=TESTS.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    return sum(1 for line in done.stdout.splitlines() if "::" in line)


def main() -> None:
    asserts, functions = count_source()
    if "--no-collect" not in sys.argv:
        print(f"collected tests: {count_collected()}")
    print(f"assert statements: {asserts}")
    print(f"test functions: {functions}")


if __name__ == "__main__":
    main()
