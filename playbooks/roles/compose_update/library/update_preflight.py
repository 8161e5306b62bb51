#!/usr/bin/python
# -*- coding: utf-8 -*-
"""update_preflight: the Preflight step of playbooks/update.yml in one call (see docs/internals.md)."""

from __future__ import annotations

DOCUMENTATION = r"""
---
module: update_preflight
short_description: Check Docker, Compose, the settings and the compose file, and work out the target services
description:
  - The Preflight step of update-executor's C(playbooks/update.yml), read-only, in one task. It
    asks the Docker daemon for its ID and data root and Compose for its version, normalises and
    checks the request and the settings, reads the compose configuration (C(docker compose
    config --format json)), checks that the requested services (and the migration and backup
    services) exist and works out the target services (build-only services are skipped with a
    reason).
  - It never fails. What it found is returned as facts (the C(_compose_update_*) variables the rest of the
    playbook uses), and the first check that failed as C(_compose_update_preflight_error), which the next
    task turns into the failure; facts are only kept from results that did not fail, and the
    report needs those found before the failed check (the project name, for one).
  - An ordinary module of the role compose_update, run on the inventory host: the collection
    community.docker has nothing that reads a compose configuration's services.
  - The full compose configuration holds interpolated secrets (environment, env_file); only
    the project name and each service's image, restart policy and dependencies are returned, and
    its lifecycle hook labels (C(update-executor.pre-update), C(update-executor.post-update),
    C(update-executor.timeout)).
version_added: "1.0.0"
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
    description: Directory of the update locks (relative to O(cwd)); must not be empty.
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
"""

EXAMPLES = r"""
---
- name: Preflight | Check Docker, Compose, the settings and the compose file, and work out the target services
  update_preflight:
    compose_file: docker-compose.prod.yml
    project_dir: /srv/app
    compose_files: [docker-compose.prod.yml]
    services: api,worker
    registry_host: ghcr.io
    cwd: /srv/app
"""

RETURN = r"""
# The result's keys (register it; vars/main.yml of the role names key <k> _compose_update_<k>):
preflight_error:
  description:
    - C(docker_info_text), C(compose_version_text), C(requested), C(health_timeout),
      C(run_migrations), C(rollback_on_migration_failure), C(create_backup),
      C(backup_dir), C(lock_dir), C(lock_max_age), C(project), C(service_names),
      C(service_image), C(service_restart), C(service_deps), C(service_hooks), C(targets),
      C(skipped), as far as the checks got; C(daemon_host), the
      C(DOCKER_HOST) the module ran with (or its docker context's address); C(context_host), the address
      of the docker context the CLI uses when no C(DOCKER_HOST) is set and that context is not the default one
      (every later task gets it as C(DOCKER_HOST); a context with TLS material or an SSH address fails the
      preflight: set compose_update_docker_host), else empty; C(cli_plugins_dir), the user's docker CLI
      plugin directory (C($DOCKER_CONFIG/cli-plugins) or C(~/.docker/cli-plugins)) when Compose is
      installed there, else empty (the login links it into the run's private Docker config); C(lock_base),
      C(<lock_dir>/<project>.<key>) (the key names the daemon: its ID and data root), which the lock, the rollback
      point, the last-update record and the migration marker add a suffix to, once the project is known;
      C(preflight_error) is the message of the first check that failed, or null.
  returned: always
  type: raw
"""

import hashlib
import json
import os
import re
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.update_executor_env import compose_environment
from ansible.module_utils.parsing.convert_bool import boolean

ARGUMENT_SPEC = {
    "compose_file": {"type": "str", "required": True},
    "project_dir": {"type": "str", "required": True},
    "compose_files": {"type": "list", "elements": "str", "required": True},
    "profiles": {"type": "list", "elements": "str", "default": []},
    "env_files": {"type": "list", "elements": "str", "default": []},
    "project_name": {"type": "str", "default": ""},
    "services": {"type": "raw"},
    "registry_host": {"type": "str", "required": True},
    "run_migrations": {"type": "raw", "default": True},
    "migration_service": {"type": "str", "default": "api"},
    "migration_command": {"type": "str", "default": ""},
    "health_timeout": {"type": "raw", "default": 300},
    "rollback_on_migration_failure": {"type": "raw", "default": True},
    "create_backup": {"type": "raw", "default": False},
    "backup_command": {"type": "str", "default": ""},
    "backup_service": {"type": "str", "default": "db"},
    "backup_dir": {"type": "str", "default": ""},
    "lock_dir": {"type": "str", "default": ""},
    "lock_max_age": {"type": "raw", "default": 1800},
    "cwd": {"type": "str", "required": True},
}

# Service and project names we accept (also keeps option-like names away from the CLI).
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
NAME_RULE = "[A-Za-z0-9][A-Za-z0-9_.-]*"
MINIMUM_COMPOSE = (2, 18, 0)
# Only the daemon's ID and data root are printed (`docker info` can hold proxy credentials).
DOCKER_INFO_FORMAT = '{"ID": {{json .ID}}, "DockerRootDir": {{json .DockerRootDir}}}'
SKIPPED_BUILD_ONLY = "no image: build-only service"
COMMAND_TIMEOUT = 120


PREFIX = "_compose_update_"


class PreflightFailed(Exception):
    """A check failed; the message is the one the update reports."""


def start_command(argv, cwd=None):
    """Start argv (no shell) with its output captured: a Popen, or the reason it could not start.
    The preflight starts its docker queries together and reads them as it needs them."""
    try:
        return subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=compose_environment(os.environ))
    except OSError as err:
        return str(err)


def finish_command(started):
    """(exit status, stdout, stderr) of a started command; (None, "", reason) when it could not run."""
    if isinstance(started, str):
        return None, "", started
    try:
        out, err = started.communicate(timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired:
        started.kill()
        started.communicate()
        return None, "", "no answer in %d s" % COMMAND_TIMEOUT
    return started.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def drop_command(started):
    """Stop and reap a started command whose answer was not read (a check before it failed)."""
    if isinstance(started, str) or started.returncode is not None:
        return
    started.kill()
    started.communicate()


def to_int(value):
    """Jinja's `int` filter: a number, or 0 when the value is not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            return int(float(value))
        except (TypeError, ValueError):
            return 0


def to_bool(value):
    """Ansible's `bool` filter: true for true, yes, on, 1 (any case), false otherwise."""
    return boolean(value, strict=False)


def absolute(path, cwd):
    return path if os.path.isabs(path) else cwd + "/" + path


def valid_name(name):
    return NAME_PATTERN.fullmatch(name) is not None


def daemon_info(text):
    """The daemon's {ID, DockerRootDir} from `docker info --format` output, {} when it did not answer."""
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                info = json.loads(line)
            except ValueError:
                return {}
            return info if isinstance(info, dict) else {}
    return {}


def lock_base(lock_dir, project, docker_info_text):
    """<lock_dir>/<project>.<key>: the lock, the rollback point, the last-update record and the
    migration marker are this plus a suffix. The key names the daemon (its ID and data root, the
    first 12 hex digits of their SHA-1), so two daemons' projects of the same name do not share one."""
    info = daemon_info(docker_info_text)
    key = "%s %s" % (info.get("ID", ""), info.get("DockerRootDir", ""))
    return "%s/%s.%s" % (lock_dir, project, hashlib.sha1(key.encode("utf-8")).hexdigest()[:12])


def compose_version(text):
    """(major, minor, patch) from `docker compose version --short` (v2.40.3, 2.40.3-desktop.1), or None."""
    match = re.match(r"v?([0-9]+)[.]([0-9]+)(?:[.]([0-9]+))?", text)
    if match is None:
        return None
    return tuple(int(part or 0) for part in match.groups())


def current_context(environ):
    """The docker context the CLI would use ("" for the default one): none when DOCKER_HOST is
    set (it wins), else DOCKER_CONTEXT, else currentContext of the Docker config."""
    if environ.get("DOCKER_HOST"):
        return ""
    name = environ.get("DOCKER_CONTEXT", "")
    if not name:
        config = environ.get("DOCKER_CONFIG") or os.path.join(environ.get("HOME") or "~", ".docker")
        try:
            with open(os.path.join(os.path.expanduser(config), "config.json"), encoding="utf-8") as handle:
                name = json.load(handle).get("currentContext") or ""
        except (OSError, ValueError, AttributeError):
            name = ""
    return "" if name == "default" else name


def context_endpoint(name, text):
    """The daemon address of context `name` from `docker context inspect` output; PreflightFailed
    when it cannot be handed to every step as DOCKER_HOST (TLS material, SSH, unreadable)."""
    hint = ("Set compose_update_docker_host (or DOCKER_HOST) to the daemon instead: the role's steps must reach "
            "one daemon, and the run's private Docker config (the login) and community.docker's API modules do "
            "not follow docker contexts. Nothing was changed.")
    try:
        entry = json.loads(text)[0]
        endpoint = entry["Endpoints"]["docker"]
        host = endpoint["Host"]
    except (ValueError, LookupError, TypeError):
        raise PreflightFailed("The docker context '%s' could not be read (`docker context inspect`): %s %s"
                              % (name, text.strip()[-300:], hint))
    tls = (entry.get("TLSMaterial") or {}).get("docker") or endpoint.get("SkipTLSVerify")
    if tls or not re.match(r"(unix|tcp)://", host or ""):
        raise PreflightFailed("The docker context '%s' (%s%s) cannot be followed by every step. %s"
                              % (name, host, ", TLS" if tls else "", hint))
    return host


def user_cli_plugins_dir(environ, exists=os.path.exists):
    """The user's docker CLI plugin directory when it holds Compose, else "".

    The docker CLI looks for plugins in $DOCKER_CONFIG/cli-plugins (~/.docker/cli-plugins
    without DOCKER_CONFIG) before the system's directories. The pull runs with the run's
    private DOCKER_CONFIG (the login's credentials), where a Compose installed per user
    would not be found: the login links this directory into it."""
    config = environ.get("DOCKER_CONFIG") or os.path.join(environ.get("HOME") or "~", ".docker")
    plugins = os.path.join(os.path.expanduser(config), "cli-plugins")
    return plugins if exists(os.path.join(plugins, "docker-compose")) else ""


def normalise_request(services):
    """The requested services as a list without blanks or repeats (a comma string or a list)."""
    if not services:
        return []
    items = services.split(",") if isinstance(services, str) else services
    names = [str(item).strip() for item in items]
    return list(dict.fromkeys(name for name in names if name))


def service_table(config):
    """project, names, and per service its image, restart policy and dependencies, from the JSON
    of `docker compose config` (compose's order)."""
    services = config.get("services") or {}
    names = list(services)
    image = {name: (services[name] or {}).get("image") or "" for name in names}
    restart = {name: (services[name] or {}).get("restart") or "" for name in names}
    deps = {name: list((services[name] or {}).get("depends_on") or {}) for name in names}
    return config.get("name"), names, image, restart, deps


def completion_waits(config):
    """Per service, the services it waits to complete (depends_on condition
    service_completed_successfully): compose starts those first in the same `up --wait`."""
    waits = {}
    for name, service in (config.get("services") or {}).items():
        depends = (service or {}).get("depends_on") or {}
        if isinstance(depends, dict):
            waits[name] = [dep for dep, how in depends.items()
                           if isinstance(how, dict) and how.get("condition") == "service_completed_successfully"]
        else:
            waits[name] = []
    return waits


HOOK_LABELS = {"pre": "update-executor.pre-update", "post": "update-executor.post-update"}
HOOK_TIMEOUT_LABEL = "update-executor.timeout"


def service_hooks(config):
    """Per service with a lifecycle hook label: {pre, post, timeout} (commands as written, "" when
    absent; timeout in seconds or None). Only these labels are read: others may hold anything."""
    hooks = {}
    for name, service in (config.get("services") or {}).items():
        labels = (service or {}).get("labels") or {}
        if isinstance(labels, list):  # compose normalises to a mapping; accept KEY=VALUE too
            labels = dict(str(item).partition("=")[::2] for item in labels)
        # `docker compose config` keeps compose's `$$` escape in its output: the container sees `$`.
        commands = {
            kind: str(labels.get(label) or "").replace("$$", "$").strip() for kind, label in HOOK_LABELS.items()
        }
        if not any(commands.values()):
            continue
        timeout = to_int(labels.get(HOOK_TIMEOUT_LABEL))
        hooks[name] = dict(commands, timeout=timeout if timeout and timeout > 0 else None)
    return hooks


def work_out_targets(requested, names, image, registry_host):
    """(targets, skipped): the requested services, or by default every service whose image is
    under `registry_host/`; services without an image (build-only) are skipped with a reason."""
    with_image = [name for name in names if image.get(name)]
    if requested:
        candidates = list(requested)
    else:
        prefix = registry_host + "/"
        candidates = [name for name in names if image.get(name, "").startswith(prefix)]
        candidates += [name for name in names if name not in with_image]
    build_only = [name for name in candidates if name not in with_image]
    targets = [name for name in candidates if name not in build_only]
    return targets, {name: SKIPPED_BUILD_ONLY for name in build_only}


def check_docker(facts, info, version_query):
    """The daemon's ID and data root and Compose's version (both queries started by the caller);
    fail when either is missing."""
    rc, out, err = finish_command(info)
    facts["_compose_update_docker_info_text"] = (out + err).rstrip("\n") if rc is not None else err
    rc, out, err = finish_command(version_query)
    facts["_compose_update_compose_version_text"] = (out + err).strip()
    if not daemon_info(facts["_compose_update_docker_info_text"]).get("ID"):
        raise PreflightFailed("The Docker daemon does not answer: " + facts["_compose_update_docker_info_text"].strip())
    version = compose_version(facts["_compose_update_compose_version_text"])
    if version is None or version < MINIMUM_COMPOSE:
        raise PreflightFailed(
            "Docker Compose v2 is missing or too old (`docker compose version --short`: %s): the playbooks need "
            "2.18.0 or later." % json.dumps(facts["_compose_update_compose_version_text"]))


def check_settings(params, facts):
    """Normalise the request and the settings into facts; fail on a bad name, setting or compose file."""
    cwd = params["cwd"]
    facts.update(
        _compose_update_requested=normalise_request(params["services"]),
        _compose_update_health_timeout=to_int(params["health_timeout"]),
        _compose_update_run_migrations=to_bool(params["run_migrations"]),
        _compose_update_rollback_on_migration_failure=to_bool(params["rollback_on_migration_failure"]),
        _compose_update_create_backup=to_bool(params["create_backup"]),
        _compose_update_backup_dir=absolute(params["backup_dir"] or "", cwd),
        _compose_update_lock_dir=re.sub("/+$", "", absolute(params["lock_dir"] or "", cwd)),
        _compose_update_lock_max_age=to_int(params["lock_max_age"]),
    )
    bad_names = [name for name in facts["_compose_update_requested"] if not valid_name(name)]
    if bad_names:
        raise PreflightFailed("Invalid service name(s) %s: names must match %s."
                              % (", ".join(json.dumps(name) for name in bad_names), NAME_RULE))
    project_name, migrations = params["project_name"] or "", facts["_compose_update_run_migrations"]
    settings_ok = ((not project_name or valid_name(project_name))
                   and (not migrations or valid_name(params["migration_service"]))
                   and (not migrations or (params["migration_command"] or "").strip() != "")
                   and facts["_compose_update_health_timeout"] > 0 and facts["_compose_update_lock_max_age"] > 0
                   and bool(params["lock_dir"]))
    if not settings_ok:
        raise PreflightFailed(
            "Invalid settings: compose_project_name (%s) and migration_service (%s) must match %s, migration_command "
            "must not be empty, health_timeout and lock_max_age must be positive numbers of seconds (got %s and %s) "
            "and lock_dir must not be empty."
            % (json.dumps(project_name), json.dumps(params["migration_service"]), NAME_RULE,
               json.dumps(params["health_timeout"]), json.dumps(params["lock_max_age"])))
    if not os.path.isfile(absolute(params["compose_file"], cwd)):
        raise PreflightFailed("Compose file '%s' (from %s) does not exist or is not a file."
                              % (params["compose_file"], cwd))
    if facts["_compose_update_create_backup"] and not (params["backup_command"] or "").strip():
        raise PreflightFailed(
            "create_backup is true but no backup command is configured: set BACKUP_COMMAND in the worker's "
            "environment (or -e backup_command=...) to a command that writes the backup to its standard output, "
            "for example 'pg_dump -U app app' run in the service BACKUP_SERVICE (now %s). Nothing was changed."
            % json.dumps(params["backup_service"]))


def start_compose_config(params):
    """Start `docker compose config --format json` for the project; None when the project name
    is not a valid name (it is not put on a command line: the settings check fails first)."""
    if params["project_name"] and not valid_name(params["project_name"]):
        return None
    argv = ["docker", "compose", "--project-directory", params["project_dir"]]
    for name in params["compose_files"]:
        argv += ["--file", name]
    for name in params.get("env_files") or []:
        argv += ["--env-file", name]
    for name in params.get("profiles") or []:
        argv += ["--profile", name]
    if params["project_name"]:
        argv += ["--project-name", params["project_name"]]
    if not os.path.isdir(params["project_dir"]):
        return "no directory %s" % params["project_dir"]
    return start_command(argv + ["config", "--format", "json"], cwd=params["project_dir"])


def read_compose_config(params, facts, config_query):
    """Read the compose configuration and keep the project and its services (nothing else: the
    full configuration holds interpolated secrets)."""
    rc, out, err = finish_command(config_query if config_query is not None else "not started")
    if rc != 0:
        raise PreflightFailed("docker compose config failed for '%s': %s" % (params["compose_file"], err.strip()))
    try:
        config = json.loads(out)
    except ValueError as error:
        raise PreflightFailed("docker compose config for '%s' printed no JSON: %s" % (params["compose_file"], error))
    project, names, image, restart, deps = service_table(config)
    facts.update(_compose_update_project=project, _compose_update_service_names=names, _compose_update_service_image=image, _compose_update_service_restart=restart,
                 _compose_update_service_deps=deps, _compose_update_service_hooks=service_hooks(config),
                 _compose_update_service_waits=completion_waits(config))


def choose_targets(params, facts):
    """Check that the requested, migration and backup services exist and work out the targets."""
    project, names = facts["_compose_update_project"], facts["_compose_update_service_names"]
    known = ", ".join(names)
    unknown = [name for name in facts["_compose_update_requested"] if name not in names]
    if unknown:
        raise PreflightFailed("Unknown service(s) %s in project '%s'; known services: %s."
                              % (", ".join(unknown), project, known))
    if facts["_compose_update_run_migrations"] and params["migration_service"] not in names:
        raise PreflightFailed("Migration service '%s' is not in project '%s'; known services: %s."
                              % (params["migration_service"], project, known))
    targets, skipped = work_out_targets(facts["_compose_update_requested"], names, facts["_compose_update_service_image"],
                                        params["registry_host"])
    facts.update(_compose_update_targets=targets, _compose_update_skipped=skipped)
    if not targets:
        why = ("every requested service was skipped (%s)" % ", ".join(skipped) if facts["_compose_update_requested"]
               else "no service image starts with %s/ (set update_services to choose services)"
               % params["registry_host"])
        raise PreflightFailed("Nothing to update in project '%s': %s." % (project, why))
    backup_service = params["backup_service"]
    if facts["_compose_update_create_backup"] and not (valid_name(backup_service) and backup_service in names):
        raise PreflightFailed("Backup service %s is not in project '%s'; known services: %s."
                              % (json.dumps(backup_service), project, known))


def run_task(params):
    """The Preflight checks in order; the facts found and the first failure's message (or None).
    The three docker queries run at the same time (they take most of the step's time)."""
    facts = {"_compose_update_context_host": ""}
    context = current_context(os.environ)
    context_query = start_command(["docker", "context", "inspect", context]) if context else None
    info = start_command(["docker", "info", "--format", DOCKER_INFO_FORMAT])
    version_query = start_command(["docker", "compose", "version", "--short"])
    config_query = start_compose_config(params)
    try:
        if context_query is not None:
            # One daemon for every step: the context's address becomes every later task's DOCKER_HOST.
            _rc, out, err = finish_command(context_query)
            facts["_compose_update_context_host"] = context_endpoint(context, out or err)
        check_docker(facts, info, version_query)
        check_settings(params, facts)
        read_compose_config(params, facts, config_query)
        config_query = None
        choose_targets(params, facts)
        error = None
    except PreflightFailed as failure:
        error = str(failure)
    finally:
        for started in (context_query, info, version_query, config_query):
            if started is not None:
                drop_command(started)
    facts["_compose_update_preflight_error"] = error
    # The daemon the steps reach (the task's DOCKER_HOST: compose_update_docker_host or the host's own),
    # for the commands an operator runs by hand when a rollback fails.
    facts["_compose_update_daemon_host"] = os.environ.get("DOCKER_HOST", "") or facts["_compose_update_context_host"]
    facts["_compose_update_cli_plugins_dir"] = user_cli_plugins_dir(os.environ)
    if facts.get("_compose_update_project") and facts.get("_compose_update_lock_dir"):
        facts["_compose_update_lock_base"] = lock_base(facts["_compose_update_lock_dir"], facts["_compose_update_project"],
                                                       facts.get("_compose_update_docker_info_text") or "")
    # A result to register (not ansible_facts: ansible-core 2.20 warns about module facts read as
    # variables); the role's vars/main.yml names each key _compose_update_<key>.
    return dict(changed=False, **{name[len(PREFIX):]: value for name, value in facts.items()})


def main():
    # Runs on the inventory host; read-only, the same in check mode.
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    module.exit_json(**run_task(module.params))


if __name__ == "__main__":
    main()
