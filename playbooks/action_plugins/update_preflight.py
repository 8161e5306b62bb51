# -*- coding: utf-8 -*-
"""update_preflight on the controller: the Preflight checks of playbooks/library/update_preflight.py
run inside ansible-playbook, in one task.

The checks are read-only queries of the local Docker daemon and files on the controller (the
play only targets localhost with the local connection). One task instead of twelve saves their
per-task cost (30-50 ms each, see docs/performance.md). The module file stays the source of the
logic, the options and the documentation (`ansible-doc -M playbooks/library update_preflight`)."""

from __future__ import annotations

import importlib.util
import os
import sys

from ansible.plugins.action import ActionBase

_MODULE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "library", "update_preflight.py")
_MODULE_NAME = "update_executor_library_update_preflight"


def load_preflight_module():
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
    # Read-only: a dry run does the same checks.
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        preflight = load_preflight_module()
        _validation, params = self.validate_argument_spec(argument_spec=preflight.ARGUMENT_SPEC)
        result.update(preflight.run_task(params))
        return result
