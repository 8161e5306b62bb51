"""Faults handled by the playbook itself, run by hand with `ansible-playbook` on the real stack:
automatic rollback (unhealthy, crash, failed migration, failed rollback), a missing tag, a
registry down during the pull, the backup before the pull, and the per-project lock (held,
stale).

One deployment serves the whole module: every test starts from the state the one before left
(each asserts what it needs). The tests that leave a new version running come last.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from testbed import (
    Stack,
    TestBed,
    build_app_image,
    container_ids,
    containers,
    delete_from_registry,
    http_get,
    image_id_of,
    registry_image_id,
    running_image_ids,
    service_url,
    write_sample_project,
)
from testbed.faults import (
    REPO_ROOT,
    PlaybookRun,
    dead_pid,
    lock_path,
    operator_run,
    rollback_point_path,
    run_playbook,
    write_lock,
)
from testbed.procs import pids_mentioning
from testbed.siteenv import playbook_environment
from testbed.stack import CommandError
from tests.integration.conftest import SESSION_TAG
from worker.host.recovery import ansible_processes_of, end_process_groups

APP, FRONTEND = "pf/app", "pf/frontend"
PROJECT = "uepf"
# The cut-off run's job id: ending "its" ansible processes must not reach those of another
# session on the machine (another checkout's, another xdist process').
CUTOFF_JOB = f"cutoff{SESSION_TAG}"


@dataclass
class Site:
    stack: Stack
    compose_file: Path
    lock_dir: Path
    backup_dir: Path
    env: dict[str, str]
    version: int = 1

    @property
    def app_ref(self) -> str:
        return f"{self.stack.registry}/{APP}:latest"

    @property
    def lock_file(self) -> Path:
        return lock_path(self.stack, self.lock_dir, PROJECT)

    def images(self) -> dict[str, str]:
        return running_image_ids(self.stack, PROJECT)

    def containers(self) -> dict[str, str]:
        return container_ids(self.stack, PROJECT)

    def local_app_image(self) -> str | None:
        return image_id_of(self.stack, self.app_ref)

    def publish(self, behaviour: str = "healthy") -> str:
        """Push the next app version to the registry only; return its image ID."""
        self.version += 1
        build_app_image(self.stack, APP, str(self.version), behaviour, registry_only=True)
        return registry_image_id(self.stack, APP)

    def run(self, *args: str, **env: str) -> PlaybookRun:
        result = run_playbook({**self.env, **env}, *args)
        # Nothing left behind: no lock, no ansible-playbook or compose process of this project.
        assert not self.lock_file.exists(), result.explain()
        assert pids_mentioning(str(self.compose_file.parent)) == []
        return result

    def api_version(self) -> str:
        return http_get(service_url(self.stack, f"{PROJECT}-api") + "/version")

    def assert_healthy(self, expected_images: dict[str, str]) -> None:
        now = containers(self.stack, PROJECT)
        assert {name: c.image_id for name, c in now.items()} == expected_images
        for name in ("api", "frontend", "db"):
            assert now[name].health == "healthy", (name, now[name])
        for name in ("worker", "cache"):
            assert now[name].state == "running", (name, now[name])


@pytest.fixture(scope="module")
def site(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("faults")
    build_app_image(stack, APP, "1")
    build_app_image(stack, FRONTEND, "1")
    compose_file = write_sample_project(
        stack, base / PROJECT, PROJECT, app_repo=APP, frontend_repo=FRONTEND
    )
    stack.compose(compose_file, PROJECT, "up", "-d", "--wait")
    token_file = base / "registry-token"
    token_file.write_text(stack.registry_password)
    token_file.chmod(0o600)
    env = {
        **os.environ,
        **playbook_environment(
            stack,
            compose_file=compose_file,
            project=PROJECT,
            token_file=token_file,
            lock_dir=base / "locks",
        ),
        "BACKUP_DIR": str(base / "backups"),
    }
    for name in (
        "ROLLBACK_ON_MIGRATION_FAILURE",
        "BACKUP_COMMAND",
        "BACKUP_SERVICE",
        "JOB_TIMEOUT",
    ):
        env.pop(name, None)
    yield Site(stack, compose_file, base / "locks", base / "backups", env)
    stack.compose(compose_file, PROJECT, "down", "--volumes", "--timeout", "1", check=False)


def failed_tasks(run: PlaybookRun) -> list[str]:
    return [task for task, _message in run.failures]


def assert_rolled_back(run: PlaybookRun, restored: dict[str, str], *, step: str) -> None:
    report = run.report
    assert run.returncode != 0, run.explain()
    assert report["rolled_back"] is True, run.explain()
    assert report["rollback_error"] is None
    assert report["rollback_cause"]["step"] == step
    assert report["rollback_cause"]["message"] == run.failures[0][1]
    for name, entry in report["rollback"].items():
        if name in restored:
            assert entry["image_id"] == restored[name], run.explain()
            assert entry["action"] == "restored"
        else:
            assert entry is None, (name, entry)
    # The play fails in the step that failed (the worker reports that step), and says so.
    assert failed_tasks(run)[0].startswith(f"{step} | ")
    assert failed_tasks(run)[-1] == f"{step} | Fail the update after rolling back what it changed"
    assert "Rolled back: " in run.failures[-1][1]


def test_a_held_lock_stops_a_second_run_at_once(site: Site) -> None:
    site.publish()  # pending for this test and the next two: none of them may pull it
    before_images, before_containers = site.images(), site.containers()
    local = site.local_app_image()
    holder = write_lock(
        site.lock_file,
        project=PROJECT,
        pid=os.getpid(),  # alive: this test
        holder_id="update-executor job held-1 for admin",
        job_id="held-1",
    )
    try:
        run = run_playbook(site.env)
        assert run.returncode != 0
        assert failed_tasks(run) == ["Lock | Take the update lock of the compose project"]
        message = run.failures[0][1]
        assert "update-executor job held-1 for admin" in message
        assert f"pid {os.getpid()}" in message
        assert str(site.lock_file) in message
        assert run.report["lock"]["acquired"] is False
        assert run.report["lock"]["holder"]["id"] == "update-executor job held-1 for admin"
        assert run.report["lock"]["holder"]["pid"] == os.getpid()
        # stopped before the snapshot: nothing was looked at
        assert all(entry["before"] is None for entry in run.report["services"].values())
        # The other run's lock is left alone, and nothing changed.
        assert site.lock_file.exists()
        assert '"token": "' + holder["token"] in site.lock_file.read_text()
        assert site.containers() == before_containers
        assert site.images() == before_images
        assert site.local_app_image() == local  # not even pulled
    finally:
        site.lock_file.unlink(missing_ok=True)


def test_create_backup_without_a_command_fails_in_preflight(site: Site) -> None:
    before = site.containers()
    run = site.run("-e", "compose_update_create_backup=true")
    assert run.returncode != 0
    assert failed_tasks(run) == ["Preflight | Fail when a check failed"]
    assert "BACKUP_COMMAND" in run.failures[0][1]
    assert run.report["backup"] == {"ran": False, "path": None, "size_bytes": None, "rc": None}
    assert site.containers() == before


def test_a_failing_backup_stops_the_update_before_the_pull(site: Site) -> None:
    assert site.local_app_image() != registry_image_id(site.stack, APP)  # a new version waits
    before_images, before_containers = site.images(), site.containers()
    local = site.local_app_image()
    command = "sh -c 'echo half a dump; echo disk full >&2; exit 4'"
    run = site.run("-e", "compose_update_create_backup=true", BACKUP_COMMAND=command)
    assert run.returncode != 0
    assert (
        failed_tasks(run)[0] == "Backup | Back up with the backup command before anything is pulled"
    )
    assert "disk full" in run.failures[0][1]
    assert run.report["backup"] == {"ran": True, "path": None, "size_bytes": None, "rc": 4}
    assert run.report["rolled_back"] is False
    assert run.report["rollback_cause"]["step"] == "Backup"
    assert "No container was changed" in run.failures[-1][1]
    assert list(site.backup_dir.iterdir()) == []  # the partial file is gone
    assert site.containers() == before_containers
    assert site.images() == before_images
    assert site.local_app_image() == local


def test_a_missing_tag_fails_at_pull_and_recreates_nothing(site: Site) -> None:
    assert delete_from_registry(site.stack, APP)
    before_images, before_containers = site.images(), site.containers()
    run = site.run()
    assert run.returncode != 0
    assert failed_tasks(run)[0] == "Pull | Pull the images of the target services"
    assert failed_tasks(run)[-1] == "Pull | Fail the update after rolling back what it changed"
    assert run.report["rolled_back"] is False
    assert all(entry is None for entry in run.report["rollback"].values())
    assert site.containers() == before_containers
    assert site.images() == before_images


def test_a_registry_down_during_the_pull_fails_at_pull_and_recreates_nothing(
    site: Site, bed: TestBed
) -> None:
    """Public images need no login (GHCR serves them anonymously), so with no token the pull is
    the first thing that talks to the registry: down, it fails there, with docker's reason."""
    site.publish()  # a new version the pull would fetch, were the registry up
    before_images, before_containers = site.images(), site.containers()
    bed.stop_registry()
    try:
        run = site.run(GITHUB_TOKEN_FILE="")
    finally:
        bed.start_registry()
    assert run.returncode != 0
    assert failed_tasks(run)[0] == "Pull | Pull the images of the target services"
    assert "connection refused" in run.failures[0][1], run.explain()
    assert run.report["rolled_back"] is False
    assert site.containers() == before_containers
    assert site.images() == before_images
    assert site.local_app_image() == before_images["api"]


def test_a_run_cut_off_mid_recreate_is_refused_until_rollback_yml_restores_the_site(
    site: Site,
) -> None:
    """An operator's run killed mid-recreate (as a lost SSH session or `kill` would) leaves
    its rollback point; the next update refuses to run over the half-updated site; rollback.yml
    puts the previous version back and removes the point."""
    before = site.images()
    original = site.compose_file.read_text()
    # The new version never becomes healthy and a long start_period keeps compose waiting.
    site.compose_file.write_text(
        original.replace("      retries: 3\n", "      retries: 3\n      start_period: 300s\n")
    )
    try:
        new_app = site.publish("unhealthy")
        inventory, shell = operator_run(site.env)
        command = [
            str(Path(sys.executable).parent / "ansible-playbook"),
            "-i",
            str(inventory),
            "playbooks/update.yml",
            "-e",
            json.dumps(
                {
                    "compose_update_job_id": CUTOFF_JOB,
                    "compose_update_services": "api",
                    "compose_update_run_migrations": False,
                },
                separators=(",", ":"),
            ),
        ]
        cut = subprocess.Popen(  # a session of its own, as an operator's shell gives it
            command,
            cwd=REPO_ROOT,
            env=shell,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 120
        while True:
            # A container may go away between docker's list and inspect while compose recreates.
            with contextlib.suppress(CommandError):
                if site.images().get("api") == new_app:
                    break
            assert time.monotonic() < deadline and cut.poll() is None, "never got to recreate"
            time.sleep(0.2)
        end_process_groups(ansible_processes_of(CUTOFF_JOB))  # what a killed worker's restart does
        cut.wait(timeout=30)
        point = rollback_point_path(site.stack, site.lock_dir, PROJECT)
        assert point.exists()
        assert json.loads(point.read_text())["before"]["api"]["image_id"] == before["api"]

        refused = site.run()
        assert refused.returncode != 0
        assert failed_tasks(refused) == ["Lock | Take the update lock of the compose project"]
        assert "was cut off before it finished" in refused.failures[0][1]
        assert "playbooks/rollback.yml" in refused.failures[0][1]
        # The dead run's lock was broken on the way (and the refused run let go of its own).
        assert any("Broke a stale update lock" in w for w in refused.warnings), refused.explain()
        assert site.images()["api"] == new_app  # refused: nothing changed

        rollback = run_playbook(
            site.env, playbook="playbooks/rollback.yml", report_key="update_executor_rollback"
        )
        assert rollback.returncode == 0, rollback.explain()
        report = rollback.report
        assert report["found"] is True and report["finished"] is True
        assert report["job_id"] == CUTOFF_JOB
        assert report["rolled_back"] is True, rollback.explain()
        assert report["rollback"]["api"] == {
            "image_id": before["api"],
            "health": "healthy",
            "action": "restored",
        }
        assert not point.exists()
        assert not site.lock_file.exists()
        site.assert_healthy(before)

        # Nothing left to roll back: a second run changes nothing.
        again = run_playbook(
            site.env, playbook="playbooks/rollback.yml", report_key="update_executor_rollback"
        )
        assert again.returncode == 0, again.explain()
        assert again.report["found"] is False
        site.assert_healthy(before)
    finally:
        site.compose_file.write_text(original)


def test_an_unhealthy_new_version_is_rolled_back(site: Site) -> None:
    new = site.publish("unhealthy")
    before_images, before_containers = site.images(), site.containers()
    run = site.run()
    # init_db ran the new image (exit 0), then api never became healthy.
    assert "unhealthy" in run.failures[0][1], run.explain()
    services = run.report["services"]
    assert services["api"]["after"]["image_id"] == new
    assert services["api"]["health"] == "unhealthy"
    assert_rolled_back(
        run,
        {name: before_images[name] for name in ("api", "worker", "init_db")},
        step="Recreate",
    )
    assert run.report["rollback"]["api"]["health"] == "healthy"
    assert run.report["rollback"]["worker"]["health"] == "running"
    # The one-shot job is put back with its old image but not run again.
    assert run.report["rollback"]["init_db"]["health"] == "exited"
    assert containers(site.stack, PROJECT)["init_db"].state == "created"
    site.assert_healthy(before_images)
    assert site.containers()["api"] != before_containers["api"]  # recreated, old image
    assert site.containers()["frontend"] == before_containers["frontend"]  # unchanged: untouched
    assert site.local_app_image() == before_images["api"]  # the tag is back on the old image
    assert site.api_version() == "1"


def test_a_crash_at_start_is_rolled_back(site: Site) -> None:
    new = site.publish("crash")
    before_images = site.images()
    run = site.run("-e", "compose_update_services=api,worker")
    assert "exited" in run.failures[0][1], run.explain()
    assert run.report["services"]["api"]["after"]["image_id"] == new
    assert_rolled_back(
        run, {name: before_images[name] for name in ("api", "worker")}, step="Recreate"
    )
    site.assert_healthy(before_images)
    assert site.api_version() == "1"


def test_a_failed_migration_is_rolled_back(site: Site) -> None:
    new = site.publish("migrate_fail")
    before_images = site.images()
    run = site.run("-e", "compose_update_services=api,worker")
    assert run.report["services"]["api"]["after"]["image_id"] == new
    assert run.report["services"]["api"]["health"] == "healthy"
    migrations = run.report["migrations"]
    assert (migrations["ran"], migrations["rc"]) == (True, 3)
    assert "already exists" in migrations["output_tail"]
    assert_rolled_back(
        run, {name: before_images[name] for name in ("api", "worker")}, step="Migrations"
    )
    site.assert_healthy(before_images)


def test_a_failed_rollback_reports_both_failures_and_the_commands(site: Site) -> None:
    # The running version is broken itself (unhealthy), so putting it back cannot end healthy.
    site.version += 1
    build_app_image(site.stack, APP, str(site.version), "unhealthy", push=False)
    site.stack.compose(site.compose_file, PROJECT, "up", "-d", "--no-deps", "api")
    broken = site.images()
    site.publish("crash")
    run = site.run("-e", "compose_update_services=api")
    assert run.returncode != 0
    report = run.report
    assert report["rolled_back"] is False
    # Both failures: the crash that caused the rollback, and why the rollback failed.
    assert report["rollback_cause"]["step"] == "Recreate"
    assert "exited" in report["rollback_cause"]["message"]
    assert "unhealthy" in report["rollback_error"], run.explain()
    assert report["rollback"]["api"]["image_id"] == broken["api"]  # it is back, though unhealthy
    last = run.failures[-1][1]
    assert "exited" in last  # the first failure: the crash
    assert "THE ROLLBACK FAILED TOO" in last
    assert f"export DOCKER_HOST={site.stack.docker_host} ; " in last  # the bed's daemon
    assert f"docker image tag {broken['api']} {site.app_ref}" in last
    assert "up -d --no-deps --pull never --no-build --wait api" in last
    # Put the healthy v1 back for the next tests, as an operator would.
    v1 = broken["worker"]
    site.stack.docker("tag", v1, site.app_ref)
    site.stack.compose(site.compose_file, PROJECT, "up", "-d", "--no-deps", "--wait", "api")
    site.assert_healthy({**broken, "api": v1})


def test_a_failed_rollback_keeps_the_rollback_point_until_it_is_resolved(site: Site) -> None:
    """Issue 13: after the failed rollback above the rollback point stays, so the next update
    refuses to run over the half-updated site, as after a cut-off run; the operator who put the
    site right by hand (end of the test above) removes it, as the message says."""
    point = rollback_point_path(site.stack, site.lock_dir, PROJECT)
    assert point.exists()
    refused = site.run()
    assert refused.returncode != 0
    assert failed_tasks(refused) == ["Lock | Take the update lock of the compose project"]
    assert str(point) in refused.failures[0][1]
    assert "playbooks/rollback.yml" in refused.failures[0][1]
    point.unlink()


def test_a_stale_lock_is_broken_and_the_update_runs_after_a_backup(site: Site) -> None:
    new = site.publish()
    dead = dead_pid()
    write_lock(site.lock_file, project=PROJECT, pid=dead, holder_id="update-executor job gone")
    backup_command = "sh -c 'echo \"-- dump of the db\"; cat /www/version'"
    run = site.run(
        "-e",
        "compose_update_create_backup=true",
        "-e",
        "compose_update_services=api,worker",
        BACKUP_COMMAND=backup_command,
        BACKUP_SERVICE="db",
    )
    assert run.returncode == 0, run.explain()
    lock = run.report["lock"]
    assert lock["acquired"] is True
    assert lock["broke_stale"]["id"] == "update-executor job gone"
    assert lock["broke_stale"]["reason"] == f"pid {dead} is not running on {os.uname().nodename}"
    assert lock["holder"]["id"].startswith("ansible-playbook by ")
    assert any("Broke a stale update lock" in warning for warning in run.warnings)
    backup = run.report["backup"]
    path = Path(backup["path"])
    assert path.parent == site.backup_dir
    assert re.fullmatch(rf"{PROJECT}-db-\d{{8}}T\d{{6}}Z\.backup", path.name)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().splitlines()[-1] == "1"  # db's /www/version
    assert path.read_text().startswith("-- dump of the db\n")
    assert backup["size_bytes"] == path.stat().st_size
    assert backup["rc"] == 0
    assert run.report["rolled_back"] is False
    assert run.report["rollback_cause"] is None
    images = site.images()
    assert images["api"] == images["worker"] == new
    assert site.api_version() == str(site.version)


def test_without_rollback_on_migration_failure_the_new_version_stays(site: Site) -> None:
    new = site.publish("migrate_fail")
    run = site.run(
        "-e", "compose_update_services=api,worker", ROLLBACK_ON_MIGRATION_FAILURE="false"
    )
    assert run.returncode != 0
    assert failed_tasks(run)[0] == "Migrations | Run the migration command in the migration service"
    assert "rollback_on_migration_failure is false" in run.failures[-1][1]
    report: dict[str, Any] = run.report
    assert report["rolled_back"] is False
    assert report["rollback_error"] is None
    assert all(entry is None for entry in report["rollback"].values())
    assert report["migrations"]["rc"] == 3
    images = site.images()
    assert images["api"] == images["worker"] == new
    assert containers(site.stack, PROJECT)["api"].health == "healthy"
