#!/usr/bin/python
# -*- coding: utf-8 -*-
"""update_lock: the per-project update lock of update-executor (see docs/internals.md)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: update_lock
short_description: Take or release the update lock of a Docker Compose project
description:
  - Takes (O(state=present)) or releases (O(state=absent)) a lock file that lets only one
    update of a compose project run at a time, whoever starts it (the update-executor worker
    or an operator running C(ansible-playbook)).
  - The lock is a JSON file describing its holder (who, host, pid, start time). It is created
    atomically (a complete file is hard-linked into place, which fails when the lock exists),
    under a short C(flock) on the lock directory so that breaking a stale lock cannot race
    with another run.
  - A lock whose holder process is gone (same host, pid not running or reused), or that is
    older than O(max_age) seconds, is stale. It is broken with a warning, and the broken
    holder is returned in RV(broke_stale).
  - A lock held by a live holder makes the task fail at once, naming the holder.
  - Release is idempotent and only removes the lock when O(token) matches its holder.
  - An ordinary module: it runs on the inventory host. With a local connection the recorded
    pid is the C(ansible-playbook) process above the module (it lives as long as the run); on
    a remote host no process there lives as long as the run, the pid is null and the lock is
    judged by its age (O(max_age)).
version_added: "1.0.0"
author: update-executor
options:
  path:
    description: The lock file. Its directory is created with mode 0700 when missing.
    type: path
    required: true
  state:
    description: V(present) takes the lock, V(absent) releases it.
    type: str
    choices: [present, absent]
    default: present
  token:
    description: The token returned when the lock was taken; required with O(state=absent).
    type: str
  project:
    description: Compose project name, recorded in the holder information.
    type: str
    default: ""
  job_id:
    description:
      - The update-executor job id. Empty or V(manual) means a manual C(ansible-playbook) run.
    type: str
    default: ""
  requested_by:
    description: Who asked for the update (recorded for worker jobs).
    type: str
    default: ""
  max_age:
    description: Seconds after which a lock is stale whatever its holder.
    type: int
    default: 1800
  rollback_point:
    description:
      - The rollback point of the project, a JSON file an update writes once it has recorded
        the state before it changes anything, and removes when it ends (see update.yml). A
        rollback point left on disk means an update was cut off (killed, canceled) mid-way.
      - With O(state=present), when the file exists, the lock is not taken and the task fails
        with a message naming the cut-off update, unless O(allow_rollback_point=true).
      - With O(state=absent) and O(remove_rollback_point=true), the file is removed together
        with the lock (only when this run held the lock), and the image references it lists as
        C(kept_images) (V(update-executor-rollback/...), see compose_snapshot's keep_images) are
        removed with C(docker image rm) (a failure is a warning).
    type: path
  allow_rollback_point:
    description: Take the lock even when O(rollback_point) exists (the rollback playbook does).
    type: bool
    default: false
  remove_rollback_point:
    description: With O(state=absent), also remove O(rollback_point).
    type: bool
    default: false
  migration_marker:
    description:
      - An empty file next to the lock (same directory) whose existence says that an update
        recreated the targets and no migration succeeded since (issue 20).
      - With O(state=present), when the lock is taken, whether it exists (a regular file, not
        followed when it is a symlink) is returned as RV(migration_pending).
      - With O(state=absent) and O(migration_pending) set, it is written (true: a new file of a
        unique name, O_EXCL|O_NOFOLLOW, renamed into place) or removed (false) while this run
        still holds the lock, in a directory checked like the rollback point's. Left alone when
        this run does not hold the lock, and in check mode.
    type: path
  migration_pending:
    description: With O(state=absent) and O(migration_marker), whether a migration is still to run.
    type: bool
  last_update:
    description:
      - The last-update record of the project (C(<project>.<daemon>.last.json)): the rollback point
        of the last update that succeeded and changed an image, kept for C(update-executor revert)
        until the next such update replaces it, with its previous images referenced as
        V(update-executor-last/<project>:<service>) so that a prune cannot delete them.
    type: path
  keep_as_last_update:
    description:
      - With O(state=absent) and O(remove_rollback_point=true), before the rollback point is
        removed, keep it as O(last_update) (replacing the one there) and tag the images its
        C(kept_images) name as V(update-executor-last/<project>:<service>); the references of the
        record it replaces that the new one does not reuse are removed.
    type: bool
    default: false
  remove_last_update:
    description:
      - With O(state=absent), remove O(last_update) and its image references (after a revert put
        its images back), only when this run held the lock.
    type: bool
    default: false
  remove_paths:
    description:
      - With O(state=absent), also remove these files or directories (the run's private Docker
        config), whoever holds the lock; missing ones are ignored. C(changed) when one was removed.
    type: list
    elements: path
    default: []
notes:
  - Supports check mode the same way as a real run (the lock is taken), so that a dry run
    cannot overlap a real update either; the playbook runs it with C(check_mode=false).
"""

EXAMPLES = r"""
---
- name: Lock | Take the update lock of the project
  update_lock:
    path: /var/lib/update-executor/locks/app.lock
    project: app
    job_id: "{{ update_job_id }}"
    max_age: 1800
  register: _compose_update_lock

- name: Report | Release the update lock
  update_lock:
    path: /var/lib/update-executor/locks/app.lock
    state: absent
    token: "{{ _compose_update_lock.token }}"
"""

RETURN = r"""
acquired:
  description: Whether this run holds the lock now (state=present).
  returned: always
  type: bool
released:
  description: Whether the lock file was removed (state=absent).
  returned: always
  type: bool
path:
  description: The lock file.
  returned: always
  type: str
holder:
  description:
    - The holder of the lock, without its token. With state=present this is this run when
      RV(acquired) is true, or the other holder when the lock is busy.
    - Keys C(id) (V(update-executor job <id>) or V(ansible-playbook by <user>)), C(job_id),
      C(user), C(host), C(pid), C(started_at) (ISO 8601, UTC), C(project).
  returned: always
  type: dict
token:
  description: Secret-less random token identifying this run's lock; pass it to release.
  returned: when acquired
  type: str
broke_stale:
  description: The stale holder that was broken (holder keys plus C(reason)), or null.
  returned: always
  type: dict
rollback_point:
  description: The rollback point found (its C(job_id), C(started_at), C(project)), or null.
  returned: always
  type: dict
removed:
  description: The O(remove_paths) that existed and were removed.
  returned: with state=absent
  type: list
migration_pending:
  description: With O(migration_marker), whether a migration is pending (the marker exists).
  returned: when the lock was taken (state=present), or released with O(migration_pending) set
  type: bool
"""

import contextlib
import errno
import fcntl
import getpass
import json
import os
import shutil
import re
import socket
import stat
import subprocess
import time
import uuid
from datetime import datetime, timezone

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.update_executor_dirs import check_directory as check_owned_directory
from ansible.module_utils.update_executor_env import compose_environment

# Only references the role made (compose_snapshot's keep_images) are ever removed.
KEPT_REFERENCE = re.compile(r"\Aupdate-executor-rollback/[a-z0-9][a-z0-9_.-]*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
# The same images kept for a revert once the update succeeded (the last-update record).
LAST_REFERENCE = re.compile(r"\Aupdate-executor-last/[a-z0-9][a-z0-9_.-]*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")

PUBLIC_KEYS = ("id", "job_id", "user", "host", "pid", "started_at", "project")
GUARD_TIMEOUT = 10.0
# The refusal of a held lock names the command that shows its holder and removes a stale one.
UNLOCK_HINT = ("If that run is gone, `update-executor unlock` on the host shows the holder and removes "
               "the lock once it is stale (the next update breaks a stale lock too).")


def read_proc_stat(pid, proc_root="/proc"):
    """(state, ppid, starttime) of `pid` from /proc/<pid>/stat, or None when it does not exist."""
    try:
        with open(os.path.join(proc_root, str(pid), "stat"), encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    # comm (field 2) is in parentheses and may contain spaces or parentheses itself.
    fields = text[text.rfind(")") + 2:].split()
    try:
        return fields[0], int(fields[1]), int(fields[19])
    except (IndexError, ValueError):
        return None


def read_cmdline(pid, proc_root="/proc"):
    """argv of `pid` (list of str), empty when unreadable."""
    try:
        with open(os.path.join(proc_root, str(pid), "cmdline"), "rb") as handle:
            raw = handle.read()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def is_ansible_playbook(argv):
    """True for `ansible-playbook ...` and `python .../ansible-playbook ...`."""
    return any(os.path.basename(arg) == "ansible-playbook" for arg in argv[:2])


def controller_pid(start_pid, proc_root="/proc"):
    """The outermost `ansible-playbook` process above `start_pid` (its task workers are forks
    with the same command line), or None when there is none (the module runs on a remote host:
    no process there lives as long as the run, and the lock is then judged by its age)."""
    found = None
    pid = start_pid
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        if is_ansible_playbook(read_cmdline(pid, proc_root)):
            found = pid
        elif found is not None:
            break
        stat = read_proc_stat(pid, proc_root)
        if stat is None:
            break
        pid = stat[1]
    return found


def holder_id(job_id, requested_by, user, sudo_user):
    """Who holds the lock, in words: `update-executor job <id>` or `ansible-playbook by <user>`."""
    if job_id and job_id != "manual":
        text = "update-executor job %s" % job_id
        return text + (" for %s" % requested_by if requested_by else "")
    text = "ansible-playbook by %s" % user
    return text + (" (sudo from %s)" % sudo_user if sudo_user and sudo_user != user else "")


def make_holder(project, job_id, requested_by, pid, now, proc_root="/proc", user=None, host=None, sudo_user=None):
    """The JSON document written into the lock file."""
    user = user or getpass.getuser()
    stat = read_proc_stat(pid, proc_root) if pid else None
    return {
        "version": 1,
        "project": project,
        "id": holder_id(job_id, requested_by, user, sudo_user),
        "job_id": job_id if job_id and job_id != "manual" else None,
        "requested_by": requested_by or None,
        "user": user,
        "host": host or socket.gethostname(),
        "pid": pid,
        "pid_start": stat[2] if stat else None,
        "boot_id": read_boot_id(proc_root),
        "started_at": datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "started_epoch": now,
        "token": uuid.uuid4().hex,
    }


def public(holder):
    """The holder without its token (what logs and reports show)."""
    if not isinstance(holder, dict):
        return None
    return {key: holder.get(key) for key in PUBLIC_KEYS}


def describe(holder, now):
    """One line naming the holder, for messages."""
    started = holder.get("started_epoch")
    age = " (%d s ago)" % max(0, now - started) if isinstance(started, (int, float)) else ""
    return "%s (host %s, pid %s, since %s%s)" % (
        holder.get("id") or "an unknown holder",
        holder.get("host") or "?",
        holder.get("pid") if holder.get("pid") is not None else "?",
        holder.get("started_at") or "?",
        age,
    )


def read_boot_id(proc_root="/proc"):
    """This boot's id (/proc/sys/kernel/random/boot_id), or None when unreadable."""
    try:
        with open(os.path.join(proc_root, "sys", "kernel", "random", "boot_id"), encoding="utf-8") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def stale_reason(holder, now, max_age, hostname, proc_root="/proc", boot_id=None):
    """Why the lock held by `holder` is stale, or None when its holder may still be running.

    A holder on this host keeps the lock as long as its process lives, whatever its age. Stale:
    taken on this host before it rebooted (another boot id), or by a pid that is not running
    (missing or zombie) or that is another process now (its start time differs). A lock whose
    holder cannot be checked (taken on another host, or a file that is not ours) is judged by
    its age: older than `max_age` seconds."""
    started = holder.get("started_epoch")
    pid = holder.get("pid")
    if holder.get("host") != hostname or not isinstance(pid, int) or pid <= 0:
        if isinstance(started, (int, float)) and now - started > max_age:
            return "older than %d s (taken %d s ago)" % (max_age, now - started)
        return None
    boot_id = boot_id if boot_id is not None else read_boot_id(proc_root)
    if holder.get("boot_id") and boot_id and holder.get("boot_id") != boot_id:
        return "taken on %s before it rebooted" % hostname
    stat = read_proc_stat(pid, proc_root)
    if stat is None or stat[0] in ("Z", "X"):
        return "pid %d is not running on %s" % (pid, hostname)
    if holder.get("pid_start") is not None and holder.get("pid_start") != stat[2]:
        return "pid %d on %s is another process now" % (pid, hostname)
    return None


def read_lock(path):
    """(holder dict, mtime) of the lock file, ({}, mtime) when unreadable, None when absent."""
    try:
        with open(path, encoding="utf-8") as handle:
            mtime = os.fstat(handle.fileno()).st_mtime
            text = handle.read()
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:
        holder = {}
    if not isinstance(holder, dict):
        holder = {}
    if not isinstance(holder.get("started_epoch"), (int, float)):
        # A file we cannot read (or written by something else): judged by its age alone.
        holder = dict(holder, started_epoch=mtime, host=None)
    return holder, mtime


@contextlib.contextmanager
def guard(directory, timeout=GUARD_TIMEOUT):
    """A short exclusive flock on the lock directory around read-decide-write."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def check_directory(directory, uid=None, root_equivalent=None):
    """Refuse a lock directory someone else could plant files in (module_utils/update_executor_dirs.py)."""
    check_owned_directory(directory, uid, "lock directory", root_equivalent)


def ensure_directory(directory):
    """Create the lock directory (mode 0700) when missing; refuse one that is not safe."""
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700, exist_ok=True)
        os.chmod(directory, 0o700)
    check_directory(directory)


def write_new(path, holder):
    """Put `holder` at `path` atomically; False when a lock file is already there."""
    tmp = "%s.%s.tmp" % (path, holder["token"])
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(holder, handle, indent=1, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def acquire(path, holder, max_age, now, hostname, proc_root="/proc"):
    """Take the lock for `holder`. Returns (acquired, holder_seen, broke_stale)."""
    directory = os.path.dirname(path) or "."
    ensure_directory(directory)
    broke = None
    with guard(directory):
        current = read_lock(path)
        if current is not None:
            reason = stale_reason(current[0], now, max_age, hostname, proc_root)
            if reason is None:
                return False, current[0], None
            broke = dict(public(current[0]), reason=reason)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if not write_new(path, holder):
            seen = read_lock(path)
            return False, seen[0] if seen else {}, broke
    return True, holder, broke


def release(path, token, while_held=None):
    """Remove the lock when `token` is its holder's. Returns (released, holder_seen).
    `while_held` (no argument) runs first, under the guard, only when this run holds the lock;
    the lock is removed even when it raises (the error is raised afterwards)."""
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        return False, None
    with guard(directory):
        current = read_lock(path)
        if current is None:
            return False, None
        if current[0].get("token") != token:
            return False, current[0]
        try:
            if while_held is not None:
                while_held()
        finally:
            os.unlink(path)
        return True, current[0]


def read_rollback_point(path):
    """The public fields of the rollback point at `path`, or None when there is none."""
    if not path:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return None
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    return {key: data.get(key) for key in ("job_id", "started_at", "project")}


def kept_images(path, grammar=KEPT_REFERENCE):
    """The references the update made to keep its previous images (the point's kept_images)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return []
    kept = data.get("kept_images") if isinstance(data, dict) else None
    return [ref for ref in kept if isinstance(ref, str) and grammar.fullmatch(ref)] if isinstance(kept, list) else []


def last_reference(kept):
    """update-executor-rollback/<project>:<service> -> update-executor-last/<project>:<service>."""
    return "update-executor-last/" + kept[len("update-executor-rollback/"):]


def tag(source, target):
    """`docker image tag source target`; None, or why it failed."""
    try:
        done = subprocess.run(["docker", "image", "tag", source, target], stdin=subprocess.DEVNULL, capture_output=True,
                              env=compose_environment(os.environ), timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    return done.stderr.decode("utf-8", "replace").strip()[-500:] if done.returncode != 0 else None


def keep_as_last_update(point, last, warn):
    """Keep the rollback point of an update that succeeded as the last-update record (for a
    revert), its previous images referenced as update-executor-last/...; the references of the
    record it replaces that it does not reuse are removed."""
    try:
        with open(point, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as err:
        warn("Could not keep the rollback point %s for a revert: %s" % (point, err))
        return
    if not isinstance(data, dict):
        return
    references = []
    for kept in kept_images(point):
        reference = last_reference(kept)
        problem = tag(kept, reference)
        if problem:
            warn("Could not keep the image %s for a revert as %s: %s" % (kept, reference, problem))
        else:
            references.append(reference)
    stale = [ref for ref in kept_images(last, LAST_REFERENCE) if ref not in references] if os.path.exists(last) else []
    data["kept_images"] = references
    tmp = "%s.%s.tmp" % (last, uuid.uuid4().hex)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.write("\n")
    os.replace(tmp, last)
    problem = untag(stale)
    if problem:
        warn("Could not remove the references %s of the previous revert record: %s" % (", ".join(stale), problem))


def remove_last_update(last, warn):
    """Remove the last-update record and its image references (a revert put them back)."""
    kept = kept_images(last, LAST_REFERENCE)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(last)
    problem = untag(kept)
    if problem:
        warn("Could not remove the references %s kept for a revert: %s" % (", ".join(kept), problem))


def untag(references):
    """Remove the references (`docker image rm`: an image that has other references, or a
    container, stays); None, or why it failed."""
    if not references:
        return None
    try:
        done = subprocess.run(["docker", "image", "rm"] + references, stdin=subprocess.DEVNULL, capture_output=True,
                              env=compose_environment(os.environ), timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    if done.returncode != 0 and b"No such image" not in done.stderr:
        return done.stderr.decode("utf-8", "replace").strip()[-500:]
    return None


def migration_pending(path):
    """Whether the marker of a pending migration exists at `path`: a regular file (a symlink
    or anything else there is not followed and does not count)."""
    if not path:
        return False
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def mark_migration(path, lock_path, pending):
    """Write (pending) or remove the marker of a migration still to run. Only next to the lock
    (`lock_path`'s directory, checked like the rollback point's): written empty to a new file of
    a unique name (O_EXCL|O_NOFOLLOW: never through a planted file or symlink), then renamed over
    `path` (which replaces a symlink there, never follows it); unlink never follows one either."""
    directory = os.path.dirname(path) or "."
    if os.path.realpath(directory) != os.path.realpath(os.path.dirname(lock_path) or "."):
        raise PermissionError(errno.EPERM, "the migration marker must be next to the lock %s" % lock_path, path)
    check_directory(directory)
    if not pending:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    if migration_pending(path):
        return
    partial = "%s.%s.partial" % (path, uuid.uuid4().hex)
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fsync(descriptor)
        os.close(descriptor)
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


def interrupted_message(project, point, path):
    """Why an update is refused while a cut-off update's rollback point is on disk."""
    who = "job %s" % point["job_id"] if point.get("job_id") not in (None, "", "manual") else "a manual run"
    return (
        "The previous update of project '%s' (%s, started %s) was cut off before it finished and "
        "was not rolled back, so some services may run the new version and others the old one, or "
        "be stopped. Roll it back first: `update-executor rollback` on the worker's host (the worker also "
        "does this by itself when it starts; after a manual run: ansible-playbook playbooks/rollback.yml "
        "with the same inventory), or, if the site was put right by hand, remove "
        "%s. Nothing was changed."
        % (project or point.get("project") or "?", who, point.get("started_at") or "?", path)
    )


ARGUMENT_SPEC = {
    "path": {"type": "path", "required": True},
    "state": {"type": "str", "choices": ["present", "absent"], "default": "present"},
    "token": {"type": "str", "no_log": False},
    "project": {"type": "str", "default": ""},
    "job_id": {"type": "str", "default": ""},
    "requested_by": {"type": "str", "default": ""},
    "max_age": {"type": "int", "default": 1800},
    "rollback_point": {"type": "path"},
    "allow_rollback_point": {"type": "bool", "default": False},
    "remove_rollback_point": {"type": "bool", "default": False},
    "last_update": {"type": "path"},
    "keep_as_last_update": {"type": "bool", "default": False},
    "remove_last_update": {"type": "bool", "default": False},
    "remove_paths": {"type": "list", "elements": "path", "default": []},
    "migration_marker": {"type": "path"},
    "migration_pending": {"type": "bool"},
}
REQUIRED_IF = [("state", "absent", ["token"])]


def remove_paths(paths):
    """Remove each file or directory (a directory with its content); the ones that existed."""
    removed = []
    for path in paths:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
        removed.append(path)
    return removed


def check_only(params, path, now, hostname):
    """Check mode: take nothing, write nothing; fail as a real run would (a live holder, or the
    rollback point of a cut-off update), else say the lock is free."""
    current = read_lock(path)
    if current is not None and stale_reason(current[0], now, params["max_age"], hostname) is None:
        return dict(
            failed=True, changed=False,
            msg="Another update of project '%s' is running: %s holds the lock %s. Nothing was changed. %s"
            % (params["project"], describe(current[0], now), path, UNLOCK_HINT),
            path=path, acquired=False, released=False, holder=public(current[0]), broke_stale=None,
            rollback_point=None,
        )
    point = read_rollback_point(params["rollback_point"])
    if point is not None and not params["allow_rollback_point"]:
        return dict(failed=True, changed=False, msg=interrupted_message(params["project"], point, params["rollback_point"]),
                    path=path, acquired=False, released=False, holder=None, broke_stale=None, rollback_point=point)
    return dict(changed=False, acquired=False, released=False, path=path, holder=None, broke_stale=None,
                rollback_point=point)


def run_task(params, pid, warn, sudo_user=None, check_mode=False):
    """The task: take or release the lock as `params` (validated against ARGUMENT_SPEC) say.

    `pid` is a process of this run (the module's parent): the lock records the outermost
    ansible-playbook above it, if any. `warn` takes a
    warning. Returns the task result (with `failed` and `msg` when it failed)."""
    path = params["path"]
    now = time.time()
    try:
        if params["state"] == "absent":
            marker, pending = params["migration_marker"], params["migration_pending"]
            problems = []

            def record_migration():
                # While the lock is still held: no other update reads the marker meanwhile. A
                # failure is reported after everything else is released (the task fails).
                try:
                    mark_migration(marker, path, pending)
                except OSError as err:
                    problems.append(err)

            marking = record_migration if marker and pending is not None and not check_mode else None
            released, seen = release(path, params["token"], marking)
            if not released and seen is not None:
                warn("Lock %s is held by %s, not by this run: left in place." % (path, describe(seen, now)))
            if released and params["remove_rollback_point"] and params["rollback_point"]:
                if params["keep_as_last_update"] and params["last_update"] and os.path.exists(params["rollback_point"]):
                    keep_as_last_update(params["rollback_point"], params["last_update"], warn)
                kept = kept_images(params["rollback_point"])
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(params["rollback_point"])
                problem = untag(kept)
                if problem:
                    warn("Could not remove the references %s kept for the rollback: %s" % (", ".join(kept), problem))
            if released and params["remove_last_update"] and params["last_update"]:
                remove_last_update(params["last_update"], warn)
            removed = remove_paths(params["remove_paths"] or [])
            result = dict(changed=released or bool(removed), released=released, removed=removed, acquired=False,
                          path=path, holder=public(seen), broke_stale=None, rollback_point=None)
            if released and marking is not None:
                result["migration_pending"] = migration_pending(marker)
            if problems:
                result.update(failed=True, msg="Could not record whether a migration is pending in %s: %s. The lock "
                              "was released; %s" % (marker, problems[0], "create that file by hand so that the "
                              "next update runs the migration" if pending else "remove that file by hand"))
            return result
        hostname = socket.gethostname()
        if check_mode:
            return check_only(params, path, now, hostname)
        holder = make_holder(
            params["project"], params["job_id"], params["requested_by"],
            controller_pid(pid), now, sudo_user=sudo_user, host=hostname,
        )
        acquired, seen, broke = acquire(path, holder, params["max_age"], now, hostname)
        # Checked under the lock: the rollback point cannot appear or go away meanwhile.
        point = read_rollback_point(params["rollback_point"]) if acquired else None
        if point is not None and not params["allow_rollback_point"]:
            release(path, holder["token"])
    except OSError as err:
        return dict(failed=True, msg="Update lock %s: %s" % (path, err), changed=False, path=path, acquired=False,
                    released=False, holder=None, broke_stale=None, rollback_point=None)
    if broke is not None:
        warn("Broke a stale update lock %s held by %s: %s." % (path, describe(broke, now), broke["reason"]))
    if not acquired:
        return dict(
            failed=True, changed=False,
            msg="Another update of project '%s' is running: %s holds the lock %s. Nothing was changed. %s"
            % (params["project"], describe(seen, now), path, UNLOCK_HINT),
            path=path, acquired=False, released=False, holder=public(seen), broke_stale=broke,
            rollback_point=None,
        )
    if point is not None and not params["allow_rollback_point"]:
        return dict(
            failed=True, changed=False,
            msg=interrupted_message(params["project"], point, params["rollback_point"]),
            path=path, acquired=False, released=False, holder=public(holder), broke_stale=broke,
            rollback_point=point,
        )
    pending = migration_pending(params["migration_marker"])
    return dict(changed=True, acquired=True, released=False, path=path, holder=public(holder),
                token=holder["token"], broke_stale=broke, rollback_point=point, migration_pending=pending)


def main():
    # Runs on the inventory host. Check mode takes nothing and writes nothing (check_only).
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, required_if=REQUIRED_IF, supports_check_mode=True)
    result = run_task(module.params, os.getppid(), module.warn, sudo_user=os.environ.get("SUDO_USER"),
                      check_mode=module.check_mode)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
