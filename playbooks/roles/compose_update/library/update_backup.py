#!/usr/bin/python
# -*- coding: utf-8 -*-
"""update_backup: stream a backup command's stdout from a compose service into a file."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: update_backup
short_description: Write the output of a backup command run in a compose service to a file
description:
  - Runs O(command) (split with shell rules, run without a shell) in the running container of
    O(service) with C(docker compose exec -T) and streams its standard output straight into a
    new file in O(backup_dir), named C(<project>-<service>-<UTC timestamp>.backup), mode 0600.
  - The output never passes through memory or the module result, so large or binary dumps
    (C(pg_dump -Fc)) work.
  - The file is written as a hidden C(.partial) file and renamed when the command succeeded.
    When the command fails, times out or writes nothing, the partial file is removed and the
    task fails with the end of the command's standard error.
version_added: "1.0.0"
author: update-executor
options:
  project_src:
    description: Directory of the compose project (compose runs from there).
    type: path
    required: true
  files:
    description: Compose file names, relative to O(project_src).
    type: list
    elements: str
    required: true
  project_name:
    description: Compose project name.
    type: str
    required: true
  service:
    description: Service whose running container runs the command.
    type: str
    required: true
  command:
    description: The backup command, split with shell rules; it must write the backup to stdout.
    type: str
    required: true
  backup_dir:
    description: Directory for the backup files, created with mode 0700 when missing.
    type: path
    required: true
  timeout:
    description: Seconds the command may run.
    type: int
    default: 1800
  restore_from:
    description:
      - Restore instead (a rollback, issue 23) - O(command) is the restore command (C(pg_restore ...)), fed this
        backup file on its standard input; nothing is written to O(backup_dir). RV(path) is the file restored.
    type: path
notes:
  - In check mode nothing runs and RV(ran) is false.
"""

EXAMPLES = r"""
---
- name: Backup | Back up the database
  update_backup:
    project_src: /srv/app
    files: [docker-compose.prod.yml]
    project_name: app
    service: db
    command: pg_dump -U app -Fc app
    backup_dir: /var/lib/update-executor/backups
"""

RETURN = r"""
ran:
  description: Whether the command was run.
  returned: always
  type: bool
path:
  description: The backup file (null when the backup failed or did not run).
  returned: always
  type: str
size_bytes:
  description: Size of the backup file (null when there is none).
  returned: always
  type: int
rc:
  description: Exit code of C(docker compose exec) (null when it did not run or timed out).
  returned: always
  type: int
stderr_tail:
  description: The last 20 lines (at most 4000 characters) of the command's standard error.
  returned: always
  type: str
"""

import contextlib
import os
import shlex
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.update_executor_env import compose_environment

SUFFIX = ".backup"


def backup_name(project, service, now, attempt=0):
    """`<project>-<service>-<YYYYmmddTHHMMSSZ>[-N].backup` (UTC)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    extra = "-%d" % attempt if attempt else ""
    return "%s-%s-%s%s%s" % (project, service, stamp, extra, SUFFIX)


def exec_argv(docker, project_src, files, project_name, service, command):
    """`docker compose ... exec -T SERVICE ARGV...`: the command is split with shell rules and
    passed as separate arguments (no shell on the host; compose runs it without one too)."""
    argv = [docker, "compose", "--project-directory", project_src]
    for name in files:
        argv += ["--file", name]
    return argv + ["--project-name", project_name, "exec", "-T", service] + shlex.split(command)


def tail(text, lines=20, chars=4000):
    return ("\n".join(text.strip().splitlines()[-lines:]))[-chars:]


def publish(partial, directory, project, service, now):
    """Hard-link the finished partial file to a free final name (never overwrite a backup)."""
    for attempt in range(100):
        final = os.path.join(directory, backup_name(project, service, now, attempt))
        try:
            os.link(partial, final)
        except FileExistsError:
            continue
        return final
    raise OSError("no free backup file name in %s" % directory)


def run_backup(argv, directory, project, service, now, timeout, cwd):
    """Run `argv`, stream stdout to a new 0600 file. Returns (path or None, size, rc, stderr, error)."""
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    partial = os.path.join(directory, "." + backup_name(project, service, now) + ".%d.partial" % os.getpid())
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    path, size, rc, stderr, error = None, None, None, "", None
    try:
        with os.fdopen(fd, "wb") as out:
            rc, stderr, error = run_command(argv, subprocess.DEVNULL, out, "backup", timeout, cwd)
            out.flush()
            os.fsync(out.fileno())
            size = os.fstat(out.fileno()).st_size
        if error is None and size == 0:
            error = "the backup command succeeded but wrote nothing to its standard output"
        if error is None:
            path = publish(partial, directory, project, service, now)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return path, (size if path else None), rc, tail(stderr), error


def run_restore(argv, source, timeout, cwd):
    """Run `argv` with `source` on its stdin. Returns (rc, stderr tail, error or None)."""
    with open(source, "rb") as handle:
        rc, stderr, error = run_command(argv, handle, subprocess.DEVNULL, "restore", timeout, cwd)
    return rc, tail(stderr), error


def run_command(argv, stdin, stdout, what, timeout, cwd):
    """Run the backup or restore command (no shell). Returns (rc or None, stderr, error or None)."""
    try:
        done = subprocess.run(argv, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                              env=compose_environment(os.environ), timeout=timeout, cwd=cwd, check=False)
    except subprocess.TimeoutExpired as err:
        return None, (err.stderr or b"").decode("utf-8", "replace"), (
            "the %s command did not finish within %d s" % (what, timeout))
    error = None if done.returncode == 0 else "the %s command failed (rc %s)" % (what, done.returncode)
    return done.returncode, done.stderr.decode("utf-8", "replace"), error


def main():
    module = AnsibleModule(
        argument_spec={
            "project_src": {"type": "path", "required": True},
            "files": {"type": "list", "elements": "str", "required": True},
            "project_name": {"type": "str", "required": True},
            "service": {"type": "str", "required": True},
            "command": {"type": "str", "required": True},
            "backup_dir": {"type": "path", "required": True},
            "timeout": {"type": "int", "default": 1800},
            "restore_from": {"type": "path"},
        },
        supports_check_mode=True,
    )
    params = module.params
    if module.check_mode:
        module.exit_json(changed=False, ran=False, path=None, size_bytes=None, rc=None, stderr_tail="")
    try:
        argv = exec_argv(module.get_bin_path("docker", required=True), params["project_src"], params["files"],
                         params["project_name"], params["service"], params["command"])
    except ValueError as err:
        module.fail_json(msg="Cannot split the backup command: %s" % err, ran=False, path=None,
                         size_bytes=None, rc=None, stderr_tail="")
    if params["restore_from"]:
        try:
            rc, stderr, error = run_restore(argv, params["restore_from"], params["timeout"], params["project_src"])
        except OSError as err:
            rc, stderr, error = None, "", "cannot read %s: %s" % (params["restore_from"], err)
        result = {"ran": True, "path": params["restore_from"], "size_bytes": None, "rc": rc, "stderr_tail": stderr}
        if error is not None:
            module.fail_json(msg="Restore in service %s: %s%s" % (params["service"], error, (": " + stderr) if stderr else "."),
                             changed=True, **result)
        module.exit_json(changed=True, **result)
    try:
        path, size, rc, stderr, error = run_backup(argv, params["backup_dir"], params["project_name"],
                                                   params["service"], time.time(), params["timeout"],
                                                   params["project_src"])
    except OSError as err:
        module.fail_json(msg="Backup into %s failed: %s" % (params["backup_dir"], err), ran=False, path=None,
                         size_bytes=None, rc=None, stderr_tail="")
    result = {"ran": True, "path": path, "size_bytes": size, "rc": rc, "stderr_tail": stderr}
    if error is not None:
        module.fail_json(msg="Backup in service %s: %s%s" % (params["service"], error, (": " + stderr) if stderr else "."),
                         changed=False, **result)
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
