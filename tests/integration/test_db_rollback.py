"""A rollback puts the database back too (issue 23), on Debian's PostgreSQL 15 and the Alembic
app of testbed/dbimages.py, through the playbook as an operator runs it (testbed/faults.py:
the worker's settings as the inventory's group_vars, the worker passes the same variables).

The api service carries a post-update hook that always fails (`false`): an update whose
migration succeeds is then rolled back after it. One compose project for the module; each
test starts from v1 (its schema, two rows, healthy) and the images are shared.

- v1 -> v2, migration done, hook fails: the new image downgrades to v1's revision, then v1's
  image comes back: `alembic current` is v1's, v2's column is gone, the rows are intact.
- v1 -> v3, whose revision fails half-way: the same (v3's committed first statement stays:
  Alembic never recorded it, docs/operations.md says how to write such a revision).
- A downgrade that fails, v1 -> v4 (v4's revision has no downgrade(): Alembic fails with
  "no attribute 'downgrade'"), with downgrade-then-restore and a backup: restored from the
  dump; with downgrade only: THE DATABASE WAS NOT PUT BACK, the new version left running, the
  next update refused, and once the operator has undone v4's revision by hand (its column
  dropped, `alembic stamp` to v2's revision) `rollback.yml` (what `update-executor rollback`
  runs) downgrades the rest and puts v1 back.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed import Stack
from testbed.containers import containers
from testbed.dbimages import (
    API_SERVICE,
    REVISIONS,
    DbProject,
    add_post_update_hook,
    build_app_image,
    build_db_image,
    publish_version,
    write_db_project,
)
from testbed.faults import REPO_ROOT, PlaybookRun, operator_run, run_playbook
from testbed.images import image_id_of
from testbed.procs import wait_until
from tests.integration.conftest import SESSION_TAG
from worker.host.recovery import ansible_processes_of, end_process_groups

pytestmark = pytest.mark.timeout(900)
ROWS = [["1", "apple"], ["2", "pear"]]
REPO = f"t{SESSION_TAG}/dbrollback"
# What Alembic says when a revision to undo has no downgrade() (v4's).
NO_DOWNGRADE = "has no attribute 'downgrade'"


@dataclass
class Site:
    project: DbProject
    env: dict[str, str]
    v1: str
    base: Path

    def run(
        self, *args: str, playbook: str = "playbooks/update.yml", **settings: str
    ) -> PlaybookRun:
        key = "update_executor_rollback" if playbook.endswith("rollback.yml") else "update_executor"
        began = time.monotonic()
        done = run_playbook(
            {**self.env, **settings}, *args, playbook=playbook, report_key=key, timeout=600
        )
        print(f"{playbook} {' '.join(args)} {settings}: {time.monotonic() - began:.1f} s")
        return done

    def api_image(self) -> str:
        return containers(self.project.stack, self.project.project)[API_SERVICE].image_id

    def items(self) -> list[list[str]]:
        return self.project.psql("SELECT id, name FROM items ORDER BY id")

    def reset(self) -> None:
        """v1 running at v1's schema with the two rows; no lock or rollback point."""
        stack = self.project.stack
        stack.docker("tag", self.v1, self.project.app_image)
        self.project.compose("up", "-d", "--wait", API_SERVICE)
        for leftover in (self.base / "locks").glob("*"):
            leftover.unlink()
        assert self.project.current_revision() == REVISIONS[1]
        assert self.project.columns("items") == ["id", "name"]
        assert self.items() == ROWS


def wait_endpoint(project: DbProject, wanted: tuple[int, str], timeout: float = 60.0) -> None:
    """Wait until api's GET /health answers `wanted` (a loaded machine may time a request out)."""
    seen: list[object] = []

    def answered() -> bool:
        try:
            seen.append(project.health_endpoint())
        except OSError as exc:
            seen.append(exc)
        return seen[-1] == wanted

    try:
        wait_until(answered, what=f"/health {wanted}", timeout=timeout, interval=0.3)
    except Exception as exc:
        raise AssertionError(f"{exc}; last answers {seen[-3:]}") from exc


def assert_back_at_v1(site: Site, run: PlaybookRun) -> None:
    """What a user checks after the rollback: v1's image, revision, schema, rows, health."""
    assert run.returncode != 0, run.explain()
    assert run.report["rolled_back"] is True, run.explain()
    assert run.report["rollback_error"] is None, run.explain()
    assert site.api_image() == site.v1
    assert site.project.current_revision() == REVISIONS[1]
    assert "note" not in site.project.columns("items")
    assert site.items() == ROWS
    site.project.wait_health("healthy")
    wait_endpoint(site.project, (200, f"ok {REVISIONS[1]}\n"))
    assert list((site.base / "locks").glob("*.rollback.json")) == []


@pytest.fixture(scope="module")
def module_site(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    began = time.monotonic()
    build_db_image(stack)
    for version in (1, 2, 3, 4):
        build_app_image(stack, version, repo=REPO)
    print(f"images {time.monotonic() - began:.1f} s")
    base = tmp_path_factory.mktemp("db-rollback")
    project = write_db_project(stack, base / "site", f"dbrb{SESSION_TAG}", repo=REPO)
    # Every update of this site fails after its migration: the post-update hook exits 1.
    add_post_update_hook(project, "false")
    project.compose("up", "-d")  # api is unhealthy until its schema is migrated
    project.migrate()
    project.wait_health("healthy")
    project.psql("INSERT INTO items (name) VALUES ('apple'), ('pear')")
    token_file = base / "registry-token"
    token_file.write_text(stack.registry_password)
    token_file.chmod(0o600)
    env = {
        **stack.env(),
        "COMPOSE_FILE_PATH": str(project.compose_file),
        "COMPOSE_PROJECT_NAME": project.project,
        "REGISTRY_URL": stack.registry,
        "REGISTRY_USERNAME": stack.registry_username,
        "GITHUB_TOKEN_FILE": str(token_file),
        "UPDATE_SERVICES": API_SERVICE,
        "MIGRATION_SERVICE": API_SERVICE,
        "MIGRATION_COMMAND": "alembic upgrade head",
        "HEALTH_TIMEOUT": "240",
        "UPDATE_LOCK_DIR": str(base / "locks"),
        "BACKUP_DIR": str(base / "backups"),
    }
    v1 = image_id_of(stack, project.app_image)
    assert v1 is not None
    print(f"module set-up {time.monotonic() - began:.1f} s")
    yield Site(project, env, v1, base)
    project.compose("down", "--volumes", "--timeout", "2", check=False)


@pytest.fixture
def site(module_site: Site) -> Site:
    module_site.reset()
    return module_site


def test_a_failed_post_update_hook_downgrades_the_database_before_the_images_go_back(
    site: Site,
) -> None:
    v2 = publish_version(site.project.stack, 2, repo=REPO)

    run = site.run()

    assert run.report["services"][API_SERVICE]["after"]["image_id"] == v2, run.explain()
    assert run.report["migrations"]["rc"] == 0
    assert run.report["rollback_cause"]["step"] == "Post-update"
    assert run.report["database"] == {
        "mode": "downgrade",
        "revision_before": REVISIONS[1],
        "revision_after": REVISIONS[1],
        "action": "downgraded",
        "message": None,
    }, run.explain()
    assert (
        f"The database was put back at revision {REVISIONS[1]} (downgraded)."
        in (run.failures[-1][1])
    )
    assert_back_at_v1(site, run)


def test_a_migration_that_fails_half_way_is_downgraded_and_rolled_back(site: Site) -> None:
    publish_version(site.project.stack, 3, repo=REPO)

    run = site.run()

    assert run.report["rollback_cause"]["step"] == "Migrations", run.explain()
    assert 'column "notes" does not exist' in run.report["migrations"]["output_tail"]
    assert run.report["database"]["action"] == "downgraded", run.explain()
    assert_back_at_v1(site, run)
    # v3's first statement was committed and never recorded: no downgrade can see it.
    assert site.project.columns("items") == ["id", "name", "priority"]
    site.project.psql("ALTER TABLE items DROP COLUMN priority")


def test_a_failing_downgrade_restores_the_backup_when_allowed(site: Site) -> None:
    v4 = publish_version(site.project.stack, 4, repo=REPO)

    run = site.run(
        "-e",
        "compose_update_create_backup=true",
        DB_ROLLBACK="downgrade-then-restore",
        BACKUP_COMMAND="pg_dump -U app -Fc app",
        BACKUP_SERVICE="db",
        RESTORE_COMMAND="pg_restore -U app -d app --clean --if-exists --single-transaction",
    )

    assert run.report["services"][API_SERVICE]["after"]["image_id"] == v4, run.explain()
    database = run.report["database"]
    assert database["action"] == "restored", run.explain()
    assert database["revision_after"] == REVISIONS[1]
    backup = run.report["backup"]["path"]
    assert backup and Path(backup).is_file()
    assert f"Restored from the backup {backup}" in database["message"]
    assert "every write to the database after that backup" in database["message"]
    assert NO_DOWNGRADE in database["message"]
    assert_back_at_v1(site, run)
    assert site.project.columns("items") == ["id", "name"]  # v2's and v4's columns are gone


def test_a_failing_downgrade_without_a_backup_stops_and_refuses_the_next_update(
    site: Site,
) -> None:
    v4 = publish_version(site.project.stack, 4, repo=REPO)

    run = site.run()

    assert run.returncode != 0
    assert run.report["rolled_back"] is False, run.explain()
    assert run.report["database"]["action"] == "failed"
    assert run.report["database"]["revision_after"] == REVISIONS[4]
    error = run.report["rollback_error"]
    assert error.startswith(
        f"THE DATABASE WAS NOT PUT BACK: it is at revision {REVISIONS[4]}, not {REVISIONS[1]}"
    ), run.explain()
    assert NO_DOWNGRADE in error
    # The exact commands: the configured downgrade with the recorded revision, then the rollback.
    assert f"exec -T api alembic downgrade {REVISIONS[1]}" in error
    assert "update-executor rollback" in error
    assert "THE DATABASE WAS NOT PUT BACK" in run.failures[-1][1]
    # The new version stays (its code matches the schema), the rows too; the point is kept.
    assert site.api_image() == v4
    assert site.project.current_revision() == REVISIONS[4]
    assert site.project.columns("items") == ["id", "name", "note", "tags"]
    assert site.items() == ROWS
    assert len(list((site.base / "locks").glob("*.rollback.json"))) == 1

    refused = site.run()
    assert refused.returncode != 0
    assert "was cut off before it finished" in refused.failure_text, refused.explain()
    assert site.api_image() == v4

    # What `update-executor rollback` runs: the rollback point's revision and commands.
    check = site.run("--check", playbook="playbooks/rollback.yml")
    assert check.returncode == 0, check.explain()
    assert site.api_image() == v4
    # The operator undoes v4's revision by hand, then the rollback downgrades v2's with v4's image.
    site.project.psql("ALTER TABLE items DROP COLUMN tags")
    site.project.alembic("stamp", REVISIONS[2])
    finished = site.run(playbook="playbooks/rollback.yml")
    assert finished.returncode == 0, finished.explain()
    assert finished.report["database"]["action"] == "downgraded", finished.explain()
    assert finished.report["database"]["revision_after"] == REVISIONS[1]
    assert site.api_image() == site.v1
    assert site.project.current_revision() == REVISIONS[1]
    assert "note" not in site.project.columns("items")
    assert site.items() == ROWS
    assert list((site.base / "locks").glob("*.rollback.json")) == []


def test_an_update_cut_off_after_its_migration_is_downgraded_by_the_rollback(site: Site) -> None:
    """Killed after `alembic upgrade head` (as the worker's start-up recovery ends an orphaned
    run), then `rollback.yml` (what the worker runs at start): the rollback point's revision
    is put back with the new image before the old one returns."""
    v2 = publish_version(site.project.stack, 2, repo=REPO)
    env = {**site.env, "MIGRATION_COMMAND": "sh -c 'alembic upgrade head && exec sleep 600'"}
    inventory, shell = operator_run(env)
    cut = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
            "playbooks/update.yml", "-e", '{"compose_update_job_id":"cutoff23"}',
        ],
        cwd=REPO_ROOT, env=shell, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_until(
            lambda: (
                cut.poll() is None
                and site.project.psql("SELECT version_num FROM alembic_version") == [[REVISIONS[2]]]
            ),
            what="the migration to v2 under the cut-off run",
            timeout=300,
            interval=0.3,
        )
    finally:
        end_process_groups(ansible_processes_of("cutoff23"))
        cut.wait(timeout=60)
    assert site.api_image() == v2
    point = next((site.base / "locks").glob("*.rollback.json"))
    assert json.loads(point.read_text())["database"]["revision_before"] == REVISIONS[1]

    rollback = site.run(playbook="playbooks/rollback.yml")

    assert rollback.returncode == 0, rollback.explain()
    assert rollback.report["rolled_back"] is True, rollback.explain()
    assert rollback.report["database"]["action"] == "downgraded"
    assert rollback.report["database"]["revision_after"] == REVISIONS[1]
    assert not point.exists()
    assert site.api_image() == site.v1
    assert site.project.current_revision() == REVISIONS[1]
    assert "note" not in site.project.columns("items")
    assert site.items() == ROWS
    site.project.wait_health("healthy")
    wait_endpoint(site.project, (200, f"ok {REVISIONS[1]}\n"))
