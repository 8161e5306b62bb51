"""testbed/dbimages.py's pure parts (issue 23): the rootfs cache key, what each app version
carries, and the revisions its health check expects."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from testbed.dbimages import (
    APP_DIR,
    APP_VERSIONS,
    DB_PACKAGES,
    DB_ROOTFS_VERSION,
    REVISIONS,
    SOCKET_DIR,
    app_files,
    compose_text,
    db_rootfs_key,
)
from testbed.systemd import ROOTFS_PACKAGES, rootfs_key

MIRROR = "http://deb.debian.org/debian"


def test_the_systemd_rootfs_keeps_its_cache_key() -> None:
    # The tarball machines already have (debian-bookworm-systemd-<key>.tar) stays valid after
    # rootfs_key learned packages and a version.
    assert rootfs_key(MIRROR) == "f1cad4577f747d04"
    assert rootfs_key(MIRROR, ROOTFS_PACKAGES, 1) == "f1cad4577f747d04"


@pytest.mark.parametrize(
    ("mirror", "packages", "version"),
    [
        ("http://mirror.example/debian", DB_PACKAGES, DB_ROOTFS_VERSION),  # another archive
        (MIRROR, (*DB_PACKAGES, "postgresql-contrib"), DB_ROOTFS_VERSION),  # a package more
        (MIRROR, DB_PACKAGES[:-1], DB_ROOTFS_VERSION),  # a package less
        (MIRROR, DB_PACKAGES, DB_ROOTFS_VERSION + 1),  # another prune list or recipe
        (MIRROR, ROOTFS_PACKAGES, 1),  # the systemd host's
    ],
)
def test_a_change_of_recipe_makes_a_new_db_rootfs(
    mirror: str, packages: tuple[str, ...], version: int
) -> None:
    assert rootfs_key(mirror, packages, version) != db_rootfs_key(MIRROR)


def test_the_db_rootfs_key_is_stable_and_short() -> None:
    assert db_rootfs_key(MIRROR) == db_rootfs_key(MIRROR)
    assert re.fullmatch(r"[0-9a-f]{16}", db_rootfs_key(MIRROR))


def _revision_files(version: int) -> dict[str, tuple[str, str | None]]:
    """revision -> (file name, down_revision) of what the build context of `version` holds."""
    found = {}
    for rel, source in app_files(version).items():
        if rel.startswith("app/migrations/versions/"):
            text = source.read_text()
            revision = re.search(r'^revision = "([0-9a-f]{12})"$', text, re.MULTILINE)
            down = re.search(r'^down_revision = (?:"([0-9a-f]{12})"|None)$', text, re.MULTILINE)
            assert revision and down, source
            found[revision[1]] = (source.name, down[1])
    return found


@pytest.mark.parametrize(
    ("version", "revisions"),
    [
        (1, {REVISIONS[1]: None}),
        (2, {REVISIONS[1]: None, REVISIONS[2]: REVISIONS[1]}),
        (3, {REVISIONS[1]: None, REVISIONS[2]: REVISIONS[1], REVISIONS[3]: REVISIONS[2]}),
        # v4 follows v2: v3's revision never succeeds, so no image may carry it after v3.
        (4, {REVISIONS[1]: None, REVISIONS[2]: REVISIONS[1], REVISIONS[4]: REVISIONS[2]}),
    ],
)
def test_version_n_carries_the_linear_history_up_to_its_own_head(
    version: int, revisions: dict[str, str | None]
) -> None:
    carried = _revision_files(version)
    assert {rev: down for rev, (_name, down) in carried.items()} == revisions
    # The head (the one no other revision names as its parent) is what its health expects.
    parents = {down for _name, down in carried.values()}
    assert [rev for rev in carried if rev not in parents] == [REVISIONS[version]]


def test_every_version_carries_the_app_and_its_alembic_configuration() -> None:
    for version in APP_VERSIONS:
        files = app_files(version)
        for rel in ("app/alembic.ini", "app/server.py", "app/migrations/env.py"):
            assert files[rel].is_file(), rel
    assert "transaction_per_migration=True" in (APP_DIR / "migrations" / "env.py").read_text()


@pytest.mark.parametrize("version", [0, 5, -1])
def test_an_unknown_version_is_refused(version: int) -> None:
    with pytest.raises(ValueError, match="version must be one of"):
        app_files(version)


def test_the_revision_files_exist_for_every_version() -> None:
    names = sorted(p.name for p in (APP_DIR / "migrations" / "versions").glob("v*_*.py"))
    assert [int(name[1 : name.index("_")]) for name in names] == list(APP_VERSIONS)
    assert set(REVISIONS) == set(APP_VERSIONS)
    assert all(isinstance(path, Path) for path in app_files(3).values())


def test_v4s_revision_has_no_downgrade_and_the_others_have_one() -> None:
    # The "downgrade fails" scenario's real revision: Alembic finds no downgrade() in it.
    for version, number in ((1, 1), (2, 2), (3, 3), (4, 4)):
        source = app_files(version)
        text = next(
            path.read_text()
            for rel, path in source.items()
            if rel.startswith(f"app/migrations/versions/v{number}_")
        )
        assert ("def downgrade()" in text) is (version != 4), version
        assert "def upgrade()" in text


@pytest.mark.parametrize(
    ("via_socket", "server", "db_volumes", "api_volumes", "volumes"),
    [
        (False, "db", ["db-data:/var/lib/postgresql/data"], None, {"db-data"}),
        (
            True,
            SOCKET_DIR,
            ["db-data:/var/lib/postgresql/data", f"db-socket:{SOCKET_DIR}"],
            [f"db-socket:{SOCKET_DIR}"],
            {"db-data", "db-socket"},
        ),
    ],
)
def test_the_compose_file_connects_api_to_db_over_tcp_or_the_socket(
    via_socket: bool,
    server: str,
    db_volumes: list[str],
    api_volumes: list[str] | None,
    volumes: set[str],
) -> None:
    text = compose_text(
        "shop", "127.0.0.1:9/local/postgres:15", "r:1/a:latest", via_socket=via_socket
    )
    data = yaml.safe_load(text)
    assert data["name"] == "shop"
    assert set(data["services"]) == {"db", "api"}
    db, api = data["services"]["db"], data["services"]["api"]
    assert db["volumes"] == db_volumes
    assert api.get("volumes") == api_volumes
    assert set(data["volumes"]) == volumes
    assert api["environment"] == {"POSTGRES_SERVER": server, "POSTGRES_PORT": "5432"}
    assert api["depends_on"] == {"db": {"condition": "service_healthy"}}
    # The password is in the 0600 env file both read, never in the compose file.
    assert db["env_file"] == api["env_file"] == "db.env"
    assert "PASSWORD" not in text
