# -*- coding: utf-8 -*-
"""registry_login on the controller: the login of playbooks/library/registry_login.py run inside
ansible-playbook, in one task.

The login runs the docker CLI of the controller (the play only targets localhost with the local
connection), so a module process would only add an interpreter start-up; one task instead of six
saves their per-task cost (30-50 ms each, see docs/performance.md). The module file stays the
source of the logic, the options and the documentation
(`ansible-doc -M playbooks/library registry_login`)."""

from __future__ import annotations

import importlib.util
import os
import sys

from ansible.plugins.action import ActionBase

_MODULE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "library", "registry_login.py")
_MODULE_NAME = "update_executor_library_registry_login"


def load_login_module():
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
    # A dry run logs in too (it checks the login); the task says check_mode: false.
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        login = load_login_module()
        _validation, params = self.validate_argument_spec(argument_spec=login.ARGUMENT_SPEC)
        result.update(login.run_task(params))
        return result
