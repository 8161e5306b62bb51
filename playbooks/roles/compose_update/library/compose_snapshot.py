#!/usr/bin/python
# -*- coding: utf-8 -*-
"""compose_snapshot: record the containers, images and digests of compose services (see docs/internals.md)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: compose_snapshot
short_description: Record the container, image ID, repo digest and state of each target service
description:
  - Read-only. Asks Docker for the containers of a compose project and for the repo digests of
    their images, and returns, for each target service, its container, the container's image ID,
    the repo digest that image was pulled by and the container's state.
  - Where the docker CLI would talk to the local daemon's unix socket (C(DOCKER_HOST) unset or
    C(unix://), no context chosen, no TLS settings) the Engine API is asked on that socket
    (list, inspect of each target's container, inspect of each image; a few milliseconds a
    call); otherwise, or when the socket does not answer, the CLI is (C(docker ps), one C(docker
    inspect), one C(docker image inspect); 25-30 ms a process), which knows contexts, TCP, TLS
    and SSH.
  - Used by the role compose_update before the pull (Snapshot), after the recreate (Recreate)
    and by the rollback. An ordinary module: it runs on the inventory host, through its
    connection. One task instead of three with a loop (every module task costs a module
    process, see docs/performance.md).
  - Only the fields above are kept (the CLI's inspect templates print only those); the
    containers' environment (secrets) never reaches ansible's results, its facts or the job events. Containers of C(docker compose run) are left out;
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
  keep_images:
    description:
      - With O(rollback_point), a repository (V(update-executor-rollback/<project>)) under which each
        target's image before the update is tagged as C(<repository>:<service>), and the list of
        those references recorded in the point as C(kept_images). The pull moves the compose
        references to the new images; these references keep the previous ones from being deleted
        by a C(docker image prune) until the rollback point is removed (M(update_lock) untags them).
    type: str
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
snapshot:
  description: "{service - {container_id, image_id, digest, state} or null}; state is docker's (running, exited, created...)."
  returned: success
  type: dict
states:
  description:
    - "{service - {status, running, health, exit_code}} for the targets that have a container; health is healthy,
      unhealthy or starting, or empty without a healthcheck."
  returned: success
  type: dict
repo_digests:
  description:
    - "{service - [repo@digest, ...]}: every repo digest of the image each target's container runs (update_start
      compares them with the registry's digests)."
  returned: when the snapshot was taken (not with O(unchanged_since))
  type: dict
"""

import contextlib
import http.client
import json
import os
import re
import secrets
import socket
import subprocess
import time
import urllib.parse

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.update_executor_dirs import check_directory as check_owned_directory
from ansible.module_utils.update_executor_env import compose_environment

ARGUMENT_SPEC = {
    "project": {"type": "str", "required": True},
    "targets": {"type": "list", "elements": "str", "required": True},
    "service_image": {"type": "dict", "required": True},
    "unchanged_since": {"type": "dict"},
    "rollback_point": {"type": "path"},
    "rollback_record": {"type": "dict", "default": {}},
    "keep_images": {"type": "str"},
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
                              env=compose_environment(os.environ), timeout=COMMAND_TIMEOUT, check=False)
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


def take_snapshot_with_cli(project, targets):
    """Ask the docker CLI: the targets' containers and the repo digests of their images."""
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


def docker_socket(environ, home):
    """The daemon's unix socket when the docker CLI would talk to it directly (DOCKER_HOST unset
    or unix://, no context chosen, no TLS settings), else None: then the CLI is asked, which
    knows contexts, TCP, TLS and SSH."""
    if environ.get("DOCKER_CONTEXT") or environ.get("DOCKER_TLS_VERIFY") or environ.get("DOCKER_CERT_PATH"):
        return None
    host = environ.get("DOCKER_HOST", "")
    if host and not host.startswith("unix://"):
        return None
    if not host:
        config = os.path.join(environ.get("DOCKER_CONFIG") or os.path.join(home, ".docker"), "config.json")
        try:
            with open(config, encoding="utf-8") as handle:
                context = json.load(handle).get("currentContext")
        except (OSError, ValueError, AttributeError):
            context = None
        if context and context != "default":
            return None
    path = host[len("unix://"):] if host else "/var/run/docker.sock"
    return path if path else None


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over the daemon's unix socket (what the docker CLI does for each of its calls)."""

    def __init__(self, socket_path, timeout):
        super().__init__("docker", timeout=timeout)
        self.socket_path = socket_path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


def api_get(connection, path):
    """GET a Docker Engine API path: the decoded JSON, or None for 404 (the object is gone)."""
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    if response.status == 404:
        return None
    if response.status != 200:
        raise SnapshotFailed("GET %s: HTTP %d %s" % (path.split("?")[0], response.status, body[:200].decode("utf-8", "replace")))
    return json.loads(body)


def inspected_entry(container):
    """A container's inspect data in the shape of INSPECT_FORMAT's lines."""
    state = container.get("State") or {}
    return {
        "service": ((container.get("Config") or {}).get("Labels") or {}).get("com.docker.compose.service", ""),
        "container": {
            "name": container.get("Name"),
            "id": container.get("Id"),
            "image": container.get("Image"),
            "status": state.get("Status"),
            "running": state.get("Running"),
            "exit_code": state.get("ExitCode"),
            "health": (state.get("Health") or {}).get("Status", ""),
        },
    }


def take_snapshot_with_api(socket_path, project, targets):
    """The same questions as take_snapshot_with_cli, asked of the Engine API on its unix socket:
    a few milliseconds a call instead of a CLI process (25-30 ms) each."""
    filters = json.dumps({"label": ["com.docker.compose.project=" + project, "com.docker.compose.oneoff=False"]})
    connection = UnixHTTPConnection(socket_path, COMMAND_TIMEOUT)
    try:
        listed = api_get(connection, "/containers/json?all=1&filters=" + urllib.parse.quote(filters)) or []
        inspected = []
        for entry in listed:
            labels = entry.get("Labels") or {}
            if labels.get("com.docker.compose.service") not in targets:
                continue
            container = api_get(connection, "/containers/%s/json" % urllib.parse.quote(entry["Id"]))
            if container is not None:
                inspected.append(inspected_entry(container))
        containers = containers_by_service(inspected, targets)
        digests = {}
        for image in dict.fromkeys(container["image"] for container in containers.values()):
            found = api_get(connection, "/images/%s/json" % urllib.parse.quote(image, safe=":"))
            if found is not None:  # an image deleted in the meantime: its digest is null
                digests[image] = found.get("RepoDigests") or []
        return containers, digests
    finally:
        connection.close()


def take_snapshot(project, targets):
    """Ask Docker: the targets' containers and the repo digests of their images. Through the
    daemon's unix socket when the CLI would use it directly, else through the CLI."""
    socket_path = docker_socket(os.environ, os.path.expanduser("~"))
    if socket_path is not None and os.path.exists(socket_path):
        try:
            return take_snapshot_with_api(socket_path, project, targets)
        except (OSError, http.client.HTTPException):
            pass  # not a daemon we can talk to this way (a proxy, a permission): the CLI says why
    return take_snapshot_with_cli(project, targets)


def keep_images(repository, snapshot):
    """Tag each target's image as <repository>:<service> (the Engine API on the local socket, else
    the CLI); the references made, in the order of the targets."""
    wanted = [("%s:%s" % (repository, service), entry["image_id"])
              for service, entry in snapshot.items() if entry and entry.get("image_id")]
    if not wanted:
        return []
    socket_path = docker_socket(os.environ, os.path.expanduser("~"))
    if socket_path is not None and os.path.exists(socket_path):
        connection = UnixHTTPConnection(socket_path, COMMAND_TIMEOUT)
        try:
            for reference, image_id in wanted:
                repo, tag = reference.rsplit(":", 1)
                query = urllib.parse.urlencode({"repo": repo, "tag": tag})
                connection.request("POST", "/images/%s/tag?%s" % (urllib.parse.quote(image_id, safe=":"), query))
                response = connection.getresponse()
                body = response.read()
                if response.status != 201:
                    raise SnapshotFailed("tag %s: HTTP %d %s" % (reference, response.status, body[:200].decode("utf-8", "replace")))
            return [reference for reference, _image_id in wanted]
        except (OSError, http.client.HTTPException):
            pass  # the CLI says why
        finally:
            connection.close()
    for reference, image_id in wanted:
        docker(["image", "tag", image_id, reference])
    return [reference for reference, _image_id in wanted]


def check_directory(directory, uid=None, root_equivalent=None):
    """Refuse a directory someone else could plant files in (module_utils/update_executor_dirs.py)."""
    check_owned_directory(directory, uid, "directory", root_equivalent)


def write_rollback_point(path, record, snapshot):
    """The rollback point playbooks/rollback.yml restores from: 0600, written to a new file of
    a unique name in the same directory (O_EXCL|O_NOFOLLOW: never through a planted file or
    symlink) and renamed over `path` (which replaces a symlink there, never follows it), so
    that it is never seen half-written."""
    point = dict(record, started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), before=snapshot)
    check_directory(os.path.dirname(path) or ".")
    partial = "%s.%s.partial" % (path, secrets.token_hex(8))
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(point, handle, indent=4, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


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
        # Every repo digest of the image each target's container runs (update_start compares them with
        # the registry's: a platform manifest and the index that lists it may both be there).
        repo_digests = {service: list(digests.get(container.get("image")) or [])
                        for service, container in containers.items()}
    if params["rollback_point"] and not check_mode:
        record = dict(params["rollback_record"] or {})
        try:
            if params["keep_images"]:
                record["kept_images"] = keep_images(params["keep_images"], snapshot)
        except SnapshotFailed as err:
            return dict(failed=True, changed=False, msg="Could not keep the images before the update: %s" % err)
        try:
            write_rollback_point(params["rollback_point"], record, snapshot)
        except OSError as err:
            return dict(failed=True, changed=False, msg="Could not write the rollback point %s: %s"
                        % (params["rollback_point"], err))
    # A result to register (not ansible_facts: ansible-core 2.20 warns about module facts read as variables).
    result = dict(changed=False, snapshot=snapshot, states=states)
    if not earlier:
        result["repo_digests"] = repo_digests
    return result


def main():
    # Runs on the inventory host; read-only (it writes the rollback point only outside check mode).
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    result = run_task(module.params, module.check_mode)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
