# -*- coding: utf-8 -*-
"""Filters of update-executor's playbooks, for the summary (the Report step of update.yml).

A filter runs inside the template that uses it: the per-service part of the summary needs no
looped set_fact task (30-50 ms a task plus its items, see docs/performance.md)."""

from __future__ import annotations


def service_reports(targets, service_image, before, after, after_states):
    """{service: {image, before, after, health}} for each target service.

    `before` and `after` are the snapshots ({service: {container_id, image_id, digest, state} or
    None}); `after` is None when the after-snapshot was not taken (the update stopped before the
    recreate), and then no service has a health. Health: the container's healthcheck status
    (healthy, unhealthy, starting), `running` without a healthcheck, `exited` when it is not
    running, `missing` when the service has no container."""
    reports = {}
    for service in targets or []:
        after_entry = (after or {}).get(service)
        if after is None:
            health = None
        elif after_entry is None:
            health = "missing"
        else:
            state = (after_states or {}).get(service) or {}
            health = (state.get("health") or "running") if state.get("running") else "exited"
        reports[service] = {
            "image": (service_image or {}).get(service),
            "before": (before or {}).get(service),
            "after": after_entry,
            "health": health,
        }
    return reports


def images_changed(targets, before, after):
    """Whether a target runs another image than before the update (after: None when the
    after-snapshot was not taken: nothing was recreated)."""
    if after is None:
        return False
    for service in targets or []:
        old, new = (before or {}).get(service) or {}, (after or {}).get(service) or {}
        if new.get("image_id") and old.get("image_id") != new.get("image_id"):
            return True
    return False


class FilterModule:
    def filters(self):
        return {"update_service_reports": service_reports, "update_images_changed": images_changed}
