"""The environment docker compose runs with (playbooks/module_utils/update_executor_env.py,
used by the playbooks' steps, the dry run's filter and the worker): an operator's shell, never
the worker's settings (issue 12)."""

from __future__ import annotations

import shlex

import pytest

from worker.host import compose, settings

from .playbook_code import load

env_module = load("module_utils/update_executor_env")
env_filter = load("filter_plugins/update_env")

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


def test_the_dry_runs_prefix_gives_the_same_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.environ", dict(WORKER))
    words = shlex.split(env_filter.compose_env_prefix())
    assert words[:2] == ["env", "-i"]
    assert dict(word.split("=", 1) for word in words[2:]) == BASE


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
