"""The package as a user installs it (issue 14): the wheel, non-editable, in a fresh virtualenv.

On the host, `update-executor[worker]`: the worker started from a directory that has nothing
to do with the checkout, one update end to end through the queue; the Ansible content must
come from the installed package. In an app image, `update-executor[api]` alone: the router
imports and serves, the client commands run, and there is no Ansible in that venv. Both
venvs' sizes are printed (docs/operations.md quotes them)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.faults import operator_run
from tests.integration.conftest import Deployment, cli_worker
from tests.summary_schema import assert_valid_summary
from worker.shared.client import UpdateClient

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTENT_PROBE = "from worker.host.settings import ANSIBLE_CONTENT; print(ANSIBLE_CONTENT)"


def fresh_venv(
    path: Path, wheelhouse: Path, requirement: str = "update-executor[worker]", compile: bool = True
) -> Path:
    """`python3 -m venv` + `pip install <requirement>` from the wheelhouse only. `compile=False`
    adds `--no-compile`: the same files, without the bytecode pip writes for every module at
    install (Python writes it on import instead); for the worker's venv (Ansible's collections)
    the install took 122 s with it, 22 s without, on a loaded 2-CPU machine (issue 22)."""
    base_python = Path(sys.base_prefix) / "bin" / "python3"
    subprocess.run([str(base_python), "-m", "venv", str(path)], check=True, timeout=120)
    pip = [str(path / "bin" / "pip"), "install", "--quiet", "--no-index"]
    if not compile:
        pip.append("--no-compile")
    subprocess.run([*pip, "--find-links", str(wheelhouse), requirement], check=True, timeout=600)
    return path


def size_mb(path: Path) -> float:
    """What a directory takes on disk (MB), like `du -s`."""
    return sum(f.lstat().st_blocks * 512 for f in path.rglob("*")) / 1e6


def env_without_checkout(deployment: Deployment) -> dict[str, str]:
    """The worker's environment, minus every trace of this checkout and its venv."""
    env = deployment.worker_env()
    env.pop("PYTHONPATH", None)
    env["PATH"] = os.pathsep.join(
        part for part in env["PATH"].split(os.pathsep) if not part.startswith(str(REPO_ROOT))
    )
    return env


def installed_content(venv: Path, cwd: Path, env: dict[str, str]) -> Path:
    """Where the installed worker finds its playbooks, inventory and ansible.cfg."""
    probe = [str(venv / "bin" / "python"), "-c", CONTENT_PROBE]
    done = subprocess.run(probe, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return Path(done.stdout.strip())


@contextlib.contextmanager
def installed_worker(venv: Path, cwd: Path, env: dict[str, str]) -> Iterator[list[str]]:
    """`update-executor worker` from the venv; yields a list that receives its output."""
    output: list[str] = []
    log = cwd.parent / "worker-output.log"
    try:
        with cli_worker(env, log=log, cli=str(venv / "bin" / "update-executor"), cwd=cwd):
            yield output
    finally:
        output.append(log.read_text(errors="replace"))


def dry_run_by_hand(venv: Path, content: Path, env: dict[str, str]) -> None:
    """`ansible-playbook` from the installed package's content dir (docs/operations.md)."""
    inventory, shell = operator_run(env)  # the settings as the role's group_vars
    playbook = [str(venv / "bin" / "ansible-playbook"), "-i", str(inventory)]
    args = ["playbooks/update.yml", "--check", "-e", "compose_update_run_migrations=false"]
    done = subprocess.run(
        [*playbook, *args],
        cwd=content,
        env=shell,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "failed=0" in done.stdout


@pytest.fixture
def deployment(shared_deployment: Deployment) -> Deployment:
    """The module's deployment (none of these tests leaves it changed but for a new version),
    on a queue of each test's own."""
    return shared_deployment.with_fresh_queue()


async def test_the_wheel_in_a_fresh_venv_updates_from_an_unrelated_directory(
    deployment: Deployment, client: UpdateClient, wheelhouse: Path, tmp_path: Path
) -> None:
    venv = fresh_venv(tmp_path / "venv", wheelhouse, compile=False)
    print(f"update-executor[worker] venv: {size_mb(venv):.0f} MB without bytecode")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = env_without_checkout(deployment)
    content = installed_content(venv, elsewhere, env)
    # The playbooks are the package's own copy, real files, with the role (issue 13: the
    # action plugins that were links in the repository are gone).
    assert content.is_relative_to(venv), content
    module = content / "playbooks" / "roles" / "compose_update" / "library" / "update_lock.py"
    assert module.is_file() and not module.is_symlink()

    new_app = deployment.publish(deployment.app_repo, deployment.next_version())
    job_id = await client.enqueue_update(services=["api", "worker"], requested_by="wheel")
    with installed_worker(venv, elsewhere, env) as output:
        summary = assert_valid_summary(await client.result(job_id, timeout=200))
    assert summary["status"] == "successful", summary["error"]
    assert deployment.image_ids()["api"] == new_app
    assert str(REPO_ROOT) not in output[0]

    dry_run_by_hand(venv, content, env)


API_PROBE = """
import importlib.metadata, importlib.util, sys
from fastapi import FastAPI
from worker.api import SharedClient, build_router



def require_superuser() -> None:  # the application's own check (docs/api.md)
    return None


app = FastAPI()
app.include_router(build_router(SharedClient(), require_superuser), prefix="/api")
schema = app.openapi()  # builds every route's model
installed = {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
print(sorted(schema["paths"]))
print(sorted(installed & {"ansible", "ansible-core", "ansible-runner", "requests", "apprise",
                          "prometheus-client"}))
print(sorted(m for m in ("ansible", "ansible_runner", "requests") if importlib.util.find_spec(m)))
print(sorted(m for m in sys.modules if m.startswith("worker.host")))
"""


def test_the_api_extra_alone_serves_the_router_without_ansible(
    deployment: Deployment, wheelhouse: Path, tmp_path: Path
) -> None:
    """`pip install 'update-executor[api]'` in a fresh venv, as in an app image: the router
    mounts (its OpenAPI schema builds), the CLI's client commands reach the queue, and
    neither Ansible, ansible-runner nor the worker's other dependencies are installed."""
    venv = fresh_venv(tmp_path / "api-venv", wheelhouse, "update-executor[api]")
    print(f"update-executor[api] venv: {size_mb(venv):.0f} MB")
    env = env_without_checkout(deployment)
    python = str(venv / "bin" / "python")
    done = subprocess.run(
        [python, "-c", API_PROBE],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    paths, distributions, importable, host_modules = done.stdout.strip().splitlines()
    assert "/api/system/update/trigger" in paths
    assert distributions == "[]"  # no ansible, ansible-core, ansible-runner, requests, ...
    assert importable == "[]"
    assert host_modules == "[]"

    cli = str(venv / "bin" / "update-executor")
    status = subprocess.run(
        [cli, "status", "no-such-job"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 3, status.stderr  # answered by Redis: not_found (EXIT_NOT_FOUND)
    assert '"state": "not_found"' in status.stdout
    worker = subprocess.run(
        [cli, "worker"], cwd=tmp_path, env=env, capture_output=True, text=True, check=False
    )
    assert worker.returncode == 2
    assert "pip install 'update-executor[worker]'" in worker.stderr


def test_start_up_names_missing_ansible_content(deployment: Deployment, tmp_path: Path) -> None:
    """A broken install (or a wrong UPDATE_PLAYBOOK) stops the worker at start, naming what
    is missing, before it takes a job."""
    env = {**deployment.worker_env(), "UPDATE_PLAYBOOK": str(tmp_path / "nowhere" / "update.yml")}
    cli = Path(sys.executable).parent / "update-executor"
    done = subprocess.run(
        [str(cli), "worker", "--burst"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3, done.stderr
    assert f"the playbook (UPDATE_PLAYBOOK) {tmp_path}/nowhere/update.yml does not exist" in (
        done.stderr
    )
    assert "the rollback playbook" in done.stderr
