# -*- coding: utf-8 -*-
"""Filters for the lifecycle hooks of update.yml (Pre-update and Post-update steps): which
containers run a hook, as plain functions (no looped set_fact task, see docs/performance.md)."""

from __future__ import annotations


def pre_hook_targets(hooked, before, current_ids):
    """The hooked services whose running container is about to be replaced: its image is not
    the one its image reference points at now (after the pull). `current_ids` are the image IDs
    of the services' references, in the order of `hooked` ("" when unknown: then it runs)."""
    targets = []
    ids = list(current_ids or [])
    for index, service in enumerate(hooked or []):
        old = (before or {}).get(service)
        if not old or old.get("state") != "running":
            continue  # no old container to run the hook in
        current = ids[index].strip() if index < len(ids) else ""
        if old.get("image_id") != current:
            targets.append(service)
    return targets


def post_hook_targets(hooked, before, after):
    """The hooked services whose container was replaced by the update and now runs."""
    targets = []
    for service in hooked or []:
        new = (after or {}).get(service)
        old = (before or {}).get(service)
        if new and new.get("state") == "running" and (not old or old.get("container_id") != new.get("container_id")):
            targets.append(service)
    return targets


def hook_report(report, service, kind, result, command):
    """`report` with {service: {kind: {command, rc, output_tail}}} added (the last 20 lines)."""
    output = "\n".join(part for part in ((result or {}).get("stdout"), (result or {}).get("stderr")) if part)
    entry = {
        "command": command,
        "rc": (result or {}).get("rc"),
        "output_tail": "\n".join(str(output).splitlines()[-20:])[-4000:],
    }
    merged = {name: dict(value) for name, value in (report or {}).items()}
    merged.setdefault(service, {})[kind] = entry
    return merged


class FilterModule:
    def filters(self):
        return {
            "update_pre_hook_targets": pre_hook_targets,
            "update_post_hook_targets": post_hook_targets,
            "update_hook_report": hook_report,
        }
