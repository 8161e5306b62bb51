# -*- coding: utf-8 -*-
"""The environment every docker and docker compose command of update-executor runs with.

Compose interpolates ${VAR} in the compose file from the shell's environment first and the
project's `.env` second, and a variable that is set wins even when it is empty. The worker's
own settings use the names applications use (REDIS_QUEUE_HOST, COMPOSE_FILE_PATH,
REGISTRY_URL, GITHUB_TOKEN, ...): handed to compose, they would become the containers'
configuration. So compose gets what an operator's login shell would give it for the project:
the variables below, plus the names listed in COMPOSE_ENV_PASSTHROUGH, and nothing else; the
project's `.env` (or COMPOSE_ENV_FILES) does the rest, read by compose itself.

Shared by the role's own modules (roles/compose_update/library/), and by the worker
(worker/host/compose.py: its own `compose config`, and ansible_exec.py: ansible-playbook's
environment).
"""

from __future__ import annotations

import re

# An operator's shell: where programs are, whose home (~/.docker), temp files, the language.
BASE_NAMES = ("PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "LANG", "LANGUAGE")
# How the docker CLI reaches the daemon and where its configuration and CLI plugins live
# (rootless Docker finds its socket through XDG_RUNTIME_DIR, ssh:// hosts use the agent).
DOCKER_NAMES = (
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_CERT_PATH",
    "DOCKER_TLS_VERIFY",
    "DOCKER_API_VERSION",
    "XDG_RUNTIME_DIR",
    "SSH_AUTH_SOCK",
)
# Compose's own choice of env files (instead of the project's .env), e.g. ".env,secrets.env".
COMPOSE_NAMES = ("COMPOSE_ENV_FILES",)
PASSTHROUGH_VARIABLE = "COMPOSE_ENV_PASSTHROUGH"
# Never passed, even when listed in COMPOSE_ENV_PASSTHROUGH: the worker's secrets.
NEVER_PASSED = ("GITHUB_TOKEN", "REDIS_QUEUE_PASSWORD", "UPDATE_JOB_SECRET")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def passthrough_names(value):
    """The names of a COMPOSE_ENV_PASSTHROUGH value ("TAG, RELEASE"): valid names only."""
    names = [part.strip() for part in (value or "").split(",")]
    return [name for name in names if NAME.fullmatch(name) and name not in NEVER_PASSED]


def compose_environment(environ, extra=None):
    """The environment for a docker/compose command, from `environ` (the process's own):
    the base, Docker and locale variables that are set, the COMPOSE_ENV_PASSTHROUGH names that
    are set, then `extra` (e.g. a private DOCKER_CONFIG). Anything else is left out: absent,
    not empty, so that the project's .env decides."""
    wanted = set(BASE_NAMES + DOCKER_NAMES + COMPOSE_NAMES)
    wanted.update(passthrough_names(environ.get(PASSTHROUGH_VARIABLE)))
    env = {
        name: value
        for name, value in environ.items()
        if name in wanted or name == "LC_ALL" or name.startswith("LC_")
    }
    env.update({str(key): str(value) for key, value in (extra or {}).items()})
    return env
