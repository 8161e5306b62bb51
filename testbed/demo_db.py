"""`make demo-db`: a rolled-back update that puts the database back too (issue 23).

`make demo`'s bed and worker (testbed/demo.py), with a real database: Debian's PostgreSQL 15
and an app with Alembic (testbed/dbimages.py; the Debian rootfs they build on is debootstrapped
once per machine and cached, see testbed/systemd.py). It deploys the app at v1 (schema v1, two
rows written), publishes v2 to the registry (its revision adds a column and fills it), and
enqueues an update through the real queue and worker. The site's post-update hook, a smoke
test, fails after v2's migration: the worker downgrades the database with v2's image, puts
v1's image back, and the summary says so. The report shows the revision, the schema and the
rows before and after. Everything is removed at the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from testbed import TestBed, http_get, service_url
from testbed.dbimages import (
    API_SERVICE,
    REVISIONS,
    DbProject,
    add_post_update_hook,
    build_db_image,
    ensure_base_image,
    publish_version,
    write_db_project,
)
from testbed.demo import enqueue_and_wait, print_report, say
from testbed.siteenv import site_environment
from testbed.stack import Stack
from worker.host.settings import Settings

PROJECT = "shop"
REPO = "acme/shop"
# The site's smoke test after every update (a post-update hook): this release fails it.
SMOKE_TEST = "sh -c 'echo smoke test: GET /orders answered 500 >&2; exit 1'"


def worker_environment(stack: Stack, project: DbProject, token_file: Path) -> dict[str, str]:
    """The worker's EnvironmentFile for this site: the database's rollback is on by default
    (MIGRATION_REVISION_COMMAND=alembic current, DB_ROLLBACK empty: downgrade)."""
    return {
        **os.environ,
        **stack.env(),
        **site_environment(
            stack,
            compose_file=project.compose_file,
            project=PROJECT,
            token_file=token_file,
            migration_command="alembic upgrade head",
            health_timeout=240,
            UPDATE_SERVICES=API_SERVICE,
            MIGRATION_SERVICE=API_SERVICE,
            UPDATE_JOB_SECRET=secrets.token_hex(32),
        ),
    }


def database_state(project: DbProject) -> dict[str, Any]:
    """What an operator checks by hand: `alembic current` in api, the columns, the rows."""
    return {
        "alembic current": project.current_revision(),
        "columns of items": project.columns("items"),
        "rows": project.psql("SELECT * FROM items ORDER BY id"),
        "GET /health": project.health_endpoint(),
    }


def served_version(stack: Stack, project: DbProject) -> dict[str, str]:
    """The version api serves (GET /version), as a browser would see it."""
    url = service_url(stack, project.container(API_SERVICE)) + "/version"
    return {API_SERVICE: http_get(url).strip()}


def main() -> int:
    started = time.monotonic()
    with TestBed() as stack:
        say(f"test bed up: dockerd {stack.docker_host}, registry {stack.registry}")
        say("building the PostgreSQL 15 and Alembic app images from Debian packages")
        began = time.monotonic()
        ensure_base_image(stack)  # debootstraps the rootfs the first time, then from the cache
        based = time.monotonic()
        build_db_image(stack)
        project = write_db_project(stack, stack.base_dir / PROJECT, PROJECT, repo=REPO)
        built = time.monotonic()
        print(
            f"rootfs and its import {based - began:.1f}s, db and app v1 images {built - based:.1f}s"
        )

        say("deploying v1, migrating it (alembic upgrade head) and writing two rows")
        add_post_update_hook(project, SMOKE_TEST)
        project.compose("up", "-d")
        project.migrate()
        project.wait_health("healthy")
        project.psql("INSERT INTO items (name) VALUES ('apple'), ('pear')")
        before = database_state(project)
        served = served_version(stack, project)
        print(json.dumps(before))

        say("publishing v2 (its revision adds items.note and fills it) to the registry")
        publish_version(stack, 2, repo=REPO)

        token_file = stack.base_dir / "github_token"
        token_file.write_text(stack.registry_password)
        token_file.chmod(0o600)
        env = worker_environment(stack, project, token_file)

        say(
            "starting the worker and enqueuing an update; the smoke test fails after v2's migration"
        )
        cli = str(Path(sys.executable).parent / "update-executor")
        worker = subprocess.Popen([cli, "worker"], env=env)
        try:
            os.environ["DOCKER_HOST"] = stack.docker_host
            summary = asyncio.run(enqueue_and_wait(Settings.from_env(env), "make demo-db"))
        finally:
            worker.terminate()
            worker.wait(timeout=60)

        project.wait_health("healthy")
        after = database_state(project)
        say("report")
        print_report(summary, served, served_version(stack, project))
        database = summary.get("database") or {}
        print(
            f"\ndatabase: revision before {database.get('revision_before')}, after "
            f"{database.get('revision_after')}, action {database.get('action')}"
        )
        print(f"before the update: {json.dumps(before)}")
        print(f"after the rollback: {json.dumps(after)}")
        put_back = (
            summary.get("rolled_back") is True
            and database.get("action") == "downgraded"
            and after == before
            and after["alembic current"] == REVISIONS[1]
        )
        print(f"database put back (revision, schema and rows as before the update): {put_back}")
        say("summary (JSON, the job's result)")
        print(json.dumps(summary, indent=2))
        project.compose("down", "--volumes", "--timeout", "1", check=False)
    say(f"done in {time.monotonic() - started:.0f}s; everything started was stopped and removed")
    return 0 if put_back else 1


if __name__ == "__main__":
    sys.exit(main())
