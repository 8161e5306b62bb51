"""`update-executor unlock` (worker/host/unlock.py): which lock it removes, judged by the role's
own staleness rule (library/update_lock.py) on a fake /proc, what it shows, and its exit
statuses."""

from __future__ import annotations

import json
import socket
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from worker.command import main
from worker.host.unlock import LockState, Verdict, decide, lock_files, shown, unlock

from .playbook_code import load
from .test_update_lock import HOST, NOW, fake_process, holder

lock = load("library/update_lock")


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    fake_process(root, 4242, start=100)  # the holder of `holder()` runs
    fake_process(root, 5000, start=999)  # pid 5000 was reused
    return root


@pytest.mark.parametrize(
    ("entry", "point", "verdict", "reason"),
    [
        (holder(), False, Verdict.live, None),
        (holder(age=100_000), False, Verdict.live, None),  # alive: whatever its age
        (holder(), True, Verdict.live, None),  # an update running, with its rollback point
        (holder(pid=4243), False, Verdict.removed, "pid 4243 is not running on host-a"),
        (holder(pid=5000), False, Verdict.removed, "pid 5000 on host-a is another process now"),
        (holder(pid=4243), True, Verdict.cut_off, "pid 4243 is not running on host-a"),
        (holder(host="host-b"), False, Verdict.live, None),  # cannot be checked, young
        (holder(host="host-b", age=1801), False, Verdict.removed, "older than 1800 s"),
        (holder(pid=None, age=1801), True, Verdict.cut_off, "older than 1800 s"),
    ],
)
def test_only_a_stale_lock_without_a_rollback_point_is_removed(
    proc: Path, entry: dict[str, Any], point: bool, verdict: Verdict, reason: str | None
) -> None:
    got = decide(
        entry,
        now=NOW,
        max_age=1800,
        hostname=HOST,
        has_rollback_point=point,
        stale_reason=partial(lock.stale_reason, proc_root=str(proc)),
    )
    assert got[0] is verdict
    assert (got[1] or "").startswith(reason or "")
    assert (got[1] is None) is (reason is None)


def write(path: Path, entry: dict[str, Any]) -> str:
    path.parent.mkdir(mode=0o700, exist_ok=True)
    text = json.dumps(entry)
    path.write_text(text)
    return text


def test_a_stale_lock_is_removed_and_its_holder_shown(tmp_path: Path, proc: Path) -> None:
    path = tmp_path / "locks" / "app.k1.lock"
    write(path, holder(pid=4243))

    state = unlock(path, max_age=1800, now=NOW, hostname=HOST, proc_root=str(proc))

    assert state.verdict is Verdict.removed
    assert not path.exists()
    assert state.holder == {
        "id": "update-executor job 7",
        "job_id": "7",
        "requested_by": None,
        "user": "root",
        "host": HOST,
        "pid": 4243,
        "started_at": "2027-01-15T08:00:00Z",
        "project": "app",
    }
    assert "token" not in json.dumps(state.as_dict())
    assert "removed: it was stale (pid 4243 is not running on host-a)" in state.text()


def test_a_live_lock_is_left_as_it_is(tmp_path: Path, proc: Path) -> None:
    path = tmp_path / "locks" / "app.k1.lock"
    text = write(path, holder())

    state = unlock(path, max_age=1800, now=NOW, hostname=HOST, proc_root=str(proc))

    assert state.verdict is Verdict.live
    assert path.read_text() == text
    assert "NOT removed: its holder may still be running" in state.text()


def test_a_cut_off_update_s_lock_and_rollback_point_stay(tmp_path: Path, proc: Path) -> None:
    path = tmp_path / "locks" / "app.k1.lock"
    point = tmp_path / "locks" / "app.k1.rollback.json"
    text = write(path, holder(pid=4243))
    point.write_text('{"job_id": "7"}')

    state = unlock(path, max_age=1800, now=NOW, hostname=HOST, proc_root=str(proc))

    assert state.verdict is Verdict.cut_off
    assert path.read_text() == text
    assert point.exists()
    assert state.rollback_point == point
    assert "Roll it back with `update-executor rollback`" in state.text()


def test_a_lock_gone_meanwhile(tmp_path: Path) -> None:
    (tmp_path / "locks").mkdir(mode=0o700)
    state = unlock(tmp_path / "locks" / "app.k1.lock", max_age=1800)
    assert state.verdict is Verdict.gone
    assert "nothing to remove" in state.text()


def test_the_project_s_locks_only(tmp_path: Path) -> None:
    for name in ("app.k1.lock", "app.k2.lock", "other.k1.lock", "app.k1.rollback.json"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "app.k1.lock.abc.tmp").write_text("{}")
    assert [p.name for p in lock_files(tmp_path, "app")] == ["app.k1.lock", "app.k2.lock"]
    assert len(lock_files(tmp_path, "")) == 3
    assert lock_files(tmp_path / "absent", "app") == []


def test_requested_by_of_a_lock_written_before_it_was_recorded() -> None:
    entry = dict(holder(), id="update-executor job 7 for admin@example.org")
    assert shown(entry)["requested_by"] == "admin@example.org"
    assert shown(dict(entry, requested_by="bob"))["requested_by"] == "bob"
    assert shown(holder())["requested_by"] is None


def test_the_lock_records_who_asked(proc: Path) -> None:
    made = lock.make_holder("app", "9", "admin@example.org", 4242, NOW, str(proc), user="root")
    assert made["requested_by"] == "admin@example.org"
    assert lock.make_holder("app", "manual", "", 4242, NOW, str(proc))["requested_by"] is None


def test_a_refusal_of_a_held_lock_names_unlock() -> None:
    assert "`update-executor unlock`" in lock.UNLOCK_HINT


def test_shown_text_escapes_control_characters(tmp_path: Path) -> None:
    state = LockState(
        tmp_path / "a.lock", Verdict.live, shown(dict(holder(), requested_by="a\x1b[31mb"))
    )
    assert "\x1b" not in state.text()


@pytest.fixture
def lock_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "state" / "locks"
    directory.mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("UPDATE_LOCK_DIR", str(directory))
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "app")
    return directory


def live_holder(pid: int) -> dict[str, Any]:
    return dict(
        holder(pid=pid, start=None, age=5), host=socket.gethostname(), started_epoch=time.time()
    )


def test_exit_statuses(lock_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["unlock"]) == 0
    assert json.loads(capsys.readouterr().out)["locks"] == []

    write(lock_dir / "app.k1.lock", live_holder(1))  # pid 1 runs
    assert main(["unlock", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["locks"][0]["verdict"] == "live"
    assert "was not removed: its holder update-executor job 7 may still be running" in captured.err

    (lock_dir / "app.k1.lock").unlink()
    (lock_dir / "app.k1.rollback.json").write_text("{}")
    assert main(["unlock"]) == 1  # no lock, but a cut-off update to roll back
    captured = capsys.readouterr()
    assert json.loads(captured.out)["rollback_points"] == [str(lock_dir / "app.k1.rollback.json")]
    assert "roll it back with `update-executor rollback`" in captured.err
    assert (lock_dir / "app.k1.rollback.json").exists()
