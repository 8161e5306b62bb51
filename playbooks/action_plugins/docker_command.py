# -*- coding: utf-8 -*-
"""docker_command on the controller: the command of playbooks/library/docker_command.py run
from inside ansible-playbook instead of a module process of its own.

The playbooks only target localhost with the local connection, so the controller is where the
command has to run anyway; running it from here saves the module's interpreter start-up and
imports (0.25-0.6 s a task on the bench machine, see docs/performance.md). The module file
stays the source of the logic, the options and the documentation."""

from __future__ import annotations

import importlib.util
import os
import sys

from ansible.plugins.action import ActionBase

_MODULE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "library", "docker_command.py")
_MODULE_NAME = "update_executor_library_docker_command"


def load_command_module():
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
    # Check mode: compose's --dry-run of the command, or skipped (see dry_run_in_check_mode).
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        command = load_command_module()
        _validation, params = self.validate_argument_spec(argument_spec=command.ARGUMENT_SPEC)
        result.update(command.run_task(params, bool(self._task.check_mode)))
        return result
