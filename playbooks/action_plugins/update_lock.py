# -*- coding: utf-8 -*-
"""update_lock on the controller: the lock logic of playbooks/library/update_lock.py run inside
ansible-playbook instead of a module process of its own.

The playbooks only target localhost with the local connection, so the controller is the host
the lock belongs to; running here saves the module's interpreter start-up and imports (about
0.3 s a task on the bench machine, see docs/performance.md). The module file stays the source of
the logic, the options and the documentation (`ansible-doc -M playbooks/library update_lock`)."""

from __future__ import annotations

import importlib.util
import os
import sys

from ansible.plugins.action import ActionBase

_MODULE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "library", "update_lock.py")
_MODULE_NAME = "update_executor_library_update_lock"


def load_lock_module():
    """The module file, imported once per process (its main() only runs as a script)."""
    module = sys.modules.get(_MODULE_NAME)
    if module is None:
        spec = importlib.util.spec_from_file_location(_MODULE_NAME, _MODULE_PATH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[_MODULE_NAME] = module
    return module


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    # Check mode does what a real run does (a dry run takes the lock too); the tasks say check_mode: false.
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        lock = load_lock_module()
        _validation, params = self.validate_argument_spec(
            argument_spec=lock.ARGUMENT_SPEC, required_if=lock.REQUIRED_IF
        )
        warnings = []
        # This process is a fork of ansible-playbook: the lock records the outermost one above it.
        outcome = lock.run_task(params, os.getpid(), warnings.append, sudo_user=os.environ.get("SUDO_USER"))
        result.update(outcome)
        if warnings:
            result["warnings"] = result.get("warnings", []) + warnings
        return result
