"""The host's commands: `update-executor worker` (the worker's settings, logging and start: what
systemd runs) and `update-executor rollback` (finish a cut-off or failed rollback by hand)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import replace

from ..shared.envfile import EnvFileError, command_environment
from ..shared.logs import setup_logging
from .main import StartupError, create_worker
from .rollback import roll_back_cut_off_update, rollback_points
from .settings import ConfigError, Settings

# The job id of a rollback run by hand (ansible-runner's ident, the lock's holder).
MANUAL_ROLLBACK_ID = "cli-rollback"


def run_host_command(args: argparse.Namespace) -> int:
    if args.command == "rollback":
        return run_rollback(args)
    return run_worker(args)


def run_rollback(args: argparse.Namespace) -> int:
    """`update-executor rollback`: what the worker does at start for a cut-off update, on demand
    (after a failed rollback, once its cause is fixed). The lock keeps it from running over an
    update in progress."""
    try:
        settings = Settings.from_env(command_environment(os.environ, args.env_file, args.unit))
    except (ConfigError, EnvFileError) as exc:
        print(f"update-executor: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"update-executor: {exc.filename}: {exc.strerror}", file=sys.stderr)
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
        settings = replace(settings, insecure_unsigned_jobs=True)
    worker = create_worker(settings, burst=args.burst)
    try:
        worker.run()
    except StartupError as exc:
        print(f"update-executor: cannot start: {exc}", file=sys.stderr)
        return 3
    return 0
