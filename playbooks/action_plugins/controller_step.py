# -*- coding: utf-8 -*-
"""The playbooks' own actions, run inside ansible-playbook: update_preflight, update_lock,
registry_login, compose_snapshot and docker_command are links to this file.

Each runs the logic of the module file of the same name in playbooks/library/ (which also holds
its options and documentation: `ansible-doc -M playbooks/library <name>`, and still works as a
plain module) in the controller process instead of a module process of its own. The play only
targets localhost with the local connection, so the controller is where the work has to happen
anyway; this saves a module's interpreter start-up and imports (0.25-0.6 s a task on the bench
machine, see docs/performance.md). A library module offers `run_in_controller(params,
check_mode)`, returning the task result."""

from __future__ import annotations

import importlib.util
import os
import sys

from ansible.plugins.action import ActionBase

_PLAYBOOKS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
_LIBRARY = os.path.join(_PLAYBOOKS, "library")
# The library modules import their shared code as ansible.module_utils.<name>, which ansible
# finds in playbooks/module_utils/ when it builds a module; in this process we place it there.
_MODULE_UTILS = ("update_executor_env",)


def _load_file(module_name, path):
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[module_name] = module
    return module


def load_library_module(name):
    """playbooks/library/<name>.py, imported once per process (its main() only runs as a script)."""
    for util in _MODULE_UTILS:
        _load_file("ansible.module_utils." + util, os.path.join(_PLAYBOOKS, "module_utils", util + ".py"))
    return _load_file("update_executor_library_" + name, os.path.join(_LIBRARY, name + ".py"))


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    # Each module says what check mode means for it (a dry run, read-only work done anyway, or
    # skipped); tasks that must run in a dry run say check_mode: false.
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        # The action's own name (ansible.legacy.compose_snapshot -> compose_snapshot) names the module.
        library = load_library_module(self._task.action.rsplit(".", 1)[-1])
        _validation, params = self.validate_argument_spec(
            argument_spec=library.ARGUMENT_SPEC, required_if=getattr(library, "REQUIRED_IF", None) or []
        )
        result.update(library.run_in_controller(params, bool(self._task.check_mode)))
        return result
