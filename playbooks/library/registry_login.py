#!/usr/bin/python
# -*- coding: utf-8 -*-
"""registry_login: log in to the registry with a private Docker config for one run (see docs/internals.md)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: registry_login
short_description: Log in to a registry with a private Docker config directory for this run
description:
  - Reads the registry token (from O(token_file), or O(token)), creates a private Docker config
    directory for the run (mode 0700, in O(parent_dir)), keeps the user's Docker CLI plugins
    visible in it, and runs C(docker login --username ... --password-stdin) with that config. The
    token is written to docker's standard input, so it never appears in a process's arguments or
    environment or in the result; a failure message has it masked. Docker keeps the login in the
    private directory, which the playbook removes at the end.
  - Returns the directory as the fact C(ue_docker_config.path); the registry commands of the run
    use it as C(DOCKER_CONFIG) and the playbook removes it at the end. When the login fails the
    directory is removed here, and nothing is returned but the message.
  - Runs in check mode too (a dry run checks the login).
  - update-executor's playbook runs it through the action plugin of the same name
    (playbooks/action_plugins/registry_login.py), inside ansible-playbook, one task instead of six
    (a task costs 30-50 ms, see docs/performance.md). Its result holds no token; O(token) is
    an argument, which ansible shows nowhere for an action plugin (no C(invocation)).
version_added: "1.0.0"
author: update-executor
options:
  registry:
    description: The registry to log in to (for example C(ghcr.io)).
    type: str
    required: true
  username:
    description: Registry user.
    type: str
    default: ""
  token_file:
    description: File holding the token (preferred); its content is trimmed.
    type: path
  token:
    description: The token itself, when there is no O(token_file) (manual runs).
    type: str
  parent_dir:
    description: Directory the private config directory is created in.
    type: path
    required: true
  name:
    description: Part of the directory's name (the job id); characters outside C([A-Za-z0-9_.-]) become C(_).
    type: str
    default: manual
  plugin_dir:
    description: The user's Docker CLI plugin directory; linked into the private config when it exists.
    type: path
  timeout:
    description: Seconds after which the login is stopped and fails.
    type: int
    default: 300
"""

EXAMPLES = r"""
---
- name: Login | Log in to the registry with a private Docker config
  registry_login:
    registry: ghcr.io
    username: deploy-bot
    token_file: /etc/update-executor/ghcr-token
    parent_dir: /tmp
    name: "42"
"""

RETURN = r"""
ansible_facts:
  description: C(ue_docker_config) = {path} of the private Docker config directory.
  returned: success
  type: dict
"""

import os
import re
import shutil
import subprocess
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.update_executor_env import compose_environment

ARGUMENT_SPEC = {
    "registry": {"type": "str", "required": True},
    "username": {"type": "str", "default": ""},
    "token_file": {"type": "path"},
    "token": {"type": "str", "no_log": True},
    "parent_dir": {"type": "path", "required": True},
    "name": {"type": "str", "default": "manual"},
    "plugin_dir": {"type": "path"},
    "timeout": {"type": "int", "default": 300},
}
MASK = "********"


class LoginFailed(Exception):
    pass


def read_token(token_file, token):
    """The token from the file (preferred) or the value, trimmed."""
    if token_file:
        if not os.path.isfile(token_file):
            raise LoginFailed("Registry token file '%s' does not exist or is not a file." % token_file)
        try:
            with open(token_file, encoding="utf-8") as handle:
                return handle.read().strip()
        except OSError as err:
            raise LoginFailed("Registry token file '%s' cannot be read: %s" % (token_file, err.strerror))
    return (token or "").strip()


def masked(text, secret):
    return text.replace(secret, MASK) if secret else text


def login_failure(registry, username, detail, token):
    return "Login to %s as %s failed: %s" % (registry, username, masked(detail, token))


def docker_login(registry, username, token, config_dir, timeout):
    """Run docker login with the token on stdin; raise LoginFailed with docker's message."""
    environment = compose_environment(os.environ, {"DOCKER_CONFIG": config_dir})
    argv = ["docker", "login", "--username", username, "--password-stdin", registry]
    try:
        done = subprocess.run(argv, input=token.encode("utf-8"), capture_output=True, env=environment,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise LoginFailed(login_failure(registry, username, "docker login timed out after %d s" % timeout, token))
    except OSError as err:
        raise LoginFailed(login_failure(registry, username, "docker login could not start: %s" % err, token))
    if done.returncode != 0:
        output = (done.stderr or done.stdout).decode("utf-8", "replace").strip()
        detail = "docker login failed (exit status %d): %s" % (
            done.returncode, "\n".join(output.splitlines()[-20:])[-2000:] or "no output")
        raise LoginFailed(login_failure(registry, username, detail, token))


def run_task(params):
    token = ""
    config_dir = None
    try:
        token = read_token(params["token_file"], params["token"])
        if not token or not params["username"]:
            raise LoginFailed("A registry token is configured but it is empty or registry_username is not set.")
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", params["name"] or "")
        # mkdtemp makes it 0700: only this user can read the credentials docker login writes there.
        config_dir = tempfile.mkdtemp(prefix="update-executor-%s-" % name, dir=params["parent_dir"])
        plugin_dir = params["plugin_dir"]
        if plugin_dir and os.path.isdir(plugin_dir):
            # The compose plugin may be installed per user in ~/.docker/cli-plugins: keep it reachable.
            os.symlink(plugin_dir, os.path.join(config_dir, "cli-plugins"))
        docker_login(params["registry"], params["username"], token, config_dir, params["timeout"])
    except (LoginFailed, OSError) as err:
        if config_dir is not None:
            shutil.rmtree(config_dir, ignore_errors=True)
        message = str(err) if isinstance(err, LoginFailed) else login_failure(
            params["registry"], params["username"], str(err), token)
        return dict(failed=True, changed=False, msg=message)
    return dict(changed=True, ansible_facts={"ue_docker_config": {"path": config_dir}})


def run_in_controller(params, check_mode):
    """The task run inside ansible-playbook (playbooks/action_plugins/controller_step.py); a
    dry run logs in too (the task says check_mode: false)."""
    return run_task(params)


def main():
    # The playbook runs this logic inside ansible-playbook through the action plugin of the same
    # name (playbooks/action_plugins/registry_login.py); this entry point serves other callers.
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result = run_task(module.params)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
