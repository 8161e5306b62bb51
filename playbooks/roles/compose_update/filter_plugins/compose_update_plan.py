# -*- coding: utf-8 -*-
"""Filters of the role compose_update for the decisions that do not belong in YAML: which image
each reference points at, which one-shot jobs are due and how they run, and the rollback plan.
Plain functions, unit-tested in tests/unit/test_role_filters.py."""

from __future__ import annotations

import re
import shlex


def _tags_of(reference):
    """The RepoTags spellings of an image reference (a reference without a tag means :latest)."""
    last = reference.rsplit("/", 1)[-1]
    if "@" in reference or ":" in last:
        return [reference]
    return [reference, reference + ":latest"]


def image_ids(images, references):
    """{reference: image ID} for the references found in `images` (docker_image_info's
    `images`): by tag, or by repo digest for a reference pinned with @sha256:…; "" when absent."""
    found = {}
    for reference in references or []:
        found[reference] = ""
        wanted = _tags_of(reference)
        for image in images or []:
            names = list(image.get("RepoTags") or []) + list(image.get("RepoDigests") or [])
            if any(name in names for name in wanted):
                found[reference] = image.get("Id") or ""
                break
    return found


def oneshot_plan(targets, service_image, service_restart, service_waits, before, before_states, current_ids):
    """How the update runs the targets: {long, with_up, before, after}.

    `long`: the long-running targets (`up --wait`). One-shot jobs (restart "no") are due when they
    have no container yet, their reference points at a new image, or their last run failed or
    never ran; a due job that a long-running target waits for (depends_on condition
    service_completed_successfully) runs in the same `up --wait` (`with_up`, compose starts it first
    and waits for it); the others run on their own, `before` the long-running targets unless they
    depend on one of them (`after`). A job that is not due is left alone: `up` would run it again."""
    targets = list(targets or [])
    restart = service_restart or {}
    oneshots = [name for name in targets if restart.get(name) == "no"]
    long_running = [name for name in targets if name not in oneshots]
    due = []
    for name in oneshots:
        old = (before or {}).get(name)
        state = (before_states or {}).get(name) or {}
        last_ok = state.get("status") == "running" or (state.get("status") == "exited" and state.get("exit_code") == 0)
        current = (current_ids or {}).get((service_image or {}).get(name, ""), "")
        if old is None or old.get("image_id") != current or not last_ok:
            due.append(name)
    waited = {dep for name in long_running for dep in (service_waits or {}).get(name, [])}
    with_up = [name for name in due if name in waited]
    return {"long": long_running, "with_up": with_up, "before": [name for name in due if name not in waited], "after": []}


def noop(targets, service_image, service_restart, before, before_states, current_ids):
    """True when the update has nothing to do: every target has a container that runs the image its
    reference points at after the pull (compared by image ID: the pull's `changed` only says layers
    were downloaded), long-running ones running, one-shot jobs exited 0. False when any reference
    was not looked at (no pull, `current_ids` empty) or any target differs."""
    targets = list(targets or [])
    if not targets:
        return False
    for name in targets:
        old = (before or {}).get(name)
        state = (before_states or {}).get(name) or {}
        current = (current_ids or {}).get((service_image or {}).get(name, ""), "")
        if old is None or not current or old.get("image_id") != current:
            return False
        if (service_restart or {}).get(name) == "no":
            if state.get("status") != "exited" or state.get("exit_code") != 0:
                return False
        elif state.get("status") != "running" or state.get("health") in ("unhealthy", "starting"):
            return False
    return True


def migration_pending(was_pending, recreated, migrated, rolled_back):
    """Whether a migration is still to run after this update (the marker next to the lock): what
    it was before when the update was rolled back (the previous images are back); no when a
    migration succeeded in this run; else yes when it was pending or this run recreated a target."""
    if rolled_back:
        return bool(was_pending)
    if migrated:
        return False
    return bool(was_pending or recreated)


def migration_skip_reason(noop, was_pending, run_migrations, check_mode):
    """Why the migration step does not run, in words; None when it runs (or when the update
    stops before it: the step is then not reached)."""
    if not run_migrations:
        return "not requested"
    if check_mode:
        return "dry run: not run"
    if noop and not was_pending:
        return "skipped: no container was recreated and no earlier migration is pending"
    return None


def oneshot_groups(plan, service_deps):
    """`plan` with the one-shot jobs run on their own split by their dependencies: the ones that
    depend on a long-running target run `after` it, the others `before`."""
    long_running = set(plan.get("long") or [])
    own = list(plan.get("before") or []) + list(plan.get("after") or [])
    after = [name for name in own if set((service_deps or {}).get(name) or []) & long_running]
    return dict(plan, before=[name for name in own if name not in after], after=after)


def rollback_plan(targets, before, after, service_image, service_restart):
    """What a rollback does, from the snapshots before the update and now.

    Rolled back (`services`): targets that had a container before and now run another image, have
    none, or were running and are not any more. `new`: targets that had no container before and
    have one now: stopped. `tags`: {reference: previous image ID} for every target that had a
    container (references pinned by digest never moved; when targets sharing a reference ran
    different images, the first target's image wins). `long`/`oneshots`: the rolled back services
    recreated with `up --wait` / created without being run (restart "no")."""
    targets = list(targets or [])
    before = before or {}
    after = after or {}
    restart = service_restart or {}
    images = service_image or {}
    had = [name for name in targets if before.get(name)]
    services, new = [], []
    for name in targets:
        old, now = before.get(name), after.get(name)
        old_id = (old or {}).get("image_id") or ""
        now_id = (now or {}).get("image_id") or ""
        if old:
            stopped = old.get("state") == "running" and (now or {}).get("state") != "running"
            if old_id != now_id or stopped:
                services.append(name)
        elif now_id and now_id != old_id:
            new.append(name)
    tags = {}
    for name in had:
        reference = images.get(name) or ""
        if reference and "@" not in reference and reference not in tags:
            tags[reference] = before[name]["image_id"]
    return {
        "services": services,
        "new": new,
        "tags": tags,
        "long": [name for name in services if restart.get(name) != "no"],
        "oneshots": [name for name in services if restart.get(name) == "no"],
    }


def rollback_manual(plan, project_dir, compose_files, project, docker_host=""):
    """The commands an operator runs when the rollback itself failed."""
    cli = "docker compose --project-directory %s %s --project-name %s" % (
        shlex.quote(project_dir), " ".join("--file " + shlex.quote(name) for name in compose_files or []),
        shlex.quote(project))
    commands = ["export DOCKER_HOST=" + shlex.quote(docker_host)] if docker_host else []
    commands += ["docker image tag %s %s" % (image_id, shlex.quote(reference))
                 for reference, image_id in (plan.get("tags") or {}).items()]
    if plan.get("long"):
        commands.append(cli + " up -d --no-deps --pull never --no-build --wait " + " ".join(plan["long"]))
    if plan.get("oneshots"):
        commands.append(cli + " up --no-start --no-deps --pull never --no-build " + " ".join(plan["oneshots"]))
    if plan.get("new"):
        commands.append(cli + " stop " + " ".join(plan["new"]))
    return commands


def rollback_report(targets, plan, snapshot, states):
    """{target: {image_id, health, action} or None} after the rollback (None: not touched)."""
    report = {}
    touched = list((plan or {}).get("services") or []) + list((plan or {}).get("new") or [])
    for name in targets or []:
        if name not in touched:
            report[name] = None
            continue
        listed = (states or {}).get(name) or {}
        if not listed:
            health = "missing"
        elif listed.get("status") != "running":
            health = "exited"
        else:
            health = listed.get("health") or "running"
        report[name] = {
            "image_id": ((snapshot or {}).get(name) or {}).get("image_id"),
            "health": health,
            "action": "stopped" if name in (plan or {}).get("new", []) else "restored",
        }
    return report


def rollback_check(plan, report, before):
    """The services the rollback did not put back on their previous image (empty: all good)."""
    wrong = []
    for name in (plan or {}).get("services") or []:
        now = ((report or {}).get(name) or {}).get("image_id") or ""
        if now != ((before or {}).get(name) or {}).get("image_id"):
            wrong.append(name)
    return wrong


def image_changes(targets, service_image, before, current_ids):
    """Text for --diff: per target, the image its container runs and the one its reference
    points at now (after the pull; in check mode, the local image)."""
    before_lines, after_lines = [], []
    for name in targets or []:
        old = ((before or {}).get(name) or {}).get("image_id") or "(no container)"
        new = (current_ids or {}).get((service_image or {}).get(name, ""), "") or "(not pulled)"
        before_lines.append("%s: %s" % (name, old))
        after_lines.append("%s: %s" % (name, new))
    return {"before": "\n".join(before_lines) + "\n", "after": "\n".join(after_lines) + "\n"}


# Docker Hub names appear shortened in RepoDigests (as in library/compose_snapshot.py).
_HUB_PREFIX = re.compile(r"^((docker\.io|index\.docker\.io|registry-1\.docker\.io)/)?(library/)?")
# Container states in which docker's inspect says State.Running (compose's ps only gives the state).
_RUNNING_STATES = ("running", "paused", "restarting")


def _digest_of(reference, repo_digests):
    """The digest of `reference`'s repository among an image's RepoDigests, or None (the same rule
    as compose_snapshot's digest_of; tests/unit/test_state_after.py checks that they agree)."""
    repo = _HUB_PREFIX.sub("", re.sub(r":[^:/]*$", "", re.sub(r"@.*$", "", reference)), count=1)
    for repo_digest in repo_digests or []:
        short = _HUB_PREFIX.sub("", repo_digest, count=1)
        if short.startswith(repo + "@"):
            return short.split("@", 1)[1]
    return None


def state_after(recreate, targets, service_image, images):
    """The state after the update, {snapshot, states} as compose_snapshot returns them, from what
    community.docker's docker_compose_v2 returned (`containers`: compose ps --all, `images`:
    compose images) and the repo digests of docker_image_info's `images` (the pull's image
    info): no module process of its own. None when that does not say everything (no such result,
    a container whose image compose did not list or the image info does not know): then
    compose_snapshot asks Docker."""
    containers, used = (recreate or {}).get("containers"), (recreate or {}).get("images")
    if not isinstance(containers, list) or not isinstance(used, list):
        return None
    image_of = {entry.get("ContainerName"): entry.get("ID") for entry in used if isinstance(entry, dict)}
    digests = {image.get("Id"): image.get("RepoDigests") or [] for image in images or [] if isinstance(image, dict)}
    first = {}
    for container in sorted((c for c in containers if isinstance(c, dict)), key=lambda c: c.get("Name") or ""):
        if container.get("Service") in (targets or []) and container.get("Service") not in first:
            first[container["Service"]] = container
    snapshot, states = {}, {}
    for service in targets or []:
        container = first.get(service)
        if container is None:
            snapshot[service] = None
            continue
        image_id = image_of.get(container.get("Name"))
        if not image_id or image_id not in digests:
            return None
        state = container.get("State")
        snapshot[service] = {
            "container_id": container.get("ID"),
            "image_id": image_id,
            "digest": _digest_of((service_image or {}).get(service) or "", digests[image_id]),
            "state": state,
        }
        states[service] = {"status": state, "running": state in _RUNNING_STATES,
                           "exit_code": container.get("ExitCode"), "health": container.get("Health") or ""}
    return {"snapshot": snapshot, "states": states}


class FilterModule:
    def filters(self):
        return {
            "compose_update_image_ids": image_ids,
            "compose_update_oneshot_plan": oneshot_plan,
            "compose_update_oneshot_groups": oneshot_groups,
            "compose_update_noop": noop,
            "compose_update_migration_pending": migration_pending,
            "compose_update_migration_skip_reason": migration_skip_reason,
            "compose_update_rollback_plan": rollback_plan,
            "compose_update_rollback_manual": rollback_manual,
            "compose_update_rollback_report": rollback_report,
            "compose_update_rollback_check": rollback_check,
            "compose_update_image_changes": image_changes,
            "compose_update_state_after": state_after,
        }
