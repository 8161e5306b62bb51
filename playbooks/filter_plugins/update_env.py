# -*- coding: utf-8 -*-
"""`update_compose_env_prefix`: the `env -i NAME=value ...` prefix that gives a shell command
(the dry run of update.yml, run by a pipe lookup) the same environment as the playbooks' own
docker commands (playbooks/module_utils/update_executor_env.py): never ansible's own."""

from __future__ import annotations

import importlib.util
import os
import shlex
import sys

_NAME = "ansible.module_utils.update_executor_env"
_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "module_utils", "update_executor_env.py")


def _env_module():
    module = sys.modules.get(_NAME)
    if module is None:
        spec = importlib.util.spec_from_file_location(_NAME, _PATH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[_NAME] = module
    return module


def compose_env_prefix(_value=None):
    """`env -i 'PATH=…' 'HOME=…' … ` for the current process's environment."""
    environment = _env_module().compose_environment(os.environ)
    return " ".join(["env", "-i"] + [shlex.quote("%s=%s" % item) for item in sorted(environment.items())]) + " "


class FilterModule:
    def filters(self):
        return {"update_compose_env_prefix": compose_env_prefix}
