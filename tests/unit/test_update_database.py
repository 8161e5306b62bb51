"""The database filters of the role (issue 23): the revision read from a revision command's
output, the effective mode, the downgrade's argv and the commands to finish by hand."""

from __future__ import annotations

from typing import Any

import pytest

from worker.host.notify import database_lines

from .playbook_code import load

db = load("filter_plugins/update_database")


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"rc": 0, "stdout": "1a7c3e5b9d01 (head)\n"}, {"ok": True, "revision": "1a7c3e5b9d01"}),
        ({"rc": 0, "stdout": "  2b8d4f6a0e12\n"}, {"ok": True, "revision": "2b8d4f6a0e12"}),
        (
            {"rc": 0, "stdout": "ae1027a6acf (head) (mergepoint)"},
            {"ok": True, "revision": "ae1027a6acf"},
        ),
        ({"rc": 0, "stdout": "v1.2:rc+1_x-y"}, {"ok": True, "revision": "v1.2:rc+1_x-y"}),
        ({"rc": 0, "stdout": ""}, {"ok": True, "revision": "base"}),
        ({"rc": 0, "stdout": "{{ lookup('pipe', 'id') }}"}, {"ok": False, "revision": None}),
        ({"rc": 0, "stdout": "a;rm -rf /"}, {"ok": False, "revision": None}),
        ({"rc": 0, "stdout": "x" * 65}, {"ok": False, "revision": None}),
        ({"rc": 0, "stdout": "$(id)"}, {"ok": False, "revision": None}),
        ({"rc": 127, "stderr": "exec: alembic: not found"}, {"ok": False, "revision": None}),
        ({"skipped": True}, {"ok": False, "revision": None}),
        (None, {"ok": False, "revision": None}),
    ],
)
def test_the_revision_is_the_first_token_and_only_in_its_grammar(
    result: dict[str, Any] | None, expected: dict[str, Any]
) -> None:
    read = db.db_revision(result)
    assert {"ok": read["ok"], "revision": read["revision"]} == expected
    assert (read["error"] is None) == expected["ok"]


def test_an_output_outside_the_grammar_is_marked_invalid_a_failed_command_is_not() -> None:
    assert db.db_revision({"rc": 0, "stdout": "{{x}}"})["invalid"] is True
    assert "invalid" not in db.db_revision({"rc": 1, "stdout": "", "stderr": "boom"})
    assert db.db_revision({"rc": 1, "stderr": "a\nb\nc\nd"})["error"] == "exit status 1: b / c / d"


@pytest.mark.parametrize(
    ("configured", "probe_ok", "command", "mode"),
    [
        ("", True, "alembic current", "downgrade"),
        ("", False, "alembic current", "off"),
        ("", True, "", "off"),
        ("off", True, "alembic current", "off"),
        ("downgrade", False, "alembic current", "downgrade"),
        ("downgrade-then-restore", True, "alembic current", "downgrade-then-restore"),
    ],
)
def test_the_mode(configured: str, probe_ok: bool, command: str, mode: str) -> None:
    assert db.db_mode(configured, {"ok": probe_ok}, command) == mode


def test_the_revision_is_one_argument_of_the_downgrade_never_split_or_shell_text() -> None:
    assert db.db_argv("alembic downgrade", "1a7c3e5b9d01") == [
        "alembic",
        "downgrade",
        "1a7c3e5b9d01",
    ]
    assert db.db_argv("sh -c 'cd /code && alembic downgrade \"$1\"' -", "base") == [
        "sh", "-c", 'cd /code && alembic downgrade "$1"', "-", "base",
    ]  # fmt: skip
    for bad in ("", "a b", "{{ x }}", "x;y", None, "x" * 65):
        with pytest.raises(ValueError):
            db.db_argv("alembic downgrade", bad)


def test_the_commands_to_finish_by_hand() -> None:
    database = {
        "revision_before": "1a7c3e5b9d01",
        "service": "api",
        "downgrade_command": "alembic downgrade",
        "restore_command": "pg_restore -U app -d app --clean",
        "backup_service": "db",
        "targets": ["api"],
    }
    manual = db.db_manual(
        database, "/srv/app", ["/srv/app/c.yml"], "app", "unix:///d.sock", "/b/x.backup"
    )
    cli = "docker compose --project-directory /srv/app --file /srv/app/c.yml --project-name app"
    assert manual == [
        "export DOCKER_HOST=unix:///d.sock",
        f"{cli} exec -T api alembic downgrade 1a7c3e5b9d01",
        f"or, to restore the backup taken before the update: {cli} stop api ; "
        f"{cli} exec -T db pg_restore -U app -d app --clean < /b/x.backup",
        "then put the previous images back: update-executor rollback (by hand: ansible-playbook "
        "playbooks/rollback.yml with the same inventory)",
    ]


@pytest.mark.parametrize(
    ("database", "lines"),
    [
        (None, []),
        ({"action": "none", "revision_before": "a1"}, []),
        (
            {"action": "downgraded", "revision_before": "a1", "revision_after": "a1"},
            ["Database: put back at revision a1 (downgraded)"],
        ),
        (
            {"action": "restored", "revision_before": "a1", "message": "Restored from x: lost"},
            ["Database: put back at revision a1 (restored): Restored from x: lost"],
        ),
        (
            {"action": "failed", "revision_before": "a1", "revision_after": "b2"},
            ["Database: NOT PUT BACK (at b2, was a1)"],
        ),
    ],
)
def test_the_notification_says_whether_the_database_was_put_back(
    database: dict[str, Any] | None, lines: list[str]
) -> None:
    assert database_lines(database) == lines
