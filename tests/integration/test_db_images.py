"""The test bed's real database parts (issue 23, testbed/dbimages.py): Debian's PostgreSQL 15
and an app with Alembic, SQLAlchemy and psycopg2 from Debian's packages, three versions.

What a user checks by hand: the app's health follows the schema (200 only at the head its
code expects), `alembic upgrade head` through `docker compose exec api` brings it there and
keeps the rows, `alembic downgrade` from the newer image puts the older schema back, and v3's
half-failing revision leaves its first statement applied and alembic_version where it was:
the in-between schema that a rollback of the database will have to undo. The db image's
tools (pg_dump, pg_restore, psql, run as postgres) are checked on that state too.

Three images a module (db, app v1-v3: ~35 s with the import of the cached rootfs, built by
debootstrap once per machine, ~3 min), one compose project per test (~15 s up to v1).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import Stack
from testbed.containers import containers
from testbed.dbimages import (
    API_SERVICE,
    DB_SERVICE,
    REVISIONS,
    DbProject,
    build_app_image,
    build_db_image,
    publish_version,
    write_db_project,
)
from testbed.images import image_id_of
from testbed.procs import wait_until
from tests.integration.conftest import SESSION_TAG

pytestmark = pytest.mark.timeout(600)
ROWS = [["1", "apple"], ["2", "pear"]]
_projects = itertools.count(1)


@pytest.fixture(scope="module")
def app_images(stack: Stack) -> Iterator[dict[int, str]]:
    """The db image and the app at versions 1, 2, 3 (a repository of this session's)."""
    began = time.monotonic()
    build_db_image(stack)
    db_built = time.monotonic()
    refs = {v: build_app_image(stack, v, repo=f"t{SESSION_TAG}/dbapp") for v in (1, 2, 3)}
    done = time.monotonic()
    print(f"db image (with the base import) {db_built - began:.1f} s, apps {done - db_built:.1f} s")
    yield refs


@pytest.fixture
def site(stack: Stack, app_images: dict[int, str], tmp_path: Path) -> Iterator[DbProject]:
    """{db, api at v1} up, v1's migration run, two rows written."""
    project = write_db_project(
        stack, tmp_path, f"db{SESSION_TAG}n{next(_projects)}", repo=f"t{SESSION_TAG}/dbapp"
    )
    project.compose("up", "-d")
    try:
        # Before the migration the app refuses to be healthy: no alembic_version yet.
        wait_endpoint(project, 503, "schema none, code expects " + REVISIONS[1])
        project.migrate()
        project.wait_health("healthy")
        project.psql("INSERT INTO items (name) VALUES ('apple'), ('pear')")
        yield project
    finally:
        project.compose("down", "--volumes", "--timeout", "2", check=False)


def wait_endpoint(project: DbProject, status: int, text: str, timeout: float = 60.0) -> None:
    """Wait until api's GET /health answers `status` with `text` in its body."""
    seen: list[tuple[int, str]] = []

    def answered() -> bool:
        seen.append(project.health_endpoint())
        return seen[-1][0] == status and text in seen[-1][1]

    try:
        wait_until(answered, what=f"/health {status} {text!r}", timeout=timeout, interval=0.3)
    except Exception as exc:
        raise AssertionError(f"{exc}; last answers {seen[-3:]}") from exc


def items(project: DbProject) -> list[list[str]]:
    return project.psql("SELECT id, name FROM items ORDER BY id")


def test_v1_to_v2_migrates_keeps_the_rows_and_downgrades_back(
    site: DbProject, app_images: dict[int, str]
) -> None:
    assert site.current_revision() == REVISIONS[1]
    assert site.columns("items") == ["id", "name"]

    site.run_version(app_images[2])
    # v2's code on v1's schema: the endpoint says why, and Docker's healthcheck sees it.
    wait_endpoint(site, 503, f"schema {REVISIONS[1]}, code expects {REVISIONS[2]}")
    site.wait_health("unhealthy")

    _status, output = site.migrate()
    assert f"Running upgrade {REVISIONS[1]} -> {REVISIONS[2]}" in output
    site.wait_health("healthy")
    assert site.current_revision() == REVISIONS[2]
    assert site.columns("items") == ["id", "name", "note"]
    assert site.psql("SELECT id, name, note FROM items ORDER BY id") == [
        ["1", "apple", "note of apple"],
        ["2", "pear", "note of pear"],
    ]

    # The old code on the new schema (what a rollback of the images alone leaves) is not
    # healthy, and cannot undo a revision it does not carry.
    site.run_version(app_images[1])
    wait_endpoint(site, 503, f"schema {REVISIONS[2]}, code expects {REVISIONS[1]}")
    status, output = site.alembic("downgrade", REVISIONS[1], check=False)
    assert status != 0
    assert f"Can't locate revision identified by '{REVISIONS[2]}'" in output
    status, output = site.alembic("current", check=False)  # nor tell where the schema is
    assert status != 0
    assert f"Can't locate revision identified by '{REVISIONS[2]}'" in output

    # The newer image knows how to undo its revision: v1's schema comes back, rows intact.
    site.run_version(app_images[2])
    status, output = site.alembic("downgrade", REVISIONS[1])
    assert status == 0, output
    assert site.current_revision() == REVISIONS[1]
    assert site.columns("items") == ["id", "name"]
    assert items(site) == ROWS
    wait_endpoint(site, 503, f"schema {REVISIONS[1]}, code expects {REVISIONS[2]}")

    site.run_version(app_images[1])
    site.wait_health("healthy")
    assert site.health_endpoint() == (200, f"ok {REVISIONS[1]}\n")


def test_v3_fails_half_way_and_leaves_its_first_statement_applied(site: DbProject) -> None:
    # Released as CI does (the registry's :latest), pulled and started as an update does.
    v3_id = publish_version(site.stack, 3, repo=f"t{SESSION_TAG}/dbapp")
    site.pull_and_recreate()
    assert image_id_of(site.stack, site.app_image) == v3_id
    status, output = site.migrate(check=False)

    assert status != 0
    assert 'column "notes" does not exist' in output
    # transaction_per_migration: v2's revision was committed before v3's ran; v3's column was
    # committed by its autocommit block, its index failed, and it was never recorded.
    assert site.current_revision() == REVISIONS[2]
    assert site.columns("items") == ["id", "name", "note", "priority"]
    assert "ix_items_notes" not in site.indexes("items")
    assert items(site) == ROWS
    wait_endpoint(site, 503, f"schema {REVISIONS[2]}, code expects {REVISIONS[3]}")
    site.wait_health("unhealthy")
    assert containers(site.stack, site.project)[API_SERVICE].image_id == v3_id

    # The db image is Debian's PostgreSQL 15, run as postgres, listening on the network, with
    # the tools the backup and restore of a rollback run in it: a custom-format dump of the
    # in-between schema lists the items table with v3's column, and its rows.
    db = site.container(DB_SERVICE)
    done = site.stack.docker(
        "exec", db, "sh", "-c",
        "id -un; postgres --version; pg_dump --version; pg_restore --version; psql --version",
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert lines[0] == "postgres"
    assert all(" (PostgreSQL) 15." in line for line in lines[1:]), lines
    assert site.psql("SHOW listen_addresses") == [["*"]]
    dump = site.stack.docker(
        "exec", db, "sh", "-c", "pg_dump -U app -Fc app | pg_restore --file=- | grep priority"
    ).stdout  # fmt: skip
    assert "priority integer DEFAULT 0 NOT NULL" in dump
    listing = site.stack.docker(
        "exec", db, "sh", "-c", "pg_dump -U app -Fc app | pg_restore --list"
    ).stdout  # fmt: skip
    assert "TABLE DATA public items app" in listing
