"""docs/performance.md as `make bench` renders it: every table row has its header's number of
cells (the role's task names contain `|`), from the committed figures and from a run with the
peer and the module process counts of issue 20."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pytest

from bench.cli import RESULTS_DIR
from bench.markdown import render, table

# A `|` that is not escaped with a backslash separates cells.
SEPARATOR = re.compile(r"(?<!\\)\|")


def _cells(line: str) -> int:
    return len(SEPARATOR.findall(line)) - 1


def _broken_rows(page: str) -> list[str]:
    broken = []
    header = 0
    for line in page.splitlines():
        if not line.startswith("|"):
            header = 0
        elif header == 0:
            header = _cells(line)
        elif _cells(line) != header:
            broken.append(line)
    return broken


def _latest() -> dict[str, Any]:
    summary: dict[str, Any] = json.loads((RESULTS_DIR / "latest.json").read_text())
    return summary


def _with_peer(summary: dict[str, Any]) -> dict[str, Any]:
    """The stored run, plus what a run since issue 20 has: P, module processes by task."""
    out = copy.deepcopy(summary)
    for entries in out["cases"].values():
        entries["P"] = copy.deepcopy(entries["C"])
        entries["D"]["ratio_to_peer"] = 1.05
        listing = [
            {"task": "compose_update : Lock | Take the update lock", "action": "update_lock"},
            {"task": "compose_update : Pull | Pull", "action": "c.d.docker_compose_v2_pull"},
        ]
        for way in ("D", "P"):
            entries[way]["module_processes"] = {"median": 2.0, "n": 1}
            entries[way]["process_tasks"] = [{**row, "processes": 1} for row in listing]
    return out


def test_table_escapes_a_pipe_in_a_cell() -> None:
    lines = table(["task", "s"], [["Lock | Take the lock", "0.4"]])
    assert lines[-1] == "| Lock \\| Take the lock | 0.4 |"


@pytest.mark.parametrize("variant", ["stored", "with the peer"])
def test_every_row_has_its_header_cells(variant: str) -> None:
    summary = _latest() if variant == "stored" else _with_peer(_latest())
    page = render(summary)
    assert _broken_rows(page) == []
    assert "## Module processes per update (issue 20)" in page


def test_the_peer_and_the_process_listing_are_shown() -> None:
    summary = _with_peer(_latest())
    page = render(summary)
    assert "P: peer: ansible-playbook bench/variants/peer.yml" in page
    assert "compose_update : Lock \\| Take the update lock | update_lock | 1 |" in page
    for number in summary["cases"]:
        assert f"Case {number}, peer: 2: compose_update : Lock | Take the update lock;" in page
