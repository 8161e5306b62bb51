# -*- coding: utf-8 -*-
"""compose_snapshot on the controller: the snapshot of playbooks/library/compose_snapshot.py run
inside ansible-playbook, in one task.

The snapshot is read-only queries of the local Docker daemon (the play only targets localhost
with the local connection). One task instead of three, one of them a loop, saves their per-task
cost (30-50 ms each, see docs/performance.md). The module file stays the source of the
logic, the options and the documentation (`ansible-doc -M playbooks/library compose_snapshot`)."""

from __future__ import annotations

import importlib.util
import os
import sys

from ansible.plugins.action import ActionBase

_MODULE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "library", "compose_snapshot.py")
_MODULE_NAME = "update_executor_library_compose_snapshot"


def load_snapshot_module():
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
    # Read-only, except the rollback point, which is not written in check mode.
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        snapshot = load_snapshot_module()
        _validation, params = self.validate_argument_spec(argument_spec=snapshot.ARGUMENT_SPEC)
        result.update(snapshot.run_task(params, bool(self._task.check_mode)))
        return result
