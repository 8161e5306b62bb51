"""The host's commands, parsed and run here: `update-executor worker` (the worker's settings,
logging and start: what systemd runs; the worker itself is assembled in worker/host/main.py),
`update-executor rollback` (finish a cut-off or failed rollback by hand) and
`update-executor unlock` (remove a stale update lock, showing its holder).

worker/command.py adds these commands to the command line; the worker's dependencies
(Ansible, ansible-runner, prometheus-client...) are imported only when one of them runs, so
that `update-executor --help` and the API side's commands work without them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from ..shared.envfile import EnvFileError, command_environment
from ..shared.logs import setup_logging
from .settings import ConfigError, Settings
from .unlock import LockState, Verdict, unlock_all

# The job id of a rollback run by hand (ansible-runner's ident, the lock's holder).
MANUAL_ROLLBACK_ID = "cli-rollback"
WORKER_MISSING = (
    "update-executor: the worker is not installed here ({error}); on the host, "
    "pip install 'update-executor[worker]'"
)
UNLOCK_HELP = (
    "(on the host) show who holds the update lock (job id, requested_by, host, pid, "
    "since) and remove it only when it is stale: its holder's process is gone, or it "
    "cannot be checked and is older than JOB_TIMEOUT; exit 0 when no lock is left, 1 when "
    "a live lock was refused or a cut-off update must be rolled back first (`rollback`); "
    "never removes a rollback point"
)


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The host's commands, each run by run_host_command."""
    worker = commands.add_parser("worker", help="run the worker (what systemd starts)")
    worker.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    worker.add_argument(
        "--insecure-unsigned-jobs",
        action="store_true",
        help="run without UPDATE_JOB_SECRET, accepting unsigned jobs from anyone who can write "
        "to Redis (a warning is logged at every start); never in production",
    )
    # With the worker's settings, as the unit has them (--env-file, --unit).
    rollback = commands.add_parser(
        "rollback",
        help="(on the host) finish the rollback of an update that was cut off or whose "
        "rollback failed, from its rollback point; exit 0 when the previous version is back "
        "(or there was nothing to roll back)",
    )
    unlock = commands.add_parser("unlock", help=UNLOCK_HELP, description=UNLOCK_HELP)
    unlock.add_argument(
        "--json", action="store_true", help="print JSON (the default when stdout is not a terminal)"
    )
    for command in (worker, rollback, unlock):
        command.set_defaults(run=run_host_command)


def worker_installed() -> bool:
    """Whether worker/host/main.py and rollback.py import: they need the worker's dependencies
    (the `[worker]` extra), imported by the functions below only when they run."""
    try:
        from . import main, rollback  # noqa: F401, PLC0415 (Ansible: only for a host command)
    except ImportError as exc:
        print(WORKER_MISSING.format(error=exc), file=sys.stderr)
        return False
    return True


def run_host_command(args: argparse.Namespace) -> int:
    if args.command == "worker" and args.env_file is not None:
        # The worker reads its environment as systemd hands it over (EnvironmentFile=).
        print(
            "update-executor: --env-file is for the client commands, not `worker`", file=sys.stderr
        )
        return 2
    if not worker_installed():
        return 2
    if args.command == "rollback":
        return run_rollback(args)
    if args.command == "unlock":
        return run_unlock(args)
    return run_worker(args)


def host_settings(args: argparse.Namespace) -> Settings | None:
    """The worker's settings as the unit has them (--env-file, --unit), for a command run by
    hand on the host; None after printing why they are unusable."""
    try:
        return Settings.from_env(command_environment(os.environ, args.env_file, args.unit))
    except (ConfigError, EnvFileError) as exc:
        print(f"update-executor: {exc}", file=sys.stderr)
    except OSError as exc:
        print(f"update-executor: {exc.filename}: {exc.strerror}", file=sys.stderr)
    return None


def run_rollback(args: argparse.Namespace) -> int:
    """`update-executor rollback`: what the worker does at start for a cut-off update, on demand
    (after a failed rollback, once its cause is fixed). The lock keeps it from running over an
    update in progress."""
    from .rollback import roll_back_cut_off_update, rollback_points  # noqa: PLC0415 (worker_installed)

    settings = host_settings(args)
    if settings is None:
        return 2
    setup_logging(None, args.verbose)
    points = rollback_points(settings)
    if not points:
        print(f"nothing to roll back: no rollback point in {settings.lock_dir}")
        return 0
    print(f"rolling back from {', '.join(str(p) for p in points)}")
    result = asyncio.run(roll_back_cut_off_update(settings, MANUAL_ROLLBACK_ID))
    print(result.message())
    return 0 if result.ok else 1


def run_unlock(args: argparse.Namespace) -> int:
    """`update-executor unlock`: show each update lock's holder and remove the stale ones; exit 1
    when a lock stays (a live holder) or a rollback point is on disk (roll back instead)."""
    from .rollback import rollback_points  # noqa: PLC0415 (worker_installed)

    settings = host_settings(args)
    if settings is None:
        return 2
    setup_logging(None, args.verbose)
    try:
        states = unlock_all(settings)
    except OSError as exc:  # an unsafe lock directory, or one this user cannot read
        print(f"update-executor: lock directory {settings.lock_dir}: {exc}", file=sys.stderr)
        return 1
    beside = {s.rollback_point for s in states}
    points = [p for p in rollback_points(settings) if p not in beside]
    if args.json or not sys.stdout.isatty():
        print(
            json.dumps(
                {
                    "lock_dir": str(settings.lock_dir),
                    "locks": [s.as_dict() for s in states],
                    "rollback_points": [str(p) for p in points],
                },
                indent=2,
            )
        )
    else:
        print(unlock_text(settings, states, points))
    refused = [s for s in states if s.verdict in (Verdict.live, Verdict.cut_off)]
    for state in refused:
        print(f"update-executor: {refusal(state)}", file=sys.stderr)
    if points:
        print(
            f"update-executor: a cut-off update left {', '.join(map(str, points))}: roll it back "
            "with `update-executor rollback`; unlock never removes a rollback point",
            file=sys.stderr,
        )
    return 1 if refused or points else 0


def refusal(state: LockState) -> str:
    if state.verdict is Verdict.cut_off:
        return (
            f"the lock {state.path} was not removed: its update was cut off (rollback point "
            f"{state.rollback_point}); run `update-executor rollback`"
        )
    return (
        f"the lock {state.path} was not removed: its holder "
        f"{state.holder.get('id') or 'an unknown holder'} may still be running"
    )


def unlock_text(settings: Settings, states: list[LockState], points: list[Path]) -> str:
    if not states:
        head = f"no update lock in {settings.lock_dir}"
        if settings.compose_project_name:
            head += f" for project {settings.compose_project_name}"
        return head + ("" if points else ": nothing to unlock")
    return "\n\n".join(s.text() for s in states)


def run_worker(args: argparse.Namespace) -> int:
    """Read the worker's settings and run it until stopped; the exit status (2: a bad
    configuration, 3: a failed start-up check; the systemd unit does not restart on either)."""
    from .main import StartupError, create_worker  # noqa: PLC0415 (worker_installed)

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"update-executor: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_file, args.verbose)
    if args.insecure_unsigned_jobs:
        settings = settings.model_copy(update=dict(insecure_unsigned_jobs=True))
    worker = create_worker(settings, burst=args.burst)
    try:
        worker.run()
    except StartupError as exc:
        print(f"update-executor: cannot start: {exc}", file=sys.stderr)
        return 3
    return 0
