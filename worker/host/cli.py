"""`update-executor worker`: the worker's settings, logging and start (what systemd runs)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from ..shared.logs import setup_logging
from .main import StartupError, create_worker
from .settings import ConfigError, Settings


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
