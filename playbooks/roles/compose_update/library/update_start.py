#!/usr/bin/python
# -*- coding: utf-8 -*-
"""update_start: the Preflight, Lock and Snapshot steps of playbooks/update.yml in one module process."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: update_start
short_description: Check the host and the settings, take the update lock and record the state before the update
description:
  - The start of update-executor's C(playbooks/update.yml) in one module process (issue 20: every
    module task costs a Python process and, the first time a run uses a module, a payload build).
    It does what M(update_preflight), M(update_lock) (O(state=present)) and M(compose_snapshot)
    (with a rollback point) do as three tasks, with the same code (the role's module_utils
    C(update_executor_preflight), C(update_executor_lock) and C(update_executor_snapshot) are those
    modules' files), in that order, each only when the one before succeeded.
  - Preflight, read-only; when its checks pass, the lock C(<lock_base>.lock), refused while a cut-off
    update's rollback point C(<lock_base>.rollback.json) exists; when the lock is taken, each
    target's container, image ID, repo digest and state, a reference to each previous image
    (C(update-executor-rollback/<project>:<service>)) and the rollback point.
  - It never fails: the result says how far it got. The role's next tasks report each step under
    its own name (C(Preflight | ...), C(Lock | ...), C(Snapshot | ...)), failing with the step's
    message, so the worker's steps and their order are those of the three separate tasks.
  - When the preflight found the address of a non-default docker context (RV(context_host)), the
    lock and the snapshot use it as C(DOCKER_HOST), as every later task of the role does.
  - Check mode: the preflight as usual, the lock only checked (M(update_lock)'s check mode), the
    snapshot taken but no reference made and no rollback point written.
version_added: "1.1.0"
author: update-executor
options:
  compose_file:
    description: The compose file as configured (relative to O(cwd)), for the checks and the messages.
    type: str
    required: true
  project_dir:
    description: Directory compose runs in (the compose file's directory).
    type: str
    required: true
  compose_files:
    description: The compose files, relative to O(project_dir).
    type: list
    elements: str
    required: true
  project_name:
    description: Compose project name; empty means compose's own default.
    type: str
    default: ""
  services:
    description: Requested services, a list or a comma-separated string; empty means every service whose image is in the registry.
    type: raw
  registry_host:
    description: Registry host (no scheme); the images under C(<registry_host>/) are the default targets.
    type: str
    required: true
  run_migrations:
    description: Whether the migrations will run (checked with ansible's bool rules).
    type: raw
    default: true
  profiles:
    description: Compose profiles to enable (C(--profile)).
    type: list
    elements: str
    default: []
  env_files:
    description: Env files for compose's interpolation (C(--env-file)), relative to O(project_dir).
    type: list
    elements: str
    default: []
  migration_service:
    description: Service whose container runs the migration command.
    type: str
    default: api
  migration_command:
    description: The migration command (must not be empty when the migrations run).
    type: str
    default: ""
  health_timeout:
    description: Seconds to wait for health; must be a positive number.
    type: raw
    default: 300
  rollback_on_migration_failure:
    description: Roll back when the migration fails (ansible's bool rules).
    type: raw
    default: true
  create_backup:
    description: Whether a backup runs before the pull (ansible's bool rules).
    type: raw
    default: false
  backup_command:
    description: The backup command (must not be empty when O(create_backup) is true).
    type: str
    default: ""
  backup_service:
    description: Service whose container runs the backup command.
    type: str
    default: db
  backup_dir:
    description: Directory of the backup files (relative to O(cwd)).
    type: str
    default: ""
  lock_dir:
    description: Directory of the update locks and rollback points (relative to O(cwd)); must not be empty.
    type: str
    default: ""
  lock_max_age:
    description: Seconds after which a lock is stale; must be a positive number.
    type: raw
    default: 1800
  cwd:
    description: Directory relative paths are resolved from (ansible-playbook's current directory).
    type: str
    required: true
  job_id:
    description: The update-executor job id (V(manual) for a run by hand), recorded in the lock and the rollback point.
    type: str
    default: manual
  requested_by:
    description: Who asked for the update, recorded in the lock.
    type: str
    default: ""
  registry_check:
    description:
      - Once the state before is recorded, ask the registry whether it has anything new for the targets
        (module_utils C(update_executor_registry)): RV(registry.nothing_new) is true only when every target's
        container runs what its tag points at in the registry now, compared by digest with the repo digests of
        the image the container runs. Any doubt is false, and the update runs its normal path. Not in check
        mode, not while an earlier migration is pending.
    type: bool
    default: false
  registry_url:
    description: The registry the credentials are for (its host; a scheme and a path are ignored).
    type: str
    default: ""
  registry_username:
    description: Registry user; with O(registry_token), sent only to the host of O(registry_url).
    type: str
    default: ""
  registry_token:
    description: Registry token or password (never logged, never returned).
    type: str
    default: ""
  registry_timeout:
    description: Seconds per registry request.
    type: float
    default: 5
"""

EXAMPLES = r"""
---
- name: Preflight | Check Docker, Compose, the settings and the compose file, take the lock and record the state
  update_start:
    compose_file: docker-compose.prod.yml
    project_dir: /srv/app
    compose_files: [docker-compose.prod.yml]
    services: api,worker
    registry_host: ghcr.io
    lock_dir: /var/lib/update-executor/locks
    cwd: /srv/app
  register: _compose_update_preflight
"""

RETURN = r"""
preflight_error:
  description:
    - Every key M(update_preflight) returns (C(preflight_error) the message of its first failed check, or
      null; C(lock_base), C(targets), ...).
  returned: always
  type: raw
lock:
  description:
    - M(update_lock)'s result for O(state=present) (C(acquired), C(path), C(token), C(holder), C(broke_stale),
      C(migration_pending), ...), with C(failed) and C(msg) when the lock was not taken. Only when the
      preflight passed.
  returned: when the preflight passed
  type: dict
before:
  description:
    - M(compose_snapshot)'s result (C(snapshot), C(states), C(repo_digests)), or C(failed) and C(msg). Only when
      the lock was taken (or, in check mode, checked).
  returned: when the lock was taken
  type: dict
registry:
  description:
    - "What the registry said: C(nothing_new) (true only when every target is current), C(reason) (a sentence:
      why not, or that nothing is new), C(services) ({service - {reference, remote_digest, local_digest}} for the
      targets looked at)."
  returned: when the state before was recorded
  type: dict
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.parameters import remove_values
from ansible.module_utils import update_executor_lock as lock
from ansible.module_utils import update_executor_preflight as preflight
from ansible.module_utils import update_executor_registry as registry
from ansible.module_utils import update_executor_snapshot as snapshot

ARGUMENT_SPEC = dict(
    preflight.ARGUMENT_SPEC,
    job_id={"type": "str", "default": "manual"},
    requested_by={"type": "str", "default": ""},
    registry_check={"type": "bool", "default": False},
    registry_url={"type": "str", "default": ""},
    registry_username={"type": "str", "default": ""},
    registry_token={"type": "str", "default": "", "no_log": True},
    registry_timeout={"type": "float", "default": 5.0},
)
# Under update-executor-rollback/<project>: the references that keep the previous images (compose_snapshot).
KEEP_REPOSITORY = "update-executor-rollback/"


def lock_params(params, found):
    """update_lock's options for taking the lock, from the preflight's result."""
    base = found["lock_base"]
    return dict(
        path=base + ".lock", state="present", token=None, project=found["project"], job_id=params["job_id"],
        requested_by=params["requested_by"], max_age=found["lock_max_age"], rollback_point=base + ".rollback.json",
        allow_rollback_point=False, remove_rollback_point=False, last_update=None, keep_as_last_update=False,
        remove_last_update=False, remove_paths=[], migration_marker=base + ".migration-pending",
        migration_pending=None,
    )


def snapshot_params(params, found):
    """compose_snapshot's options for the state before the update and the rollback point."""
    return dict(
        project=found["project"], targets=found["targets"], service_image=found["service_image"],
        unchanged_since=None, rollback_point=found["lock_base"] + ".rollback.json",
        keep_images=KEEP_REPOSITORY + found["project"].lower(),
        rollback_record=dict(
            job_id=params["job_id"], project=found["project"], project_dir=params["project_dir"],
            compose_files=params["compose_files"], profiles=params["profiles"] or [],
            env_files=params["env_files"] or [], targets=found["targets"], service_image=found["service_image"],
            service_restart=found["service_restart"], health_timeout=found["health_timeout"],
        ),
    )


def run_task(params, pid, warn, sudo_user=None, check_mode=False, environ=os.environ):
    """Preflight, then the lock when it passed, then the snapshot when the lock was taken."""
    result = preflight.run_task(params)
    if result["preflight_error"] is not None:
        return result
    if result["context_host"] and not environ.get("DOCKER_HOST"):
        # One daemon for every step: the context's address, which later tasks get as DOCKER_HOST.
        environ["DOCKER_HOST"] = result["context_host"]
    result["lock"] = lock.run_task(lock_params(params, result), pid, warn, sudo_user=sudo_user,
                                   check_mode=check_mode)
    if not result["lock"].get("failed"):
        result["before"] = snapshot.run_task(snapshot_params(params, result), check_mode)
        if not result["before"].get("failed"):
            result["registry"] = registry_answer(params, result, check_mode)
    return result


def registry_answer(params, found, check_mode, client=None):
    """Whether the registry has nothing new for the targets (module_utils update_executor_registry),
    asked only when it can decide: registry_check on, not check mode, no migration pending."""
    if not params.get("registry_check"):
        return dict(nothing_new=False, reason="not asked", services={})
    if check_mode:
        return dict(nothing_new=False, reason="check mode", services={})
    if found["lock"].get("migration_pending"):
        return dict(nothing_new=False, reason="an earlier migration is pending", services={})
    if client is None:
        credentials = (registry.registry_host(params.get("registry_url") or ""), params.get("registry_username") or "",
                       params.get("registry_token") or "")
        client = registry.RegistryClient(credentials, timeout=params.get("registry_timeout") or registry.DEFAULT_TIMEOUT)
    before = found["before"]
    return registry.nothing_new(found["targets"], found["service_image"], found["service_restart"],
                                before.get("snapshot"), before.get("states"), before.get("repo_digests"), client)


def main():
    # Runs on the inventory host. Never fails: the role's next tasks fail under each step's name.
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result = run_task(module.params, os.getppid(), module.warn, sudo_user=os.environ.get("SUDO_USER"),
                      check_mode=module.check_mode)
    module.exit_json(**without_token(module, result))


def without_token(module, result):
    """`result` with the registry token masked only where it was used. Ansible masks a no_log value
    wherever it occurs in a result, inside image IDs and digests too: a short token would change the
    image IDs the role and the rollback rely on. Only the registry's answer was made with the token:
    it is masked there, the invocation hides it, and the rest of the result is left as it is."""
    token = module.params.get("registry_token") or ""
    hidden = "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" if token else ""
    result["invocation"] = {"module_args": dict(module.params, registry_token=hidden)}
    if token:
        if "registry" in result:
            result["registry"] = remove_values(result["registry"], {token})
        module.no_log_values.discard(token)
    return result

if __name__ == "__main__":
    main()
