# -*- coding: utf-8 -*-
"""Filters for the database's part of an update and of its rollback (issue 23): the revision a
revision command printed, the downgrade's argv and the commands an operator runs when the
database could not be put back. Plain functions, table-tested in tests/unit."""

from __future__ import annotations

import re
import shlex

# The first token of the revision command's output (alembic current: "1a7c3e5b9d01 (head)").
REVISION_RE = re.compile(r"[A-Za-z0-9_.:+-]{1,64}")
# What an empty output means: no revision applied yet (Alembic's name for it).
NO_REVISION = "base"
MODES = ("downgrade", "downgrade-then-restore", "off")


def db_revision(result):
    """{ok, revision, error} from the registered result of the revision command. An empty
    output is NO_REVISION; a first token outside REVISION_RE is refused (never used)."""
    result = result or {}
    if result.get("skipped"):
        return {"ok": False, "revision": None, "error": "not read"}
    rc = result.get("rc")
    if rc != 0:
        output = "\n".join(part for part in (result.get("stderr"), result.get("stdout")) if part)
        tail = " / ".join(str(output or result.get("msg") or "").strip().splitlines()[-3:])[-400:]
        return {"ok": False, "revision": None, "error": "exit status %s: %s" % (rc, tail or "no output")}
    words = str(result.get("stdout") or "").split()
    if not words:
        return {"ok": True, "revision": NO_REVISION, "error": None}
    if not REVISION_RE.fullmatch(words[0]):
        return {"ok": False, "revision": None, "invalid": True,
                "error": "its output does not start with a revision (%s): %r"
                         % (REVISION_RE.pattern, words[0][:80])}
    return {"ok": True, "revision": words[0], "error": None}


def db_mode(configured, probe, revision_command):
    """The effective mode: the configured one ("" = downgrade when the revision could be read,
    else off). Raises nothing: the role refuses an explicit mode whose probe failed."""
    if configured == "off" or not revision_command:
        return "off"
    if configured in MODES:
        return configured
    return "downgrade" if (probe or {}).get("ok") else "off"


def db_argv(command, revision):
    """The downgrade's argv: `command` split with shell rules, `revision` appended as one
    argument (validated again: it comes from a file or a container's output)."""
    if not REVISION_RE.fullmatch(str(revision or "")):
        raise ValueError("not a revision: %r" % (revision,))
    return shlex.split(command) + [str(revision)]


def db_manual(database, project_dir, compose_files, project, docker_host="", backup_path=None):
    """The commands an operator runs when the database could not be put back."""
    cli = "docker compose --project-directory %s %s --project-name %s" % (
        shlex.quote(project_dir), " ".join("--file " + shlex.quote(name) for name in compose_files or []),
        shlex.quote(project))
    commands = ["export DOCKER_HOST=" + shlex.quote(docker_host)] if docker_host else []
    revision = database.get("revision_before")
    if revision:
        commands.append("%s exec -T %s %s" % (cli, shlex.quote(database.get("service") or "api"), " ".join(
            shlex.quote(word) for word in db_argv(database.get("downgrade_command") or "alembic downgrade", revision))))
    if backup_path and database.get("restore_command"):
        commands.append("or, to restore the backup taken before the update: %s stop %s ; %s exec -T %s %s < %s" % (
            cli, " ".join(shlex.quote(t) for t in database.get("targets") or []), cli,
            shlex.quote(database.get("backup_service") or "db"), database["restore_command"], shlex.quote(backup_path)))
    commands.append("then put the previous images back: update-executor rollback (by hand: ansible-playbook "
                    "playbooks/rollback.yml with the same inventory)")
    return commands


class FilterModule:
    def filters(self):
        return {
            "update_db_revision": db_revision,
            "update_db_mode": db_mode,
            "update_db_argv": db_argv,
            "update_db_manual": db_manual,
        }
