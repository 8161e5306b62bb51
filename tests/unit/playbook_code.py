"""Load the Python of the role compose_update (playbooks/roles/compose_update/: library/ modules,
filter_plugins/, module_utils/) for unit tests: they are files of the role, not a package."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks" / "roles" / "compose_update"


def _load_path(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(relative: str) -> ModuleType:
    """playbooks/<relative>.py as a module (e.g. "library/update_lock"). The library modules
    import playbooks/module_utils/<name>.py as ansible.module_utils.<name>, as ansible does."""
    for util in sorted((PLAYBOOKS / "module_utils").glob("*.py")):
        name = f"ansible.module_utils.{util.stem}"
        if name not in sys.modules:
            sys.modules[name] = _load_path(name, util)
    path = PLAYBOOKS / f"{relative}.py"
    return _load_path(path.stem, path)
