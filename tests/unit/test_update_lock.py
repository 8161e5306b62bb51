"""The pure parts of the role's lock module
(playbooks/roles/compose_update/library/update_lock.py): holder text, staleness, atomic take
and token-checked release. A fake /proc keeps them deterministic."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from .playbook_code import load

HOST = "host-a"
NOW = 1_800_000_000.0


lock = load("library/update_lock")


def fake_process(
    proc: Path,
    pid: int,
    *,
    ppid: int = 1,
    start: int = 100,
    state: str = "S",
    argv: tuple[str, ...] = (),
) -> None:
    """/proc/<pid>/stat and cmdline as Linux writes them (comm may hold spaces and parens)."""
    entry = proc / str(pid)
    entry.mkdir(parents=True)
    rest = [state, str(ppid)] + ["0"] * 17 + [str(start)] + ["0"] * 5
    (entry / "stat").write_text(f"{pid} (odd) name) " + " ".join(rest) + "\n")
    (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def holder(
    pid: int | None = 4242, *, host: str = HOST, start: int | None = 100, age: float = 10
) -> dict[str, Any]:
    return {
        "id": "update-executor job 7",
        "job_id": "7",
        "user": "root",
        "host": host,
        "pid": pid,
        "pid_start": start,
        "started_at": "2027-01-15T08:00:00Z",
        "started_epoch": NOW - age,
        "project": "app",
        "token": "other-token",
    }


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    return root


def test_holder_id_names_the_job_or_the_user() -> None:
    assert lock.holder_id("42", "admin@example.org", "root", None) == (
        "update-executor job 42 for admin@example.org"
    )
    assert lock.holder_id("42", "", "root", None) == "update-executor job 42"
    assert lock.holder_id("manual", "", "root", None) == "ansible-playbook by root"
    assert lock.holder_id("", "", "root", "alice") == "ansible-playbook by root (sudo from alice)"


def test_proc_stat_is_parsed_after_the_last_parenthesis(proc: Path) -> None:
    fake_process(proc, 10, ppid=3, start=555, state="Z")
    assert lock.read_proc_stat(10, str(proc)) == ("Z", 3, 555)
    assert lock.read_proc_stat(11, str(proc)) is None


def test_the_controller_is_the_outermost_ansible_playbook(proc: Path) -> None:
    playbook = ("/venv/bin/python", "/venv/bin/ansible-playbook", "site.yml")
    fake_process(proc, 50, ppid=1, argv=("bash",))
    fake_process(proc, 60, ppid=50, argv=playbook)  # ansible-playbook
    fake_process(proc, 70, ppid=60, argv=playbook)  # its task worker (a fork)
    fake_process(proc, 80, ppid=70, argv=("/bin/sh", "-c", "python"))  # the module's shell
    assert lock.controller_pid(80, str(proc)) == 60
    # No ansible-playbook above (the module runs on a remote host): no pid to judge it by.
    assert lock.controller_pid(50, str(proc)) is None


def test_a_live_holder_is_not_stale(proc: Path) -> None:
    fake_process(proc, 4242, start=100)
    assert lock.stale_reason(holder(), NOW, 1800, HOST, str(proc)) is None


def test_a_live_holder_keeps_the_lock_whatever_its_age(proc: Path) -> None:
    """Issue 13: a run longer than lock_max_age whose process is alive keeps its lock."""
    fake_process(proc, 4242, start=100)
    assert lock.stale_reason(holder(age=100_000), NOW, 1800, HOST, str(proc)) is None


def test_a_holder_from_before_a_reboot_is_stale(proc: Path) -> None:
    fake_process(proc, 4242, start=100)  # the pid lives again after the reboot: another process
    entry = dict(holder(), boot_id="boot-1")
    assert lock.stale_reason(entry, NOW, 1800, HOST, str(proc), boot_id="boot-2") == (
        "taken on host-a before it rebooted"
    )
    assert lock.stale_reason(entry, NOW, 1800, HOST, str(proc), boot_id="boot-1") is None


@pytest.mark.parametrize(
    ("setup", "entry", "reason"),
    [
        ("none", holder(), "pid 4242 is not running on host-a"),
        ("zombie", holder(), "pid 4242 is not running on host-a"),
        ("reused", holder(), "pid 4242 on host-a is another process now"),
        ("live", holder(pid=None, age=1801), "older than 1800 s (taken 1801 s ago)"),
    ],
)
def test_stale_locks(proc: Path, setup: str, entry: dict[str, Any], reason: str) -> None:
    if setup == "zombie":
        fake_process(proc, 4242, state="Z")
    elif setup == "reused":
        fake_process(proc, 4242, start=999)
    elif setup == "live":
        fake_process(proc, 4242)
    assert lock.stale_reason(entry, NOW, 1800, HOST, str(proc)) == reason


def test_a_lock_of_another_host_is_judged_by_its_age_only(proc: Path) -> None:
    assert lock.stale_reason(holder(host="host-b"), NOW, 1800, HOST, str(proc)) is None
    assert lock.stale_reason(holder(host="host-b", age=4000), NOW, 1800, HOST, str(proc))


def test_take_busy_and_release(tmp_path: Path, proc: Path) -> None:
    fake_process(proc, 60, start=5)
    fake_process(proc, 61, start=6)
    path = tmp_path / "locks" / "app.abc.lock"
    mine = lock.make_holder("app", "manual", "", 60, NOW, str(proc), user="root", host=HOST)
    assert mine["pid_start"] == 5
    acquired, seen, broke = lock.acquire(str(path), mine, 1800, NOW, HOST, str(proc))
    assert (acquired, broke) == (True, None)
    assert json.loads(path.read_text())["token"] == mine["token"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not list(path.parent.glob("*.tmp"))

    theirs = lock.make_holder("app", "9", "", 61, NOW, str(proc), user="root", host=HOST)
    acquired, seen, broke = lock.acquire(str(path), theirs, 1800, NOW, HOST, str(proc))
    assert (acquired, broke) == (False, None)
    assert seen["token"] == mine["token"]
    assert "ansible-playbook by root (host host-a, pid 60" in lock.describe(seen, NOW)

    assert lock.release(str(path), theirs["token"]) == (False, seen)  # not theirs to release
    assert path.exists()
    assert lock.release(str(path), mine["token"])[0] is True
    assert not path.exists()
    assert lock.release(str(path), mine["token"]) == (False, None)  # idempotent


def test_a_stale_lock_is_broken_and_reported(tmp_path: Path, proc: Path) -> None:
    fake_process(proc, 60, start=5)
    path = tmp_path / "app.abc.lock"
    path.write_text(json.dumps(holder(pid=4242)))  # 4242 is not in the fake /proc
    mine = lock.make_holder("app", "manual", "", 60, NOW, str(proc), user="root", host=HOST)
    acquired, seen, broke = lock.acquire(str(path), mine, 1800, NOW, HOST, str(proc))
    assert acquired is True
    assert seen is mine
    assert broke["reason"] == "pid 4242 is not running on host-a"
    assert broke["id"] == "update-executor job 7"
    assert "token" not in broke
    assert json.loads(path.read_text())["token"] == mine["token"]


def test_an_unreadable_lock_blocks_until_it_is_old(tmp_path: Path, proc: Path) -> None:
    path = tmp_path / "app.abc.lock"
    path.write_text("not json")
    mine = lock.make_holder("app", "manual", "", 60, NOW, str(proc), user="root", host=HOST)
    now = path.stat().st_mtime + 5
    assert lock.acquire(str(path), mine, 1800, now, HOST, str(proc))[0] is False
    acquired, _seen, broke = lock.acquire(str(path), mine, 1800, now + 1800, HOST, str(proc))
    assert acquired is True
    assert broke["reason"].startswith("older than 1800 s")


def test_public_holder_has_no_token() -> None:
    shown = lock.public(holder())
    assert "token" not in shown
    assert shown["id"] == "update-executor job 7"
    assert lock.public(None) is None


# ---------------------------------------------------------------- rollback point
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, None),
        (
            {"job_id": "j1", "started_at": "2026-01-01T00:00:00Z", "project": "app", "before": {}},
            {"job_id": "j1", "started_at": "2026-01-01T00:00:00Z", "project": "app"},
        ),
        ("not json {", {"job_id": None, "started_at": None, "project": None}),
        ([1, 2], {"job_id": None, "started_at": None, "project": None}),
    ],
)
def test_read_rollback_point(tmp_path: Path, content: object, expected: object) -> None:
    path = tmp_path / "app.rollback.json"
    if isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_text(json.dumps(content))
    assert lock.read_rollback_point(str(path)) == expected
    assert lock.read_rollback_point("") is None


@pytest.mark.parametrize(
    ("job_id", "who"), [("j1", "job j1"), ("manual", "a manual run"), (None, "a manual run")]
)
def test_interrupted_message_names_the_update_and_the_way_out(job_id: str | None, who: str) -> None:
    point = {"job_id": job_id, "started_at": "2026-01-01T00:00:00Z", "project": "app"}
    message = lock.interrupted_message("app", point, "/run/ue/app.x.rollback.json")
    assert f"project 'app' ({who}, started 2026-01-01T00:00:00Z)" in message
    assert "playbooks/rollback.yml" in message
    assert "/run/ue/app.x.rollback.json" in message
    assert message.endswith("Nothing was changed.")


def test_the_release_removes_the_runs_files_whoever_holds_the_lock(tmp_path: Path) -> None:
    config = tmp_path / "update-executor-42-abc"
    (config / "cli-plugins").mkdir(parents=True)
    (config / "config.json").write_text("{}")
    params = {name: spec.get("default") for name, spec in lock.ARGUMENT_SPEC.items()}
    params.update(
        path=str(tmp_path / "app.lock"),
        state="absent",
        token="not-ours",
        remove_paths=[str(config), str(tmp_path / "missing")],
    )
    result = lock.run_task(params, 1, lambda _message: None)
    assert result["released"] is False  # no lock file: nothing of ours to release
    assert result["removed"] == [str(config)] and result["changed"] is True
    assert not config.exists()
