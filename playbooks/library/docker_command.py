#!/usr/bin/python
# -*- coding: utf-8 -*-
"""docker_command: run one docker CLI command (no shell) for update-executor (see docs/internals.md)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: docker_command
short_description: Run a docker or docker compose command without a shell
description:
  - Runs O(argv) (no shell), optionally with O(stdin) on its standard input, extra O(environment)
    and a O(timeout), and returns its exit status, stdout and stderr. A non-zero exit status
    fails the task with a message that names the command (O(description)) and its errors.
  - The playbooks of update-executor use it for C(docker login --password-stdin), C(docker
    compose pull), C(docker compose up) and C(docker compose exec). They run it through the
    action plugin of the same name (playbooks/action_plugins/docker_command.py), which runs the
    command in the controller process (the play only targets localhost with the local
    connection, so a module process per command would only add an interpreter start-up).
  - With O(compose_events=true) the command is a C(docker compose ... --progress json ...) call
    and its stderr is read as compose's JSON events, the way community.docker's compose modules
    read them; C(changed) then says whether compose created, recreated, started, stopped or
    removed something or downloaded image layers, and a failure message lists compose's errors.
version_added: "1.0.0"
author: update-executor
options:
  argv:
    description: The command and its arguments; run as is, without a shell.
    type: list
    elements: str
    required: true
  command_line:
    description:
      - More arguments, appended to O(argv) after splitting them with shell rules (quotes, backslashes);
        no shell runs them. For a command configured as one string (the migration command).
    type: str
  chdir:
    description: Directory to run the command in.
    type: path
  stdin:
    description:
      - Data written to the command's standard input (for example the registry token of C(docker
        login --password-stdin)). It never appears in the arguments, the environment or the result;
        use C(no_log) on the task as well. Without it the standard input is C(/dev/null).
    type: str
  environment:
    description:
      - Variables added to the environment of the command (for example C(DOCKER_CONFIG)).
      - The command never gets the whole environment of ansible-playbook, only the variables an
        operator's shell gives compose (C(PATH), C(HOME), the Docker connection and locale
        variables, the names listed in C(COMPOSE_ENV_PASSTHROUGH)); see docs/internals.md.
    type: dict
    default: {}
  timeout:
    description: Seconds after which the command is stopped and the task fails; V(0) means no limit.
    type: int
    default: 0
  description:
    description: What the command does, in a few words, for the failure message (default the command line).
    type: str
  check_rc:
    description: Fail the task when the exit status is not 0; with V(false) the status is only returned in RV(rc).
    type: bool
    default: true
  compose_events:
    description: Read stderr as compose's JSON events (the command has C(--progress json)) for C(changed) and errors.
    type: bool
    default: false
  dry_run_in_check_mode:
    description:
      - In check mode, run compose's dry run of the command (C(--dry-run) after C(compose)) instead of skipping it.
      - Without it the command is skipped in check mode (tasks that must run in a dry run say C(check_mode=false)).
    type: bool
    default: false
notes:
  - C(changed) is V(true) whenever the command ran, unless O(compose_events=true).
"""

EXAMPLES = r"""
---
- name: Pull | Pull the images of the target services
  docker_command:
    argv: [docker, compose, --ansi, never, --progress, json, --project-name, app, pull, --, api]
    chdir: /srv/app
    environment:
      DOCKER_CONFIG: /tmp/update-executor-42-abcd1234
    compose_events: true
    dry_run_in_check_mode: true
    description: docker compose pull
    timeout: 1800
"""

RETURN = r"""
cmd:
  description: The command that ran (O(argv) and O(command_line), with C(--dry-run) in check mode).
  returned: when the command ran
  type: list
rc:
  description: Exit status of the command; null when it could not be started or timed out.
  returned: always
  type: int
stdout:
  description: Standard output, without trailing newlines.
  returned: always
  type: str
stderr:
  description:
    - Standard error, without trailing newlines.
    - With O(compose_events=true), only the lines that are not compose's JSON events (those are
      read into C(changed) and the failure message).
  returned: always
  type: str
"""

import json
import os
import shlex
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.update_executor_env import compose_environment

ARGUMENT_SPEC = {
    "argv": {"type": "list", "elements": "str", "required": True},
    "command_line": {"type": "str"},
    "chdir": {"type": "path"},
    "stdin": {"type": "str", "no_log": True},
    "environment": {"type": "dict", "default": {}},
    "timeout": {"type": "int", "default": 0},
    "description": {"type": "str"},
    "check_rc": {"type": "bool", "default": True},
    "compose_events": {"type": "bool", "default": False},
    "dry_run_in_check_mode": {"type": "bool", "default": False},
}

# Compose event statuses that mean compose changed something (community.docker's DOCKER_STATUS_WORKING
# without Pulling: a pull reports Pulling for every image, new or not; new layers show up as layer events).
CHANGING_STATUSES = frozenset(
    ("Creating", "Starting", "Restarting", "Stopping", "Killing", "Removing", "Recreate", "Building")
)
# Progress of an image layer being downloaded (compose prints these for layers, not resources).
LAYER_PROGRESS = frozenset(("Pulling fs layer", "Waiting", "Downloading", "Verifying Checksum", "Extracting", "Working"))
KNOWN_STATUSES = CHANGING_STATUSES | frozenset(
    ("Started", "Healthy", "Exited", "Restarted", "Running", "Created", "Stopped", "Killed", "Removed",
     "Recreated", "Pulled", "Pulling", "Built", "Error", "Warning", "Waiting")
)
STOP_GRACE = 10


def compose_event(line):
    """The event of one line of compose's `--progress json` stderr, or None for another line."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def read_compose_events(stderr):
    """(changed, errors) from compose's `--progress json` stderr: whether compose changed
    something, and its error messages in order. Lines that are not JSON count as errors."""
    changed = False
    errors = []
    for line in stderr.splitlines():
        line = line.strip()
        if not line:
            continue
        event = compose_event(line)
        if event is None:
            errors.append(line)
            continue
        if event.get("error"):
            errors.append(str(event.get("message") or line))
            continue
        resource = str(event.get("id") or "")
        status, text = event.get("status"), event.get("text")
        if event.get("tail"):
            status = "Error"
        elif status not in KNOWN_STATUSES and text in KNOWN_STATUSES | LAYER_PROGRESS:
            # Pull events carry the status in `text` ({"id": "api", "text": "Pulling"}).
            status, text = text, status
        if status == "Error":
            errors.append("%s: %s" % (resource, text) if resource.strip() and text else str(text or resource))
        elif status in CHANGING_STATUSES:
            changed = True
        elif status in LAYER_PROGRESS and " " not in resource:
            # "Container x Waiting" is a wait; a bare layer ID downloading is a new image.
            changed = True
    return changed, errors


def tail(text, lines=20, limit=2000):
    """The last lines of `text`, for a failure message."""
    return "\n".join(text.strip().splitlines()[-lines:])[-limit:]


def with_dry_run(argv):
    """argv with compose's global --dry-run right after `compose`."""
    if "compose" not in argv:
        raise ValueError("a dry run needs a docker compose command: %s" % shlex.join(argv))
    index = argv.index("compose") + 1
    return argv[:index] + ["--dry-run"] + argv[index:]


def run_task(params, check_mode):
    """Run the command as `params` (validated against ARGUMENT_SPEC) say; the task result."""
    argv = list(params["argv"])
    what = params["description"] or shlex.join(argv)
    if params["command_line"] is not None:
        try:
            argv += shlex.split(params["command_line"])
        except ValueError as err:
            return dict(failed=True, changed=False, msg="%s: cannot split %r: %s" % (what, params["command_line"], err),
                        rc=None, stdout="", stderr="")
    if check_mode:
        if not params["dry_run_in_check_mode"]:
            return dict(skipped=True, changed=False, msg="%s: not run in check mode" % what)
        try:
            argv = with_dry_run(argv)
        except ValueError as err:
            return dict(failed=True, changed=False, msg=str(err), rc=None, stdout="", stderr="")
    # What an operator's shell gives compose for the project, never ansible's or the worker's
    # own settings (module_utils/update_executor_env.py).
    environment = compose_environment(os.environ, params["environment"])
    stdin = params["stdin"]
    timeout = params["timeout"] if params["timeout"] and params["timeout"] > 0 else None
    try:
        # Same process group as ansible-playbook: stopping the run (a cancel, a killed worker's
        # process groups) stops the command too.
        process = subprocess.Popen(
            argv,
            cwd=params["chdir"] or None,
            env=environment,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    except OSError as err:
        return dict(failed=True, changed=False, msg="%s could not start: %s" % (what, err), cmd=argv,
                    rc=None, stdout="", stderr="")
    data = stdin.encode("utf-8") if stdin is not None else None
    try:
        out, err = process.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            out, err = process.communicate(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
        stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        return dict(failed=True, changed=True, msg="%s timed out after %d s and was stopped" % (what, timeout),
                    cmd=argv, rc=None, stdout=stdout.rstrip("\r\n"), stderr=stderr.rstrip("\r\n"))
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    result = dict(changed=True, cmd=argv, rc=process.returncode, stdout=stdout.rstrip("\r\n"),
                  stderr=stderr.rstrip("\r\n"))
    errors = []
    if params["compose_events"]:
        result["changed"], errors = read_compose_events(stderr)
        # The JSON events are read: only the other lines stay (a pull of ten images prints
        # hundreds of progress events, which would travel in the result and every job event).
        result["stderr"] = "\n".join(line for line in stderr.splitlines() if compose_event(line) is None)
    if process.returncode != 0 and not params["check_rc"]:
        # Returned, not a failure (ansible would otherwise fail any result with a non-zero rc).
        result["failed"] = False
    elif process.returncode != 0:
        detail = "; ".join(dict.fromkeys(errors)) if errors else tail(stderr) or tail(stdout) or "no output"
        result.update(failed=True, msg="%s failed (exit status %d): %s" % (what, process.returncode, detail))
    return result


def run_in_controller(params, check_mode):
    """The task run inside ansible-playbook (playbooks/action_plugins/controller_step.py)."""
    return run_task(params, check_mode)


def main():
    # The playbooks run this logic in the controller process through the action plugin of the
    # same name (playbooks/action_plugins/docker_command.py); this entry point serves other callers.
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result = run_task(module.params, module.check_mode)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
