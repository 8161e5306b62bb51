#!/usr/bin/python
# -*- coding: utf-8 -*-
"""compose_snapshot: record the containers, images and digests of compose services (see docs/internals.md)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compose_snapshot
short_description: Record the container, image ID, repo digest and state of each target service
description:
  - Read-only. Asks Docker for the containers of a compose project (C(docker ps) and one C(docker
    inspect)) and for the repo digests of their images (one C(docker image inspect)), and returns,
    for each target service, its container, the container's image ID, the repo digest that image
    was pulled by and the container's state.
  - Used by update-executor's playbooks before the pull (Snapshot), after the recreate (Recreate)
    and by the rollback. The playbooks run it through the action plugin of the same name
    (playbooks/action_plugins/compose_snapshot.py), inside ansible-playbook, one task instead of
    three with a loop (a task costs 30-50 ms, see docs/performance.md).
  - The inspect templates print only the fields above; the containers' environment (secrets) never
    reaches ansible, its facts or the job events. Containers of C(docker compose run) are left out;
    when a service has several containers, the first by name counts.
version_added: "1.0.0"
author: update-executor
options:
  project:
    description: The compose project name.
    type: str
    required: true
  targets:
    description: The services to record.
    type: list
    elements: str
    required: true
  service_image:
    description: Each service's image reference from the compose file (for the repo digest).
    type: dict
    required: true
  keep_as:
    description:
      - Also return the snapshot as C(ue_<keep_as>) and the states as C(ue_<keep_as>_states)
        (the playbook keeps the states before and after the update as V(before) and V(after)).
    type: str
  unchanged_since:
    description:
      - A snapshot and its states (C(snapshot), C(states)) taken earlier in this run, returned as
        they are, without asking Docker, because nothing touched the containers since. The
        playbook passes the state before the update after a recreate skipped for having nothing
        to do (compose's dry run said every target would stay as it was, running and healthy).
    type: dict
  rollback_point:
    description:
      - Write the rollback point to this file (mode 0600, to a temporary name then renamed, so it
        is never seen half-written) - O(rollback_record) with C(started_at) (now, UTC) and
        C(before) (this snapshot). Not written in check mode.
    type: path
  rollback_record:
    description: What the rollback point holds besides the snapshot (project, files, targets...).
    type: dict
    default: {}
"""

EXAMPLES = r"""
---
- name: Snapshot | Record the containers, images and digests of the target services
  compose_snapshot:
    project: app
    targets: [api, worker]
    service_image:
      api: ghcr.io/acme/app:latest
      worker: ghcr.io/acme/app:latest
"""

RETURN = r"""
ansible_facts:
  description:
    - C(ue_snapshot) = {service - {container_id, image_id, digest, state} or null}; state is
      docker's (running, exited, created...).
    - C(ue_snapshot_states) = {service - {status, running, health, exit_code}} for the targets that
      have a container; health is healthy, unhealthy or starting, or empty without a healthcheck.
  returned: success
  type: dict
"""

import json
import os
import re
import subprocess
import time

from ansible.module_utils.basic import AnsibleModule

ARGUMENT_SPEC = {
    "project": {"type": "str", "required": True},
    "targets": {"type": "list", "elements": "str", "required": True},
    "service_image": {"type": "dict", "required": True},
    "keep_as": {"type": "str"},
    "unchanged_since": {"type": "dict"},
    "rollback_point": {"type": "path"},
    "rollback_record": {"type": "dict", "default": {}},
}

# One JSON line per container. Label keys contain dots and State has no Health without a
# healthcheck, so they are read with `index` (a missing key is empty instead of an error).
INSPECT_FORMAT = (
    '{"service": {{json (index .Config.Labels "com.docker.compose.service")}}, "container": {"name": {{json .Name}}, '
    '"id": {{json .Id}}, "image": {{json .Image}}, "status": {{json .State.Status}}, "running": {{json .State.Running}}, '
    '"exit_code": {{json .State.ExitCode}}, "health": {{with index .State "Health"}}{{json .Status}}{{else}}""{{end}}}}'
)
IMAGE_FORMAT = '{"key": {{json .Id}}, "value": {{json .RepoDigests}}}'
# Docker Hub names appear shortened in RepoDigests (postgres@sha256:..., not docker.io/library/postgres).
HUB_PREFIX = re.compile(r"^((docker\.io|index\.docker\.io|registry-1\.docker\.io)/)?(library/)?")
COMMAND_TIMEOUT = 120


class SnapshotFailed(Exception):
    pass


def docker(argv, allow_failure=False):
    """stdout of a docker command (no shell); SnapshotFailed when it fails, unless allow_failure."""
    try:
        done = subprocess.run(["docker"] + argv, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=COMMAND_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SnapshotFailed("docker %s could not run: %s" % (argv[0], err))
    if done.returncode != 0 and not allow_failure:
        raise SnapshotFailed("docker %s failed (exit status %d): %s"
                             % (" ".join(argv[:2]), done.returncode, done.stderr.decode("utf-8", "replace").strip()))
    return done.stdout.decode("utf-8", "replace")


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def containers_by_service(inspected, targets):
    """{service: container} of the targets; the first container by name wins (replicas)."""
    found = {}
    for entry in sorted(inspected, key=lambda entry: entry["container"]["name"]):
        if entry["service"] in targets and entry["service"] not in found:
            found[entry["service"]] = entry["container"]
    return found


def repository(reference):
    """Repository of an image reference: no @digest, no :tag, Docker Hub's prefixes dropped."""
    without_digest = re.sub(r"@.*$", "", reference)
    return HUB_PREFIX.sub("", re.sub(r":[^:/]*$", "", without_digest), count=1)


def digest_of(reference, repo_digests):
    """The digest of `reference`'s repository among an image's RepoDigests, or None."""
    repo = repository(reference)
    for repo_digest in repo_digests or []:
        short = HUB_PREFIX.sub("", repo_digest, count=1)
        if re.match(re.escape(repo) + "@", short):
            return re.sub(r"^[^@]*@", "", short)
    return None


def build_snapshot(targets, containers, digests, service_image):
    """(snapshot, states) as the playbooks use them, from the containers and their images' digests."""
    snapshot, states = {}, {}
    for service in targets:
        container = containers.get(service)
        if container is None:
            snapshot[service] = None
            continue
        snapshot[service] = {
            "container_id": container.get("id"),
            "image_id": container.get("image"),
            "digest": digest_of(service_image.get(service) or "", digests.get(container.get("image"))),
            "state": container.get("status"),
        }
        states[service] = {key: value for key, value in container.items() if key not in ("name", "id", "image")}
    return snapshot, states


def take_snapshot(project, targets):
    """Ask Docker: the targets' containers and the repo digests of their images."""
    ids = docker(["ps", "--all", "--quiet", "--no-trunc", "--filter", "label=com.docker.compose.project=" + project,
                  "--filter", "label=com.docker.compose.oneoff=False"]).split()
    inspected = json_lines(docker(["inspect", "--format", INSPECT_FORMAT] + ids)) if ids else []
    containers = containers_by_service(inspected, targets)
    images = list(dict.fromkeys(container["image"] for container in containers.values()))
    # An image deleted in the meantime is left out (its digest is then null).
    digests = {}
    if images:
        for entry in json_lines(docker(["image", "inspect", "--format", IMAGE_FORMAT] + images, allow_failure=True)):
            digests[entry["key"]] = entry["value"]
    return containers, digests


def write_rollback_point(path, record, snapshot):
    """The rollback point playbooks/rollback.yml restores from: 0600, written under a temporary
    name and renamed, so that it is never seen half-written."""
    point = dict(record, started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), before=snapshot)
    partial = path + ".partial"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(point, handle, indent=4, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)


def run_task(params, check_mode=False):
    earlier = params["unchanged_since"]
    if earlier:
        snapshot, states = earlier.get("snapshot") or {}, earlier.get("states") or {}
    else:
        try:
            containers, digests = take_snapshot(params["project"], params["targets"])
        except (SnapshotFailed, ValueError, KeyError, TypeError) as err:
            return dict(failed=True, changed=False, msg="Could not record the containers of project '%s': %s"
                        % (params["project"], err))
        snapshot, states = build_snapshot(params["targets"], containers, digests, params["service_image"])
    if params["rollback_point"] and not check_mode:
        try:
            write_rollback_point(params["rollback_point"], params["rollback_record"] or {}, snapshot)
        except OSError as err:
            return dict(failed=True, changed=False, msg="Could not write the rollback point %s: %s"
                        % (params["rollback_point"], err))
    facts = {"ue_snapshot": snapshot, "ue_snapshot_states": states}
    if params["keep_as"]:
        facts["ue_%s" % params["keep_as"]] = snapshot
        facts["ue_%s_states" % params["keep_as"]] = states
    return dict(changed=False, ansible_facts=facts)


def main():
    # The playbooks run this logic inside ansible-playbook through the action plugin of the same
    # name (playbooks/action_plugins/compose_snapshot.py); this entry point serves other callers.
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result = run_task(module.params, module.check_mode)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
