# -*- coding: utf-8 -*-
"""Filters of the fleet play (playbooks/update.yml, issue 24): whether a batch failed, so that the
next batches do not start, and which hosts a fleet rollback reverts.

Each host of the play records `_update_fleet` when its batch starts: {batch: the hosts of its
batch, failed: false}; its update's outcome sets `failed` (its own rescue already rolled it back)
and `changed` (it runs a new image now). A host that was unreachable has no outcome: it is not
among the play's active hosts (`ansible_play_hosts`) and counts as failed."""

from __future__ import annotations


def _fleet_of(hostvars, host):
    try:
        value = hostvars[host].get("_update_fleet")
    except (KeyError, AttributeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def fleet_failed_batches(hosts_all, active, hostvars, max_fail_percentage):
    """The batches (lists of host names, in order) that failed: more than `max_fail_percentage`
    percent of their hosts failed or were unreachable, or all of them (Ansible's own rule: a
    batch whose every host failed ends the play whatever the percentage)."""
    batches = []
    for host in hosts_all or []:
        fleet = _fleet_of(hostvars, host)
        if fleet and fleet.get("batch") and list(fleet["batch"]) not in batches:
            batches.append(list(fleet["batch"]))
    active = set(active or [])
    limit = float(max_fail_percentage or 0)
    failed = []
    for batch in batches:
        count = 0
        for host in batch:
            fleet = _fleet_of(hostvars, host)
            if host not in active or fleet is None or fleet.get("failed"):
                count += 1
        if count and (count * 100.0 / len(batch) > limit or count == len(batch)):
            failed.append(batch)
    return failed


def fleet_rollback_hosts(hosts_all, active, hostvars):
    """The hosts a fleet rollback reverts, newest batch first: those whose update succeeded and
    changed an image (a no-op update has nothing to revert, and its host's last-update record is
    an older update's)."""
    batches = []
    for host in hosts_all or []:
        fleet = _fleet_of(hostvars, host)
        if (
            host in set(active or [])
            and fleet
            and not fleet.get("failed")
            and fleet.get("changed")
        ):
            batch = list(fleet.get("batch") or [])
            if batch not in [b for b, _ in batches]:
                batches.append((batch, []))
            next(hosts for b, hosts in batches if b == batch).append(host)
    return [host for _, hosts in reversed(batches) for host in hosts]


class FilterModule:
    def filters(self):
        return {
            "update_fleet_failed_batches": fleet_failed_batches,
            "update_fleet_rollback_hosts": fleet_rollback_hosts,
        }
