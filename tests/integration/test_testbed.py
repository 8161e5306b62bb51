"""The test bed itself: real dockerd + registry + Redis start, serve a compose stack, and vanish.

Needs root and what scripts/bootstrap.sh installs (Debian packages, compose plugin).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from testbed import (
    REGISTRY_SERVICES,
    TestBed,
    build_app_image,
    cleanup_stale,
    containers,
    http_get,
    registry_digest,
    service_url,
    write_sample_project,
)
from testbed.procs import is_alive, pids_mentioning

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]


def _link_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def _assert_gone(base_dir: Path, pids: dict[str, int], bridge: str | None) -> None:
    for name, pid in pids.items():
        assert not is_alive(pid, None), f"{name} (pid {pid}) still runs"
    assert pids_mentioning(str(base_dir)) == [], "processes still use the base dir"
    assert not base_dir.exists(), f"{base_dir} was not removed"
    assert bridge is None or not _link_exists(bridge), f"bridge {bridge} left behind"


def test_bed_serves_a_compose_stack_and_cleans_up(tmp_path: Path) -> None:
    bed = TestBed()
    stack = bed.start()
    try:
        assert len(str(stack.base_dir / "docker.sock")) < 60, "socket path too long"
        assert set(bed.pids()) == {"dockerd", "registry", "redis"}
        assert "/root/.docker" not in str(stack.docker_config)

        # registry_only: the daemon forgets the pushed images, so `up` has to pull them.
        app = build_app_image(stack, "acme/app", "1", registry_only=True)
        build_app_image(stack, "acme/frontend", "1", registry_only=True)
        assert app == f"{stack.registry}/acme/app:latest"
        assert registry_digest(stack, "acme/app") is not None
        assert stack.docker("image", "inspect", app, check=False).returncode != 0

        compose_file = write_sample_project(stack, tmp_path / "deploy", "shop")
        assert (compose_file.parent / "app.env").is_file()

        # Without credentials the daemon cannot pull from the registry: 401 challenge.
        anon = stack.compose(compose_file, "shop", "pull", *REGISTRY_SERVICES, check=False)
        assert anon.returncode != 0
        assert "no basic auth credentials" in anon.stderr or "unauthorized" in anon.stderr
        assert '" 401 ' in (stack.logs_dir / "registry.log").read_text()
        # With the bed's logged-in DOCKER_CONFIG the same pull works.
        stack.compose(compose_file, "shop", "pull", *REGISTRY_SERVICES, logged_in=True)
        # db/cache are local images named under 127.0.0.1:9: a pull fails on loopback, fast.
        local = stack.compose(compose_file, "shop", "pull", "db", check=False, timeout=60)
        assert local.returncode != 0 and "127.0.0.1:9" in local.stderr

        stack.docker("image", "rm", app, f"{stack.registry}/acme/frontend:latest")
        started = time.monotonic()
        # Pulls the registry images again (logged in, as an operator would), then waits.
        stack.compose(compose_file, "shop", "up", "-d", "--wait", logged_in=True)
        print(f"compose up --wait: {time.monotonic() - started:.1f}s")
        state = containers(stack, "shop")
        assert set(state) == {"db", "cache", "init_db", "api", "worker", "frontend"}
        assert (state["init_db"].state, state["init_db"].exit_code) == ("exited", 0)
        for service in ("db", "api", "frontend"):
            assert state[service].health == "healthy", state[service]
        for service in ("cache", "worker"):
            assert (state[service].state, state[service].health) == ("running", None)
        assert state["api"].name == "shop-api"
        assert state["api"].image_id == state["worker"].image_id == state["init_db"].image_id

        api_url = service_url(stack, "shop-api")
        assert api_url.startswith("http://127.0.0.1:")
        assert http_get(f"{api_url}/version") == "1"
        log = stack.compose(
            compose_file, "shop", "exec", "-T", "api", "cat", "/data/migrations.log"
        )
        assert log.stdout.splitlines() == ["migrated 1"]
        env = stack.compose(compose_file, "shop", "exec", "-T", "api", "env").stdout
        assert "APP_ENV=production" in env and "APP_NAME=shop" in env

        with redis.Redis(host=stack.redis_host, port=stack.redis_port) as client:
            assert client.ping() is True
    except BaseException:
        print(stack.log_tails())
        raise
    finally:
        base_dir, pids, bridge = stack.base_dir, bed.pids(), bed.bridge
        bed.stop()
    print(f"timings: {bed.timings}")
    _assert_gone(base_dir, pids, bridge)


def test_fault_helpers_keep_port_and_data() -> None:
    bed = TestBed()
    stack = bed.start()
    try:
        build_app_image(stack, "acme/app", "7")
        digest = registry_digest(stack, "acme/app")
        bed.stop_registry()
        assert not bed.registry_running()
        pull = stack.docker("pull", f"{stack.registry}/acme/app:latest", check=False)
        assert pull.returncode != 0 and "connection refused" in pull.stderr
        bed.start_registry()
        assert registry_digest(stack, "acme/app") == digest

        with redis.Redis(host=stack.redis_host, port=stack.redis_port) as client:
            client.set("k", "v")
            bed.restart_redis()
            assert client.ping() is True  # reconnects to the same port
            assert client.get("k") is None  # no persistence
    finally:
        bed.stop()


def _spawn_bed(code: str) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("BASE "), line
    return proc, Path(line.split()[1])


def test_sigterm_stops_the_bed() -> None:
    proc, base_dir = _spawn_bed(
        "import time; from testbed import TestBed\n"
        "bed = TestBed(); s = bed.start(); print('BASE', s.base_dir, flush=True)\n"
        "time.sleep(120)\n"
    )
    with proc:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM
    assert not base_dir.exists()
    assert pids_mentioning(str(base_dir)) == []


def test_sigkill_leaves_nothing_that_cleanup_stale_cannot_reclaim() -> None:
    proc, base_dir = _spawn_bed(
        "import time; from testbed import TestBed\n"
        "bed = TestBed(); s = bed.start(); print('BASE', s.base_dir, flush=True)\n"
        "time.sleep(120)\n"
    )
    with proc:
        proc.kill()
        proc.wait(timeout=10)
    # The daemons got SIGTERM from the kernel when their parent died (PR_SET_PDEATHSIG).
    deadline = time.monotonic() + 30
    while pids_mentioning(str(base_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pids_mentioning(str(base_dir)) == []
    # A bed started meanwhile by a parallel test run may have reclaimed it already.
    if base_dir.exists():
        assert base_dir in cleanup_stale()
    assert not base_dir.exists()


def test_cli_up_prints_exports_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "testbed", "up"],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    with proc:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("# test bed running"):
                break
        else:
            pytest.fail(f"`python -m testbed up` ended early: {proc.communicate(timeout=60)}")
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in lines
            if line.startswith("export ")
        )
        assert exports["DOCKER_HOST"].startswith("unix:///tmp/ue-")
        base_dir = Path(exports["UE_BASE_DIR"])
        assert base_dir.is_dir()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        assert proc.returncode == 0
    assert not base_dir.exists()
