"""Issue 21: the rollback point chooses the compose files a start-up rollback runs, so the lock
directory and the point's file must be out of reach of other users. The role's modules refuse
a lock directory that is not the running user's (or root's) or that its group or others may
write, and write the point to a new file (O_EXCL|O_NOFOLLOW) renamed into place: never through
a planted file or symlink, never truncating someone else's file."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from .playbook_code import load

lock = load("library/update_lock")
snapshot = load("library/compose_snapshot")
TAKEN = {"api": {"container_id": "c", "image_id": "sha256:1", "digest": None, "state": "running"}}


def write_point(path: Path) -> None:
    snapshot.write_rollback_point(str(path), {"project": "shop", "targets": ["api"]}, TAKEN)


@pytest.mark.parametrize(
    ("mode", "safe"),
    [(0o700, True), (0o755, True), (0o770, False), (0o777, False), (0o1777, False), (0o702, False)],
)
def test_a_lock_directory_writable_by_others_is_refused(
    tmp_path: Path, mode: int, safe: bool
) -> None:
    directory = tmp_path / "locks"
    directory.mkdir()
    directory.chmod(mode)
    for check in (lock.ensure_directory, snapshot.check_directory):
        if safe:
            check(str(directory))
        else:
            with pytest.raises(PermissionError, match="writable by its group or others"):
                check(str(directory))


@pytest.mark.parametrize("module", [lock, snapshot])
def test_a_lock_directory_of_another_user_is_refused(tmp_path: Path, module: Any) -> None:
    directory = tmp_path / "locks"
    directory.mkdir(mode=0o700)
    if os.geteuid() == 0:  # a directory of another user, checked by root
        os.chown(directory, 12345, -1)
        user = 0
    else:  # our own directory, checked for another (non-root) user
        user = os.geteuid() + 1
    with pytest.raises(PermissionError, match="belongs to uid"):
        module.check_directory(str(directory), uid=user)
    module.check_directory(str(directory), uid=directory.stat().st_uid)


def test_taking_the_lock_in_an_unsafe_directory_fails_and_writes_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    params = {name: spec.get("default") for name, spec in lock.ARGUMENT_SPEC.items()}
    params.update(
        path=str(directory / "app.lock"),
        state="present",
        project="app",
        job_id="7",
        requested_by="t",
        max_age=1800,
        rollback_point=str(directory / "app.rollback.json"),
    )
    result = lock.run_task(params, os.getpid(), lambda _message: None)
    assert result["failed"] is True and result["acquired"] is False
    assert "writable by its group or others" in result["msg"]
    assert list(directory.iterdir()) == []


def test_the_point_is_not_written_through_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    directory = tmp_path / "locks"
    directory.mkdir(mode=0o700)
    path = directory / "shop.abc.rollback.json"
    path.symlink_to(victim)
    # the old fixed temporary name, planted as a symlink too
    (directory / "shop.abc.rollback.json.partial").symlink_to(victim)
    write_point(path)
    assert victim.read_text() == "keep me"
    assert not path.is_symlink() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["before"] == TAKEN
    left = sorted(entry.name for entry in directory.iterdir())
    assert left == ["shop.abc.rollback.json", "shop.abc.rollback.json.partial"]  # ours gone


def test_the_point_is_not_written_into_an_unsafe_directory(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o777)
    with pytest.raises(PermissionError):
        write_point(directory / "shop.abc.rollback.json")
    assert list(directory.iterdir()) == []


@pytest.mark.parametrize("module", [lock, snapshot])
def test_root_accepts_a_lock_directory_of_a_docker_group_member(
    tmp_path: Path, module: Any
) -> None:
    """The unit's StateDirectory belongs to the service user, a member of the docker group (who
    controls the host through the daemon anyway): root's `update-executor rollback` and manual
    runs use it. Any other user's directory stays refused, and a non-root user never gets this."""
    directory = tmp_path / "locks"
    directory.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(directory, 12345, -1)
    owner = directory.stat().st_uid
    module.check_directory(str(directory), uid=0, root_equivalent={owner})
    with pytest.raises(PermissionError, match="belongs to uid"):
        module.check_directory(str(directory), uid=0, root_equivalent=set())
    with pytest.raises(PermissionError, match="belongs to uid"):
        module.check_directory(str(directory), uid=owner + 1, root_equivalent={owner})


def test_the_docker_group_members_are_read_from_the_group_database() -> None:
    dirs = sys.modules["ansible.module_utils.update_executor_dirs"]
    assert dirs.docker_group_uids("no-such-group-here") == set()
    assert dirs.trusted_owner(0, 1000, set()) and dirs.trusted_owner(1000, 1000, set())
    assert not dirs.trusted_owner(1001, 1000, {1001})  # only root may trust docker members
