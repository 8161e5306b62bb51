"""Load the playbooks' Python (playbooks/library/ modules, playbooks/filter_plugins/) for unit
tests: they are files next to the playbooks, not a package."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


def load(relative: str) -> ModuleType:
    """playbooks/<relative>.py as a module (e.g. "library/update_lock")."""
    path = PLAYBOOKS / f"{relative}.py"
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
