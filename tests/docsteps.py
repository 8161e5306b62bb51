"""The install recipe of docs/operations.md as data, so the systemd test runs what the doc says.

A step is a fenced `sh` block right after a marker line `<!-- install-step: NAME -->`; other
blocks (compose snippets, examples) are prose. `install_steps()` returns the steps in the
doc's order; a marker without its block, a block left open or a name used twice is an error,
so an edit of the doc cannot silently drop a step from the test.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MARKER = re.compile(r"<!-- install-step: ([a-z][a-z0-9-]*) -->")
LOOKS_LIKE_A_MARKER = re.compile(r"<!--\s*install-step")
FENCE_OPEN = "```sh"
FENCE_CLOSE = "```"


class DocStepError(ValueError):
    """The doc's install steps are not in the expected shape."""


@dataclass(frozen=True)
class InstallStep:
    name: str
    script: str  # the block's lines, each ending with a newline
    line: int  # the marker's line number (1-based), for messages


def install_steps(markdown: str) -> list[InstallStep]:
    """The marked `sh` blocks of `markdown`, in order."""
    lines = markdown.splitlines()
    steps: list[InstallStep] = []
    i = 0
    while i < len(lines):
        marker = MARKER.fullmatch(lines[i].strip())
        if marker is None:
            if LOOKS_LIKE_A_MARKER.search(lines[i]):
                raise DocStepError(f"line {i + 1}: malformed install-step marker {lines[i]!r}")
            i += 1
            continue
        name, line = marker.group(1), i + 1
        if any(step.name == name for step in steps):
            raise DocStepError(f"line {line}: install step {name!r} appears twice")
        i += 1
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines) or lines[i].strip() != FENCE_OPEN:
            raise DocStepError(f"line {line}: install step {name!r} is not followed by a sh block")
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != FENCE_CLOSE:
            body.append(lines[i] + "\n")
            i += 1
        if i >= len(lines):
            raise DocStepError(f"line {line}: the sh block of install step {name!r} is not closed")
        if not "".join(body).strip():
            raise DocStepError(f"line {line}: install step {name!r} is empty")
        steps.append(InstallStep(name, "".join(body), line))
        i += 1
    return steps
