"""docs/operations.md's install recipe (issue 25): the parser the systemd test runs it with,
and the recipe's order, checked here without systemd (tests/integration/test_systemd.py runs
it under one)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docsteps import DocStepError, InstallStep, install_steps

OPERATIONS_MD = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
FENCE = "```"


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("no steps at all\n", []),
        (
            f"text\n<!-- install-step: a -->\n{FENCE}sh\necho a\n{FENCE}\n",
            [InstallStep("a", "echo a\n", 2)],
        ),
        (  # blank lines between marker and block; other blocks are prose
            f"<!-- install-step: one -->\n\n{FENCE}sh\nx\ny\n{FENCE}\n"
            f"{FENCE}yaml\nk: v\n{FENCE}\n{FENCE}sh\nnot a step\n{FENCE}\n"
            f"<!-- install-step: two-2 -->\n{FENCE}sh\nz\n{FENCE}",
            [InstallStep("one", "x\ny\n", 1), InstallStep("two-2", "z\n", 13)],
        ),
    ],
)
def test_install_steps_are_the_marked_sh_blocks_in_order(
    markdown: str, expected: list[InstallStep]
) -> None:
    assert install_steps(markdown) == expected


@pytest.mark.parametrize(
    ("markdown", "message"),
    [
        ("<!-- install-step: a -->\ntext\n", "not followed by a sh block"),
        (f"<!-- install-step: a -->\n{FENCE}yaml\nk: v\n{FENCE}\n", "not followed by a sh block"),
        (f"<!-- install-step: a -->\n{FENCE}sh\necho\n", "is not closed"),
        (f"<!-- install-step: a -->\n{FENCE}sh\n\n{FENCE}\n", "is empty"),
        (
            f"<!-- install-step: a -->\n{FENCE}sh\nx\n{FENCE}\n"
            f"<!-- install-step: a -->\n{FENCE}sh\ny\n{FENCE}\n",
            "appears twice",
        ),
        ("<!-- install-step: Bad Name -->\n", "malformed install-step marker"),
        ("<!-- install-step a -->\n", "malformed install-step marker"),
    ],
)
def test_a_broken_step_is_an_error(markdown: str, message: str) -> None:
    with pytest.raises(DocStepError, match=message):
        install_steps(markdown)


def test_the_install_recipe_is_in_the_order_an_operator_needs() -> None:
    """The user before the files it must read, the configuration complete (job secret, token,
    env file edited) before `enable --now`, and nothing run from under /home."""
    steps = install_steps(OPERATIONS_MD.read_text())
    names = [step.name for step in steps]
    assert names == ["user", "project", "wheel", "secret", "token", "env", "unit", "check"]
    by_name = {step.name: step.script for step in steps}
    # Debian 12's systemd has no /etc/sysusers.d: the copy creates it.
    assert "install -D -m 0644 deploy/sysusers.d/" in by_name["user"]
    assert "runuser -u update-executor --" in by_name["project"]
    # The env file is copied and edited in its step, the unit started only in the last one.
    env_lines = by_name["env"].splitlines()
    assert env_lines[0].startswith("cp deploy/update-executor.env.example ")
    assert env_lines[1].startswith("editor /etc/update-executor/update-executor.env")
    started = [step.name for step in steps if "systemctl enable --now" in step.script]
    assert started == ["unit"]
    before_the_unit = names[: names.index("unit")]
    assert "systemctl" not in "".join(by_name[name] for name in before_the_unit)
    # The check goes through the unit's worker with its settings, never a sourced env file.
    assert (
        "--env-file /etc/update-executor/update-executor.env enqueue --dry-run --wait"
        in (by_name["check"])
    )
    # The token step is one line an operator without a token skips.
    assert len(by_name["token"].splitlines()) == 1
    assert all("/home" not in step.script for step in steps)
