"""The logic of the role's own modules (playbooks/roles/compose_update/library/): update_preflight
(Preflight), compose_snapshot (Snapshot and the after-snapshot). The pure parts,
table-driven; the Docker side is covered by tests/integration (test_update, test_playbook_faults).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from .playbook_code import load

preflight = load("library/update_preflight")
snapshot = load("library/compose_snapshot")


# ---------------------------------------------------------------- update_preflight
@pytest.mark.parametrize(
    ("services", "expected"),
    [
        ("", []),
        (None, []),
        ([], []),
        ("api", ["api"]),
        (" api , worker,,api ", ["api", "worker"]),
        (["worker", " api", "worker"], ["worker", "api"]),
        ([1, "2"], ["1", "2"]),
    ],
)
def test_the_request_is_a_list_without_blanks_or_repeats(
    services: Any, expected: list[str]
) -> None:
    assert preflight.normalise_request(services) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2.40.3", (2, 40, 3)),
        ("v2.18.0", (2, 18, 0)),
        ("2.29.7-desktop.1", (2, 29, 7)),
        ("2.17", (2, 17, 0)),
        ("docker: 'compose' is not a docker command.", None),
        ("", None),
    ],
)
def test_compose_versions_are_read_from_the_short_output(text: str, expected: Any) -> None:
    assert preflight.compose_version(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"ID": "abc", "DockerRootDir": "/var/lib/docker"}',
            {"ID": "abc", "DockerRootDir": "/var/lib/docker"},
        ),
        (
            'WARNING: No swap limit support\n{"ID": "abc", "DockerRootDir": "/d"}',
            {"ID": "abc", "DockerRootDir": "/d"},
        ),
        ("Cannot connect to the Docker daemon at unix:///var/run/docker.sock.", {}),
        ("{not json", {}),
    ],
)
def test_the_daemon_info_is_the_json_line(text: str, expected: dict[str, str]) -> None:
    assert preflight.daemon_info(text) == expected


CONFIG = {
    "name": "shop",
    "services": {
        "api": {
            "image": "ghcr.io/acme/api:1",
            "depends_on": {"db": {"condition": "service_healthy"}},
        },
        "db": {"image": "postgres:16", "restart": "always"},
        "migrate": {"image": "ghcr.io/acme/api:1", "restart": "no", "depends_on": {"db": {}}},
        "web": {"build": {"context": "."}},
    },
}


@pytest.mark.parametrize(
    ("environ", "present", "expected"),
    [
        # The docker CLI's rule: $DOCKER_CONFIG/cli-plugins, else ~/.docker/cli-plugins.
        (
            {"HOME": "/home/op"},
            {"/home/op/.docker/cli-plugins/docker-compose"},
            "/home/op/.docker/cli-plugins",
        ),
        (
            {"HOME": "/home/op", "DOCKER_CONFIG": "/etc/dc"},
            {"/etc/dc/cli-plugins/docker-compose"},
            "/etc/dc/cli-plugins",
        ),
        # DOCKER_CONFIG set: ~/.docker is not where the CLI looks.
        (
            {"HOME": "/home/op", "DOCKER_CONFIG": "/etc/dc"},
            {"/home/op/.docker/cli-plugins/docker-compose"},
            "",
        ),
        # Compose system-wide only (the packages): nothing to link.
        ({"HOME": "/home/op"}, {"/usr/libexec/docker/cli-plugins/docker-compose"}, ""),
        ({"HOME": "/home/op"}, {"/home/op/.docker/cli-plugins/docker-buildx"}, ""),
    ],
)
def test_a_compose_installed_per_user_is_found(
    environ: dict[str, str], present: set[str], expected: str
) -> None:
    assert preflight.user_cli_plugins_dir(environ, exists=present.__contains__) == expected


def test_the_service_table_keeps_image_restart_and_dependencies_only() -> None:
    project, names, image, restart, deps = preflight.service_table(CONFIG)
    assert project == "shop"
    assert names == ["api", "db", "migrate", "web"]
    assert image == {
        "api": "ghcr.io/acme/api:1",
        "db": "postgres:16",
        "migrate": "ghcr.io/acme/api:1",
        "web": "",
    }
    assert restart == {"api": "", "db": "always", "migrate": "no", "web": ""}
    assert deps == {"api": ["db"], "db": [], "migrate": ["db"], "web": []}


@pytest.mark.parametrize(
    ("requested", "host", "targets", "skipped"),
    [
        # By default: the registry's images, and build-only services skipped with a reason.
        ([], "ghcr.io", ["api", "migrate"], {"web": "no image: build-only service"}),
        # The prefix is the host and a slash: ghcr.io.evil is not ghcr.io.
        ([], "ghcr.io/acme", ["api", "migrate"], {"web": "no image: build-only service"}),
        ([], "registry.local:5000", [], {"web": "no image: build-only service"}),
        (["db", "api"], "ghcr.io", ["db", "api"], {}),
        (["web"], "ghcr.io", [], {"web": "no image: build-only service"}),
    ],
)
def test_the_targets_are_the_request_or_the_registry_images(
    requested: list[str], host: str, targets: list[str], skipped: dict[str, str]
) -> None:
    _project, names, image, _restart, _deps = preflight.service_table(CONFIG)
    assert preflight.work_out_targets(requested, names, image, host) == (targets, skipped)


def settings(**values: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        name: spec.get("default") for name, spec in preflight.ARGUMENT_SPEC.items()
    }
    base.update(
        compose_file="compose.yml",
        project_dir="/srv",
        compose_files=["compose.yml"],
        registry_host="ghcr.io",
        migration_command="alembic upgrade head",
        backup_dir="/var/backups/x",
        lock_dir="/run/ue/",
        cwd="/srv",
    )
    base.update(values)
    return base


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"services": "api,-rf"},
            'Invalid service name(s) "-rf": names must match [A-Za-z0-9][A-Za-z0-9_.-]*.',
        ),
        (
            {"project_name": "a b"},
            'Invalid settings: compose_project_name ("a b") and migration_service ("api") must',
        ),
        ({"migration_command": "  "}, "migration_command must not be empty"),
        ({"health_timeout": "soon"}, 'positive numbers of seconds (got "soon" and 1800)'),
        ({"lock_max_age": 0}, "(got 300 and 0)"),
        ({"lock_dir": ""}, "lock_dir must not be empty."),
        (
            {"compose_file": "missing.yml"},
            "Compose file 'missing.yml' (from {cwd}) does not exist or is not a file.",
        ),
        (
            {"create_backup": "yes"},
            "create_backup is true but no backup command is configured: set BACKUP_COMMAND",
        ),
    ],
)
def test_bad_settings_fail_with_the_first_check_that_failed(
    tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    (tmp_path / "compose.yml").write_text("services: {}\n")
    facts: dict[str, Any] = {}
    with pytest.raises(preflight.PreflightFailed) as failure:
        preflight.check_settings(settings(cwd=str(tmp_path), **values), facts)
    assert message.format(cwd=tmp_path) in str(failure.value)


def test_good_settings_become_facts(tmp_path: Path) -> None:
    (tmp_path / "compose.yml").write_text("services: {}\n")
    facts: dict[str, Any] = {}
    preflight.check_settings(
        settings(
            cwd=str(tmp_path),
            services="api, worker",
            health_timeout="60",
            run_migrations="no",
            migration_command="",
            backup_dir="backups",
            lock_dir="locks//",
        ),
        facts,
    )
    assert facts == {
        "_compose_update_requested": ["api", "worker"],
        "_compose_update_health_timeout": 60,
        "_compose_update_run_migrations": False,
        "_compose_update_rollback_on_migration_failure": True,
        "_compose_update_create_backup": False,
        "_compose_update_backup_dir": f"{tmp_path}/backups",
        "_compose_update_lock_dir": f"{tmp_path}/locks",
        "_compose_update_lock_max_age": 1800,
    }


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"_compose_update_requested": ["api", "nope"]},
            "Unknown service(s) nope in project 'shop'; known services: api, db, migrate, web.",
        ),
        (
            {"migration_service": "worker"},
            "Migration service 'worker' is not in project 'shop'; known services:",
        ),
        (
            {"_compose_update_requested": ["web"]},
            "Nothing to update in project 'shop': every requested service was skipped (web).",
        ),
        (
            {"registry_host": "quay.io"},
            "Nothing to update in project 'shop': no service image starts with quay.io/ (set",
        ),
        (
            {"_compose_update_create_backup": True, "backup_service": "cache"},
            "Backup service \"cache\" is not in project 'shop'",
        ),
    ],
)
def test_unknown_or_missing_services_fail_with_the_known_ones(
    values: dict[str, Any], message: str
) -> None:
    project, names, image, _restart, _deps = preflight.service_table(CONFIG)
    facts: dict[str, Any] = {
        "_compose_update_project": project,
        "_compose_update_service_names": names,
        "_compose_update_service_image": image,
        "_compose_update_requested": [],
        "_compose_update_run_migrations": True,
        "_compose_update_create_backup": False,
    }
    facts.update(
        {key: value for key, value in values.items() if key.startswith("_compose_update_")}
    )
    params = settings(
        **{key: value for key, value in values.items() if not key.startswith("_compose_update_")}
    )
    with pytest.raises(preflight.PreflightFailed) as failure:
        preflight.choose_targets(params, facts)
    assert message in str(failure.value)


def put_docker_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    """A fake `docker` (the shell script `script`) first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(script)
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


def fake_docker_for_preflight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, daemon_answers: bool = True
) -> None:
    """A `docker` on PATH that answers the preflight's three queries like docker 28 does."""
    info = (
        'echo \'{"ID": "abc", "DockerRootDir": "/var/lib/docker"}\''
        if daemon_answers
        else "echo 'Cannot connect to the Docker daemon at unix:///d.sock.' >&2; exit 1"
    )
    script = f"""#!/bin/sh
case "$*" in
  info*) {info} ;;
  "compose version --short") echo 2.40.3 ;;
  *" config --format json") cat {tmp_path}/config.json ;;
  *) echo "unexpected: $*" >&2; exit 2 ;;
esac
"""
    put_docker_on_path(tmp_path, monkeypatch, script)
    (tmp_path / "config.json").write_text(json.dumps(CONFIG))
    (tmp_path / "compose.yml").write_text("services: {}\n")


def test_a_preflight_that_passes_sets_every_fact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_docker_for_preflight(tmp_path, monkeypatch)
    params = settings(cwd=str(tmp_path), project_dir=str(tmp_path), services="api,db")
    result = preflight.run_task(params)
    facts = as_facts(result)
    assert result["changed"] is False
    assert facts["_compose_update_preflight_error"] is None
    assert (
        facts["_compose_update_project"] == "shop"
        and facts["_compose_update_targets"] == ["api", "db"]
        and facts["_compose_update_skipped"] == {}
    )
    assert preflight.daemon_info(facts["_compose_update_docker_info_text"])["ID"] == "abc"
    assert facts["_compose_update_compose_version_text"] == "2.40.3"
    # Nothing of the configuration but the project, the images, restart policies and dependencies.
    assert "condition" not in json.dumps(facts)


def test_a_failed_check_keeps_the_facts_found_before_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_docker_for_preflight(tmp_path, monkeypatch)
    result = preflight.run_task(
        settings(cwd=str(tmp_path), project_dir=str(tmp_path), services="nope")
    )
    facts = as_facts(result)
    assert facts["_compose_update_preflight_error"].startswith(
        "Unknown service(s) nope in project 'shop'"
    )
    assert facts["_compose_update_project"] == "shop" and "_compose_update_targets" not in facts


def test_a_daemon_that_does_not_answer_fails_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_docker_for_preflight(tmp_path, monkeypatch, daemon_answers=False)
    result = preflight.run_task(
        settings(cwd=str(tmp_path), project_dir=str(tmp_path), services="-bad")
    )
    assert as_facts(result)["_compose_update_preflight_error"] == (
        "The Docker daemon does not answer: Cannot connect to the Docker daemon at unix:///d.sock."
    )


# ---------------------------------------------------------------- compose_snapshot
@pytest.mark.parametrize(
    ("reference", "repo_digests", "expected"),
    [
        ("ghcr.io/acme/api:1", ["ghcr.io/acme/api@sha256:aa"], "sha256:aa"),
        (
            "ghcr.io/acme/api@sha256:bb",
            ["ghcr.io/acme/other@sha256:cc", "ghcr.io/acme/api@sha256:bb"],
            "sha256:bb",
        ),
        ("localhost:5000/app:2", ["localhost:5000/app@sha256:dd"], "sha256:dd"),
        # Docker Hub names are shortened in RepoDigests.
        ("docker.io/library/postgres:16", ["postgres@sha256:ee"], "sha256:ee"),
        ("postgres", ["postgres@sha256:ff"], "sha256:ff"),
        # A repository whose name starts like another's does not match it.
        ("ghcr.io/acme/api:1", ["ghcr.io/acme/api-old@sha256:00"], None),
        ("app:local", [], None),
        ("app:local", None, None),
    ],
)
def test_the_digest_is_the_one_of_the_services_repository(
    reference: str, repo_digests: Any, expected: str | None
) -> None:
    assert snapshot.digest_of(reference, repo_digests) == expected


def container(name: str, image: str, status: str = "running", health: str = "") -> dict[str, Any]:
    return {
        "name": name,
        "id": f"id-{name}",
        "image": image,
        "status": status,
        "running": status == "running",
        "exit_code": 0,
        "health": health,
    }


def test_the_snapshot_records_each_target_and_the_first_replica_by_name() -> None:
    inspected = [
        {"service": "api", "container": container("/shop-api-2", "sha256:new")},
        {"service": "api", "container": container("/shop-api-1", "sha256:one", health="healthy")},
        {"service": "db", "container": container("/shop-db-1", "sha256:db")},
    ]
    containers = snapshot.containers_by_service(inspected, ["api", "worker"])
    assert list(containers) == ["api"]
    assert containers["api"]["name"] == "/shop-api-1"
    taken, states = snapshot.build_snapshot(
        ["api", "worker"],
        containers,
        {"sha256:one": ["ghcr.io/acme/api@sha256:aa"]},
        {"api": "ghcr.io/acme/api:1", "worker": "ghcr.io/acme/api:1"},
    )
    assert taken == {
        "api": {
            "container_id": "id-/shop-api-1",
            "image_id": "sha256:one",
            "digest": "sha256:aa",
            "state": "running",
        },
        "worker": None,
    }
    assert states == {
        "api": {"status": "running", "running": True, "exit_code": 0, "health": "healthy"}
    }


def test_the_rollback_point_is_0600_whole_and_holds_the_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "shop.abc.rollback.json"
    path.write_text("an older, longer point that must be replaced whole " * 10)
    taken = {
        "api": {"container_id": "c", "image_id": "sha256:1", "digest": None, "state": "running"}
    }
    snapshot.write_rollback_point(str(path), {"project": "shop", "targets": ["api"]}, taken)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    point = json.loads(path.read_text())
    assert point["project"] == "shop" and point["targets"] == ["api"] and point["before"] == taken
    assert point["started_at"].endswith("Z")
    assert [entry.name for entry in tmp_path.iterdir()] == [path.name]  # no .partial left


# ---------------------------------------------------------------- the summary's services (Report)
report = load("filter_plugins/update_report")
ENTRY = {"container_id": "c1", "image_id": "sha256:1", "digest": None, "state": "running"}


@pytest.mark.parametrize(
    ("after", "states", "health"),
    [
        (None, {}, None),  # stopped before the recreate: no after-snapshot, no health
        ({"api": None}, {}, "missing"),
        ({"api": ENTRY}, {"api": {"running": True, "health": "healthy"}}, "healthy"),
        ({"api": ENTRY}, {"api": {"running": True, "health": "unhealthy"}}, "unhealthy"),
        ({"api": ENTRY}, {"api": {"running": True, "health": ""}}, "running"),
        ({"api": ENTRY}, {"api": {"running": False, "health": "healthy"}}, "exited"),
        ({"api": ENTRY}, {}, "exited"),
    ],
)
def test_each_target_gets_image_before_after_and_health(
    after: dict[str, Any] | None, states: dict[str, Any], health: str | None
) -> None:
    reports = report.service_reports(
        ["api"], {"api": "ghcr.io/acme/api:1"}, {"api": ENTRY}, after, states
    )
    assert reports == {
        "api": {
            "image": "ghcr.io/acme/api:1",
            "before": ENTRY,
            "after": (after or {}).get("api"),
            "health": health,
        }
    }


def test_no_targets_no_services() -> None:
    assert report.service_reports([], None, None, None, None) == {}
    assert report.FilterModule().filters() == {
        "update_service_reports": report.service_reports,
        "update_images_changed": report.images_changed,
    }


@pytest.mark.parametrize(
    ("before", "after", "changed"),
    [
        ({"api": {"image_id": "sha256:a"}}, None, False),  # stopped before the recreate
        ({"api": {"image_id": "sha256:a"}}, {"api": {"image_id": "sha256:a"}}, False),
        ({"api": {"image_id": "sha256:a"}}, {"api": {"image_id": "sha256:b"}}, True),
        ({"api": None}, {"api": {"image_id": "sha256:b"}}, True),  # a new container
        ({"api": {"image_id": "sha256:a"}}, {"api": None}, False),
    ],
)
def test_an_update_changed_an_image(
    before: dict[str, Any], after: dict[str, Any] | None, changed: bool
) -> None:
    """Report keeps a successful update's rollback point for a revert only when it did."""
    assert report.images_changed(["api"], before, after) is changed


def test_an_unchanged_deployment_reuses_the_earlier_snapshot_without_docker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")  # no docker to ask
    earlier = {
        "snapshot": {"api": ENTRY},
        "states": {"api": {"running": True, "health": "healthy"}},
    }
    params = {name: spec.get("default") for name, spec in snapshot.ARGUMENT_SPEC.items()}
    params.update(project="shop", targets=["api"], service_image={}, unchanged_since=earlier)
    result = snapshot.run_task(params)
    assert "ansible_facts" not in result  # registered, not facts (issue 20)
    assert result["snapshot"] == earlier["snapshot"]
    assert result["states"] == earlier["states"]


@pytest.mark.parametrize(
    ("environ", "context", "expected"),
    [
        ({}, None, "/var/run/docker.sock"),
        ({"DOCKER_HOST": "unix:///tmp/bed/docker.sock"}, None, "/tmp/bed/docker.sock"),
        # DOCKER_HOST wins over the CLI's current context, as in the CLI.
        ({"DOCKER_HOST": "unix:///tmp/bed/docker.sock"}, "remote", "/tmp/bed/docker.sock"),
        ({}, "default", "/var/run/docker.sock"),
        # Everything else is the CLI's business: contexts, TCP, SSH, TLS.
        ({}, "remote", None),
        ({"DOCKER_CONTEXT": "remote"}, None, None),
        ({"DOCKER_HOST": "tcp://10.0.0.5:2376"}, None, None),
        ({"DOCKER_HOST": "ssh://deploy@host"}, None, None),
        ({"DOCKER_HOST": "unix:///run/docker.sock", "DOCKER_TLS_VERIFY": "1"}, None, None),
    ],
)
def test_the_engine_api_is_asked_only_where_the_cli_would_use_the_local_socket(
    tmp_path: Path, environ: dict[str, str], context: str | None, expected: str | None
) -> None:
    (tmp_path / ".docker").mkdir()
    if context is not None:
        (tmp_path / ".docker" / "config.json").write_text(json.dumps({"currentContext": context}))
    assert snapshot.docker_socket(environ, str(tmp_path)) == expected


def fake_engine(socket_path: Path, routes: dict[str, Any]) -> Any:
    """An Engine API on a unix socket answering GETs from `routes` (path without query -> JSON)."""
    import http.server
    import socketserver
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path.split("?")[0])
            payload = json.dumps(
                body if body is not None else {"message": "no such object"}
            ).encode()
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

        def address_string(self) -> str:
            return "unix"

    class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    server = Server(str(socket_path), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def inspect_body(
    cid: str, name: str, service: str, image: str, health: str | None
) -> dict[str, Any]:
    state: dict[str, Any] = {"Status": "running", "Running": True, "ExitCode": 0}
    if health is not None:
        state["Health"] = {"Status": health, "Log": []}
    labels = {"com.docker.compose.service": service, "com.docker.compose.project": "shop"}
    return {
        "Id": cid,
        "Name": name,
        "Image": image,
        "State": state,
        "Config": {"Labels": labels, "Env": ["DB_PASSWORD=secret"]},
    }


def test_the_engine_api_gives_the_same_snapshot_as_the_cli_would(tmp_path: Path) -> None:
    routes = {
        "/containers/json": [
            {"Id": "c2", "Labels": {"com.docker.compose.service": "api"}},
            {"Id": "c1", "Labels": {"com.docker.compose.service": "api"}},
            {"Id": "c3", "Labels": {"com.docker.compose.service": "worker"}},
            {"Id": "c9", "Labels": {"com.docker.compose.service": "db"}},  # not a target
        ],
        "/containers/c1/json": inspect_body("c1", "/shop-api-1", "api", "sha256:one", "healthy"),
        "/containers/c2/json": inspect_body("c2", "/shop-api-2", "api", "sha256:one", "healthy"),
        "/containers/c3/json": inspect_body("c3", "/shop-worker-1", "worker", "sha256:gone", None),
        "/images/sha256:one/json": {"RepoDigests": ["ghcr.io/acme/api@sha256:aa"]},
        # sha256:gone: deleted meanwhile (404), so its digest is null
    }
    socket_path = tmp_path / "docker.sock"
    server = fake_engine(socket_path, routes)
    try:
        containers, digests = snapshot.take_snapshot_with_api(
            str(socket_path), "shop", ["api", "worker"]
        )
    finally:
        server.shutdown()
        server.server_close()
    taken, states = snapshot.build_snapshot(
        ["api", "worker"],
        containers,
        digests,
        {"api": "ghcr.io/acme/api:1", "worker": "ghcr.io/acme/api:1"},
    )
    assert taken == {
        "api": {
            "container_id": "c1",
            "image_id": "sha256:one",
            "digest": "sha256:aa",
            "state": "running",
        },
        "worker": {
            "container_id": "c3",
            "image_id": "sha256:gone",
            "digest": None,
            "state": "running",
        },
    }
    assert states == {
        "api": {"status": "running", "running": True, "exit_code": 0, "health": "healthy"},
        "worker": {"status": "running", "running": True, "exit_code": 0, "health": ""},
    }
    assert "secret" not in json.dumps([containers, digests])  # the environment is not kept


def as_facts(result: dict[str, Any]) -> dict[str, Any]:
    """The preflight's registered result under the names the role gives its keys (vars/main.yml)."""
    return {f"_compose_update_{key}": value for key, value in result.items() if key != "changed"}
