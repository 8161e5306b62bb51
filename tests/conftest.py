"""How `make test` spreads the suite over processes (pytest-xdist, `-n 2 --dist loadgroup`).

Each xdist worker is a pytest session of its own and starts its own test bed (dockerd,
registry, Redis: tests/integration/conftest.py); testbed/ keeps two beds on one machine apart
(SESSION_TAG, per-session dirs, a bridge and address pool each, caches built under a lock).

What a worker gets is a whole test file, so that a module-scoped fixture (`shared_deployment`,
the sites of test_playbook_faults, test_role, test_systemd) is set up once, not once per
worker. The files whose tests read a session's shared outcomes (`updated_once` and what follows it)
go to one worker together, so that the update they read runs once per run, not once per
worker; likewise the files that install from the session's wheelhouse. Without xdist
(`pytest -p no:xdist`, or `-n 0`) nothing of this applies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

# Session-scoped fixtures of tests/integration/conftest.py that cost a lot to make, and the
# group of the files whose tests use them: the shared outcomes (each one real update or more),
# the wheelhouse (the project's wheel and its dependencies', for test_wheel and test_systemd).
SHARED_FIXTURES = {
    "outcome_site": "shared-outcomes",
    "updated_once": "shared-outcomes",
    "updated_again": "shared-outcomes",
    "rolled_back_once": "shared-outcomes",
    "cli_updated_once": "shared-outcomes",
    "wheelhouse": "wheelhouse",
}


@pytest.hookimpl(tryfirst=True)  # before xdist adds the group to the test ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The whole file of a test that uses one: its other tests may share its module fixtures.
    groups: dict[Path, str] = {}
    for item in items:
        for name in getattr(item, "fixturenames", ()):
            if name in SHARED_FIXTURES:
                groups.setdefault(item.path, SHARED_FIXTURES[name])
    for item in items:
        if item.path in groups:
            item.add_marker(pytest.mark.xdist_group(groups[item.path]))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under `--dist loadgroup`: the tests of a group together, every other test with the
    other tests of its file (xdist's own loadgroup sends those one by one)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    class FileOrGroupScheduling(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]"):
                return nodeid.rsplit("@", maxsplit=1)[-1]
            return nodeid.split("::", 1)[0]

    # Files in collection order (the integration tests, the longest, first), not by their
    # number of tests: the last file a worker takes should be a short one.
    config.option.loadscopereorder = False
    return FileOrGroupScheduling(config, log)
