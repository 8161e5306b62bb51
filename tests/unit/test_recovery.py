from pathlib import Path

from worker.host.recovery import remove_stale_job_dirs


def test_stale_job_dirs_are_removed_and_nothing_else(tmp_path: Path) -> None:
    stale = tmp_path / "ue-job-abc123"
    (stale / "update-executor-x").mkdir(parents=True)
    (stale / "update-executor-x" / "config.json").write_text('{"auths": {"r": {"auth": "x"}}}')
    other = tmp_path / "ue-run-keep"
    other.mkdir()
    unrelated_file = tmp_path / "ue-job-file"
    unrelated_file.write_text("not a dir")

    assert remove_stale_job_dirs(tmp_path) == [stale]
    assert not stale.exists()
    assert other.exists()
    assert unrelated_file.exists()
