"""The worker's Ansible inventory (UPDATE_INVENTORY): which hosts an update targets (issue 24).

A job may name hosts or groups (`hosts`); each must be a name of the inventory, checked here
against the inventory as Ansible parses it (its InventoryManager, in this process), and the
play gets them joined by ',' as `update_hosts`: never a pattern of the job's (the grammar in
worker/shared/request.py allows no `:`, `!`, `&`, `*` or regex). Without `hosts`, a job updates
UPDATE_HOSTS_GROUP, or localhost when the inventory has no group of the default name.

The inventory is parsed when the worker starts (a bad UPDATE_INVENTORY stops it with the
problem) and again for each job: operators edit it while the worker runs.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..shared.request import InvalidRequest
from .settings import Settings

logger = logging.getLogger("update_executor.inventory")

# The host of a job when the inventory has no group of the default name (Ansible's implicit
# localhost when the inventory does not list it): the worker's own host, as before fleets.
FALLBACK_HOST = "localhost"
# How many valid names a refusal lists (an inventory may hold thousands).
MAX_NAMES_SHOWN = 50


class InventoryError(ValueError):
    """The inventory cannot be read or does not have what the settings name."""


@dataclass(frozen=True)
class Inventory:
    """The names of an inventory: its hosts and its groups (`all` and `ungrouped` included)."""

    path: Path
    hosts: frozenset[str]
    groups: frozenset[str]

    def names(self) -> list[str]:
        """Every name a job may give, sorted."""
        return sorted(self.hosts | self.groups)

    def has(self, name: str) -> bool:
        return name in self.hosts or name in self.groups


def _sources(path: Path, ignored: re.Pattern[bytes]) -> Iterator[Path]:
    """The files Ansible reads as inventory sources under `path` (a file, or a directory and
    its subdirectories, without what `ignored` matches: host_vars/, group_vars/, hidden files
    and the ignored suffixes)."""
    if not path.is_dir():
        yield path
        return
    for entry in sorted(os.listdir(path)):
        if not ignored.search(os.fsencode(entry)):
            yield from _sources(path / entry, ignored)


def read_inventory(path: Path) -> Inventory:
    """Parse the inventory at `path` as ansible-playbook does; InventoryError naming each file
    no inventory plugin could parse (Ansible's warnings, on stderr, say why)."""
    # Imported here (0.4 s, tens of MB): the host's other commands (unlock, rollback) need none.
    from ansible.errors import AnsibleError  # type: ignore[import-untyped]  # noqa: PLC0415
    from ansible.inventory.manager import (  # type: ignore[import-untyped]  # noqa: PLC0415
        IGNORED,
        InventoryManager,
    )
    from ansible.parsing.dataloader import DataLoader  # type: ignore[import-untyped]  # noqa: PLC0415

    if not path.exists():
        raise InventoryError(f"the inventory {path} does not exist")
    manager: Any = InventoryManager(loader=DataLoader(), sources=[], parse=False)
    sources = list(_sources(path, IGNORED))
    if not sources:
        raise InventoryError(f"the inventory directory {path} holds no inventory file")
    unparsed = []
    for source in sources:
        try:
            parsed = manager.parse_source(str(source))
        except AnsibleError as exc:  # e.g. no inventory plugin enabled
            raise InventoryError(f"the inventory {source} cannot be read: {exc}") from None
        if not parsed:
            unparsed.append(str(source))
    if unparsed:
        raise InventoryError(
            f"the inventory {', '.join(unparsed)} could not be parsed (Ansible's warnings above "
            f"say why; `ansible-inventory -i {path} --graph` shows the same)"
        )
    manager.reconcile_inventory()
    return Inventory(path, frozenset(manager.hosts), frozenset(manager.groups))


def default_target(inventory: Inventory, group: str, *, group_is_default: bool) -> str:
    """The pattern of a job without `hosts`: UPDATE_HOSTS_GROUP when the inventory has it;
    with the default name and no such group, localhost; InventoryError for a group set and
    missing (a typo must not update another host)."""
    if inventory.has(group):
        return group
    if group_is_default:
        return FALLBACK_HOST
    raise InventoryError(
        f"UPDATE_HOSTS_GROUP {group} is no group or host of the inventory {inventory.path} "
        f"(it has: {shown_names(inventory)})"
    )


def requested_target(inventory: Inventory, hosts: Sequence[str]) -> str:
    """A job's `hosts` (already in the HOST_NAME grammar) as the play's `update_hosts`: the
    names joined by ','; InvalidRequest listing the valid names when one is not in the
    inventory."""
    unknown = sorted({name for name in hosts if not inventory.has(name)})
    if unknown:
        raise InvalidRequest(
            f"hosts not in the inventory: {', '.join(unknown)} (valid host and group names: "
            f"{shown_names(inventory)})"
        )
    return ",".join(hosts)


def shown_names(inventory: Inventory) -> str:
    names = inventory.names()
    more = len(names) - MAX_NAMES_SHOWN
    return ", ".join(names[:MAX_NAMES_SHOWN]) + (f", ... ({more} more)" if more > 0 else "")


def target(settings: Settings, hosts: Sequence[str]) -> str:
    """The `update_hosts` of a job: its `hosts` checked against the inventory as it is now,
    or the default target. InvalidRequest (a name not in it) or InventoryError."""
    inventory = read_inventory(settings.inventory)
    if hosts:
        return requested_target(inventory, hosts)
    return default_target(
        inventory,
        settings.hosts_group,
        group_is_default="hosts_group" not in settings.model_fields_set,
    )


async def job_target(settings: Settings, hosts: Sequence[str]) -> str:
    """`target` off the event loop (an inventory may be a script, or large)."""
    return await asyncio.to_thread(target, settings, hosts)


def inventory_problems(settings: Settings) -> list[str]:
    """The start-up check: the inventory parses and the default target is in it."""
    try:
        pattern = target(settings, ())
    except InventoryError as exc:
        return [f"{exc} (UPDATE_INVENTORY)"]
    logger.info("inventory %s: a job without hosts updates %s", settings.inventory, pattern)
    return []
