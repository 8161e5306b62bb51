"""update_backup's backup and restore commands (library/update_backup.py), run without Docker:
the outcomes a user reads in the summary (file, size, rc, error) for each way a command ends."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .playbook_code import load

backup = load("library/update_backup")
NOW = 1_700_000_000.0


NOTHING = "the backup command succeeded but wrote nothing to its standard output"


@pytest.mark.parametrize(
    ("argv", "timeout", "expected"),
    [
        (["sh", "-c", "printf dump"], 10, (4, 0, None)),
        (["sh", "-c", "echo oops >&2; exit 3"], 10, (None, 3, "the backup command failed (rc 3)")),
        (["true"], 10, (None, 0, NOTHING)),
        (["sleep", "5"], 0.2, (None, None, "the backup command did not finish within 0 s")),
    ],
)
def test_a_backup_command_ends(
    tmp_path: Path,
    argv: list[str],
    timeout: float,
    expected: tuple[int | None, int | None, str | None],
) -> None:
    path, got_size, got_rc, _stderr, got_error = backup.run_backup(
        argv, str(tmp_path / "backups"), "proj", "db", NOW, timeout, str(tmp_path)
    )
    size, rc, error = expected
    assert (got_size, got_rc, got_error) == (size, rc, error)
    assert (path is not None) == (error is None)
    left = sorted(os.listdir(tmp_path / "backups"))
    assert left == ([os.path.basename(path)] if path else [])  # no partial file is left
    if path:
        assert Path(path).read_bytes() == b"dump"
        assert Path(path).stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize(
    ("argv", "rc", "error"),
    [
        (["sh", "-c", 'test "$(cat)" = dump'], 0, None),
        (["sh", "-c", "cat >/dev/null; exit 4"], 4, "the restore command failed (rc 4)"),
    ],
)
def test_a_restore_command_reads_the_backup(
    tmp_path: Path, argv: list[str], rc: int, error: str | None
) -> None:
    source = tmp_path / "dump"
    source.write_bytes(b"dump")
    got_rc, _stderr, got_error = backup.run_restore(argv, str(source), 10, str(tmp_path))
    assert (got_rc, got_error) == (rc, error)
