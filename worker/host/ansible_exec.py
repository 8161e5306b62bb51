"""ansible-playbook with the environment of an operator's shell, never the worker's settings.

community.docker's modules hand docker compose the environment of the module's process, which
(connection local) is ansible-playbook's, and ansible-runner starts ansible-playbook with a copy
of the worker's whole environment. Compose gives a *set* variable precedence over the project's
`.env`, even an empty one, and the worker's settings use the names applications use
(REDIS_QUEUE_HOST, COMPOSE_FILE_PATH, REGISTRY_URL, GITHUB_TOKEN, ...). So ansible-runner runs
this program (its `binary`): it replaces itself with ansible-playbook, keeping only

- what compose may see: `compose_environment` (playbooks/roles/compose_update/module_utils/
  update_executor_env.py: PATH, HOME, locale, the Docker connection, COMPOSE_ENV_FILES and the
  COMPOSE_ENV_PASSTHROUGH names), and
- what ansible and ansible-runner's callback need: ANSIBLE_*, RUNNER_*, AWX_*, PYTHONPATH and
  the few names ansible-runner sets for its event plugin.

Everything else is absent, so every step of the role (on localhost) runs with that environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from .compose import compose_environment

# ansible-runner's settings for ansible-playbook and its event callback plugin.
ANSIBLE_PREFIXES = ("ANSIBLE_", "RUNNER_", "AWX_")
ANSIBLE_NAMES = (
    "PYTHONPATH",
    "ORIGINAL_STDOUT_CALLBACK",
    "AD_HOC_COMMAND_ID",
    "JOB_ID",
    "PROJECT_UPDATE_ID",
)


def playbook_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment ansible-playbook runs with: compose's allow-list plus ansible's own."""
    env = compose_environment(environ)
    env.update(
        (name, value)
        for name, value in environ.items()
        if name.startswith(ANSIBLE_PREFIXES) or name in ANSIBLE_NAMES
    )
    return env


def ansible_playbook() -> str:
    """ansible-playbook of this interpreter's environment (the worker's virtualenv)."""
    return str(Path(sys.executable).parent / "ansible-playbook")


def main() -> None:
    program = ansible_playbook()
    os.execve(program, [program, *sys.argv[1:]], playbook_environment(os.environ))  # noqa: S606


if __name__ == "__main__":
    main()
