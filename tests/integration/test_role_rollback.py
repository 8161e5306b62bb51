"""The role's rollback holds under every tag, when the state after the recreate cannot be read,
and when the previous images were pruned before a cut-off update is rolled back (issue 20).

`ansible-playbook` by hand on the real test bed (private dockerd, registry with auth), a small
project of its own: `api` (healthcheck) and `worker` on the registry's app image. Every test
starts from version 1 running and leaves it running.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed import Stack, build_app_image, registry_image_id, running_image_ids
from testbed.containers import APP_PORT, container_ids
from testbed.dockerd import another_dockerd
from testbed.faults import (
    REPO_ROOT,
    PlaybookRun,
    lock_path,
    operator_run,
    rollback_point_path,
    run_playbook,
)
from testbed.siteenv import playbook_environment
from testbed.stack import CommandError, docker_binary
from tests.integration.conftest import SESSION_TAG
from worker.host.recovery import ansible_processes_of, end_process_groups

APP = "rr/app"
PROJECT = "uerr"
# The cut-off run's job id, this session's only (see test_playbook_faults.CUTOFF_JOB).
CUTOFF_JOB = f"cutoff20{SESSION_TAG}"
ROLLBACK_REPO = f"update-executor-rollback/{PROJECT}"

COMPOSE_FILE = f"""\
services:
  api:
    image: @APP@
    init: true
    volumes:
      - app-data:/data
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:{APP_PORT}/health"]
      interval: 1s
      timeout: 2s
      retries: 3
  worker:
    image: @APP@
    command: ["/app/work"]
    init: true
volumes:
  app-data: {{}}
"""


@dataclass
class Site:
    stack: Stack
    compose_file: Path
    lock_dir: Path
    env: dict[str, str]
    v1: str
    version: int = 1

    @property
    def app_ref(self) -> str:
        return f"{self.stack.registry}/{APP}:latest"

    def images(self) -> dict[str, str]:
        return running_image_ids(self.stack, PROJECT)

    def containers(self) -> dict[str, str]:
        return container_ids(self.stack, PROJECT)

    def publish(self, behaviour: str = "healthy") -> str:
        self.version += 1
        build_app_image(self.stack, APP, str(self.version), behaviour, registry_only=True)
        return registry_image_id(self.stack, APP)

    def run(self, *args: str, env: dict[str, str] | None = None) -> PlaybookRun:
        result = run_playbook({**self.env, **(env or {})}, *args)
        assert not lock_path(self.stack, self.lock_dir, PROJECT).exists(), result.explain()
        return result

    def rollback_refs(self) -> list[str]:
        """The references the role keeps on previous images while a rollback point exists."""
        listed = self.stack.docker(
            "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", ROLLBACK_REPO
        )
        return listed.stdout.split()

    def restore_v1(self) -> None:
        """Version 1 running, no lock or rollback point (what a failed test may have left)."""
        self.stack.docker("tag", self.v1, self.app_ref)
        self.stack.compose(self.compose_file, PROJECT, "up", "-d", "--wait")
        assert set(self.images().values()) == {self.v1}
        for leftover in self.lock_dir.glob(f"{PROJECT}.*"):
            leftover.unlink()


@pytest.fixture
def site(module_site: Site) -> Site:
    module_site.restore_v1()
    return module_site


@pytest.fixture(scope="module")
def module_site(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("role-rollback")
    build_app_image(stack, APP, "1")
    project_dir = base / PROJECT
    project_dir.mkdir()
    compose_file = project_dir / "docker-compose.yml"
    compose_file.write_text(COMPOSE_FILE.replace("@APP@", f"{stack.registry}/{APP}:latest"))
    stack.compose(compose_file, PROJECT, "up", "-d", "--wait")
    token_file = base / "registry-token"
    token_file.write_text(stack.registry_password)
    token_file.chmod(0o600)
    env = {
        **stack.env(),
        **playbook_environment(
            stack,
            compose_file=compose_file,
            project=PROJECT,
            token_file=token_file,
            lock_dir=base / "locks",
        ),
    }
    for name in ("ROLLBACK_ON_MIGRATION_FAILURE", "JOB_TIMEOUT", "UPDATE_SERVICES"):
        env.pop(name, None)
    v1 = running_image_ids(stack, PROJECT)["api"]
    yield Site(stack, compose_file, base / "locks", env, v1)
    stack.compose(compose_file, PROJECT, "down", "--volumes", "--timeout", "1", check=False)


def assert_rolled_back(site: Site, run: PlaybookRun, step: str) -> None:
    assert run.returncode != 0, run.explain()
    assert run.report["rolled_back"] is True, run.explain()
    assert run.report["rollback_error"] is None
    assert run.report["rollback_cause"]["step"] == step
    for service in ("api", "worker"):
        assert run.report["rollback"][service]["image_id"] == site.v1, run.explain()
    assert run.failures[-1][0] == f"{step} | Fail the update after rolling back what it changed"
    assert "Rolled back: " in run.failures[-1][1]
    assert set(site.images().values()) == {site.v1}
    assert site.rollback_refs() == []  # released with the rollback point


@pytest.mark.parametrize("tag", ["recreate", "migrations"])
def test_a_failed_step_under_its_tag_is_rolled_back(site: Site, tag: str) -> None:
    """An operator pulls first (`--tags pull`), then recreates (`--tags recreate`, or runs the
    migrations with `--tags recreate,migrations`): the rescue runs under every tag."""
    new = site.publish("crash" if tag == "recreate" else "migrate_fail")
    pulled = site.run("--tags", "pull")
    assert pulled.returncode == 0, pulled.explain()
    assert set(site.images().values()) == {site.v1}  # pulled, nothing recreated

    tags = "recreate" if tag == "recreate" else "recreate,migrations"
    run = site.run("--tags", tags)
    assert run.report["services"]["api"]["after"]["image_id"] == new, run.explain()
    assert_rolled_back(site, run, "Recreate" if tag == "recreate" else "Migrations")


def failing_docker_ps(directory: Path, fail_call: int) -> dict[str, str]:
    """Environment whose `docker` fails its `fail_call`-th `docker ps` (the role's snapshots)
    and passes everything else to the real CLI. DOCKER_CONTEXT=default makes the snapshot
    module use the CLI instead of the daemon's socket."""
    directory.mkdir()
    counter = directory / "ps-calls"
    wrapper = directory / "docker"
    wrapper.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = ps ]; then\n'
        f"  n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n >{counter}\n"
        f'  if [ $n -eq {fail_call} ]; then echo "injected fault: docker ps" >&2; exit 1; fi\n'
        "fi\n"
        f'exec {docker_binary()} "$@"\n'
    )
    wrapper.chmod(0o755)
    return {"PATH": f"{directory}:{os.environ['PATH']}", "DOCKER_CONTEXT": "default"}


def test_a_failed_recreate_is_rolled_back_when_the_state_after_cannot_be_read(
    site: Site, tmp_path: Path
) -> None:
    """The after-snapshot (the second `docker ps`) fails: the recreate was attempted, so the
    rescue reads the state itself and rolls back; the summary does not claim nothing changed."""
    new = site.publish("crash")
    run = site.run(env=failing_docker_ps(tmp_path / "bin", fail_call=2))
    assert "injected fault" in run.failure_text, run.explain()
    assert "No container was changed" not in run.failure_text
    assert run.report["services"]["api"]["after"]["image_id"] == new, run.explain()
    assert_rolled_back(site, run, "Recreate")


def test_a_cut_off_update_is_rolled_back_after_an_image_prune(site: Site) -> None:
    """Killed mid-recreate, then `docker image prune` on the host (a cron job, an operator):
    the previous image lost its tag at the pull and no container uses it any more, yet the
    rollback point's images stay referenced, so rollback.yml restores them."""
    original = site.compose_file.read_text()
    site.compose_file.write_text(
        original.replace("      retries: 3\n", "      retries: 3\n      start_period: 300s\n")
    )
    try:
        new = site.publish("unhealthy")
        inventory, shell = operator_run(site.env)
        cut = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
                "playbooks/update.yml", "-e",
                json.dumps(
                    {"compose_update_job_id": CUTOFF_JOB, "compose_update_run_migrations": False},
                    separators=(",", ":"),
                ),
            ],
            cwd=REPO_ROOT, env=shell, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(CommandError):
                if set(site.images().values()) == {new}:
                    break
            assert time.monotonic() < deadline and cut.poll() is None, "never got to recreate"
            time.sleep(0.2)
        end_process_groups(ansible_processes_of(CUTOFF_JOB))
        cut.wait(timeout=30)
        point = rollback_point_path(site.stack, site.lock_dir, PROJECT)
        assert point.exists()
        assert json.loads(point.read_text())["before"]["api"]["image_id"] == site.v1
        site.stack.docker(
            "image", "prune", "--force", "--filter", "label=io.update-executor.testbed.behaviour"
        )

        rollback = run_playbook(
            site.env, playbook="playbooks/rollback.yml", report_key="update_executor_rollback"
        )
        assert rollback.returncode == 0, rollback.explain()
        assert rollback.report["rolled_back"] is True, rollback.explain()
        assert rollback.report["rollback"]["api"]["image_id"] == site.v1
        assert not point.exists()
        assert set(site.images().values()) == {site.v1}
        assert site.rollback_refs() == []
    finally:
        site.compose_file.write_text(original)


def test_a_successful_update_leaves_no_rollback_reference(site: Site) -> None:
    new = site.publish()
    run = site.run()
    assert run.returncode == 0, run.explain()
    assert set(site.images().values()) == {new}
    assert site.rollback_refs() == []


def test_a_docker_context_is_the_one_daemon_of_every_step(site: Site, tmp_path: Path) -> None:
    """The operator's current docker context (no DOCKER_HOST, no compose_update_docker_host)
    points at another daemon: login, pull, retag and recreate all reach that daemon; the
    bed's daemon (whose project has the same name) is not touched."""
    with another_dockerd("ue-ctx-") as away:
        away_env = {**site.stack.env(), "DOCKER_HOST": away}

        def away_docker(*args: str) -> str:
            done = subprocess.run(
                ["docker", *args], env=away_env, capture_output=True, text=True, check=False
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        away_docker("--config", str(site.stack.docker_config), "pull", site.app_ref)
        compose = ["compose", "-f", str(site.compose_file), "-p", PROJECT]
        away_docker(*compose, "up", "-d", "--wait")
        config = tmp_path / "docker-config"
        config.mkdir()
        away_docker(
            "--config", str(config), "context", "create", "away", "--docker", f"host={away}"
        )
        away_docker("--config", str(config), "context", "use", "away")
        bed_containers = site.containers()
        new = site.publish()

        shell = {k: v for k, v in site.env.items() if k != "DOCKER_HOST"}
        run = run_playbook({**shell, "DOCKER_CONFIG": str(config)})
        assert run.returncode == 0, run.explain()
        ids = away_docker(*compose, "ps", "-aq").split()
        images = away_docker("inspect", "--format", "{{.Image}}", *ids).split()
        assert set(images) == {new}, run.explain()
        assert site.containers() == bed_containers  # the bed's daemon was not touched
        assert set(site.images().values()) == {site.v1}
        away_docker(*compose, "down", "--volumes", "--timeout", "1")
