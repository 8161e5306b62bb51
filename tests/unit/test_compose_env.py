"""The environment docker compose runs with (the role's module_utils/update_executor_env.py,
used by the role's modules, worker.host.ansible_exec and the worker): an operator's shell, never the
worker's settings (issue 12)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from worker.host import ansible_exec, compose, runner, settings

from .playbook_code import load

env_module = load("module_utils/update_executor_env")

WORKER = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "LC_TIME": "en_GB.UTF-8",
    "TMPDIR": "/tmp/x",
    "DOCKER_HOST": "unix:///run/d.sock",
    "DOCKER_CONFIG": "/etc/ue/docker",
    "REDIS_QUEUE_HOST": "127.0.0.1",
    "REDIS_QUEUE_PORT": "6380",
    "COMPOSE_FILE_PATH": "/srv/app/docker-compose.prod.yml",
    "COMPOSE_PROJECT_NAME": "app",
    "REGISTRY_URL": "ghcr.io",
    "GITHUB_TOKEN": "",
    "GITHUB_TOKEN_FILE": "/etc/ue/token",
    "UPDATE_JOB_SECRET": "s" * 40,
    "UPDATE_QUEUE_NAME": "q",
    "ANSIBLE_CONFIG": "/opt/ue/ansible.cfg",
    "TZ": "Europe/Paris",
    "INVOCATION_ID": "abc",
}
BASE = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "LC_TIME": "en_GB.UTF-8",
    "TMPDIR": "/tmp/x",
    "DOCKER_HOST": "unix:///run/d.sock",
    "DOCKER_CONFIG": "/etc/ue/docker",
}


@pytest.mark.parametrize(
    ("environ", "extra", "expected"),
    [
        pytest.param(WORKER, None, BASE, id="worker settings and secrets are absent"),
        pytest.param({}, None, {}, id="nothing set, nothing made up"),
        pytest.param(
            {**WORKER, "COMPOSE_ENV_PASSTHROUGH": "TZ, RELEASE,,bad-name"},
            None,
            {**BASE, "TZ": "Europe/Paris"},
            id="passthrough: listed and set names only",
        ),
        pytest.param(
            {**WORKER, "COMPOSE_ENV_PASSTHROUGH": "GITHUB_TOKEN,UPDATE_JOB_SECRET"},
            None,
            BASE,
            id="passthrough never passes the worker's secrets",
        ),
        pytest.param(
            WORKER,
            {"DOCKER_CONFIG": "/tmp/job/docker"},
            {**BASE, "DOCKER_CONFIG": "/tmp/job/docker"},
            id="extra wins (the login's private Docker config)",
        ),
        pytest.param(
            {"COMPOSE_ENV_FILES": ".env,secrets.env", "COMPOSE_FILE": "other.yml"},
            None,
            {"COMPOSE_ENV_FILES": ".env,secrets.env"},
            id="compose's env files pass, another compose file does not",
        ),
        pytest.param(
            {"DOCKER_CONTEXT": "remote", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/c"},
            None,
            {"DOCKER_CONTEXT": "remote", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/c"},
            id="docker connection variables pass",
        ),
    ],
)
def test_compose_environment(
    environ: dict[str, str], extra: dict[str, str] | None, expected: dict[str, str]
) -> None:
    assert env_module.compose_environment(environ, extra) == expected
    assert compose.compose_environment(environ, extra) == expected


def test_ansible_playbook_runs_with_the_compose_environment_plus_ansibles_own() -> None:
    """The worker runs ansible-playbook through worker.host.ansible_exec: community.docker's modules
    hand compose ansible-playbook's environment, so the worker's settings are not in it."""
    runner_env = {
        **WORKER,
        "ANSIBLE_CONFIG": "/opt/ue/ansible.cfg",
        "ANSIBLE_CALLBACK_PLUGINS": "/x/callbacks",
        "RUNNER_OMIT_EVENTS": "False",
        "AWX_ISOLATED_DATA_DIR": "/x/artifacts",
        "PYTHONPATH": "/x/lib",
    }
    env = ansible_exec.playbook_environment(runner_env)
    assert env == {
        **BASE,
        "ANSIBLE_CONFIG": "/opt/ue/ansible.cfg",
        "ANSIBLE_CALLBACK_PLUGINS": "/x/callbacks",
        "RUNNER_OMIT_EVENTS": "False",
        "AWX_ISOLATED_DATA_DIR": "/x/artifacts",
        "PYTHONPATH": "/x/lib",
    }
    for name in ("REDIS_QUEUE_HOST", "COMPOSE_FILE_PATH", "REGISTRY_URL", "GITHUB_TOKEN"):
        assert name not in env


def test_the_launcher_execs_ansible_playbook_with_that_environment(tmp_path: Path) -> None:
    launcher = runner.write_launcher(tmp_path)
    assert stat.S_IMODE(launcher.stat().st_mode) == 0o700
    assert "from worker.host.ansible_exec import main" in launcher.read_text()


def test_the_worker_and_the_playbooks_never_pass_the_same_secrets() -> None:
    assert set(settings.NEVER_PASSED_TO_COMPOSE) == set(env_module.NEVER_PASSED)


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("TAG,RELEASE", None),
        ("TAG, bad-name", "'bad-name' is not a variable name"),
        ("GITHUB_TOKEN", "GITHUB_TOKEN is a secret of the worker's"),
    ],
)
def test_the_passthrough_setting_is_checked(value: str, problem: str | None) -> None:
    environ = {"COMPOSE_ENV_PASSTHROUGH": value, "LOG_FILE": ""}
    if problem is None:
        assert settings.Settings.from_env(environ).compose_env_passthrough == ("TAG", "RELEASE")
    else:
        with pytest.raises(settings.ConfigError, match=problem):
            settings.Settings.from_env(environ)
