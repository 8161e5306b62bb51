"""The host's commands: `update-executor worker` (the worker's settings, logging and start: what
systemd runs), `update-executor rollback` (finish a cut-off or failed rollback by hand) and
`update-executor unlock` (remove a stale update lock, showing its holder)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from ..shared.envfile import EnvFileError, command_environment
from ..shared.logs import setup_logging
from .main import StartupError, create_worker
from .rollback import roll_back_cut_off_update, rollback_points
from .settings import ConfigError, Settings
from .unlock import LockState, Verdict, unlock_all

# The job id of a rollback run by hand (ansible-runner's ident, the lock's holder).
MANUAL_ROLLBACK_ID = "cli-rollback"


def run_host_command(args: argparse.Namespace) -> int:
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
