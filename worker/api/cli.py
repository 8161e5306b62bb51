"""`update-executor`: run the worker, enqueue an update, read a job's state."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import logging.handlers
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..host.check import check_exit_status, format_check_table
from ..host.history import MAX_LIMIT, format_history_table, read_history_file
from ..host.main import StartupError, create_worker
from ..host.settings import ConfigError, Settings
from ..shared.client import UpdateClient
from ..shared.request import InvalidRequest
from .follow import follow

logger = logging.getLogger("update_executor")

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# LOG_FILE is rotated at this size, keeping this many old files (LOG_FILE.1, ...).
LOG_FILE_MAX_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5


def setup_logging(log_file: Path | None, verbose: bool = False) -> None:
    """Log to stderr (journald keeps it under systemd) and, when configured, to LOG_FILE."""
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if log_file is not None:
        try:
            # Rotated by size: a flood of refused jobs must not fill the disk.
            handlers.append(
                logging.handlers.RotatingFileHandler(
                    log_file, maxBytes=LOG_FILE_MAX_BYTES, backupCount=LOG_FILE_BACKUPS
                )
            )
        except OSError as exc:
            print(f"update-executor: cannot write LOG_FILE {log_file}: {exc}", file=sys.stderr)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, handlers=handlers
    )
    # arq logs every job's arguments and result at INFO; the summary is logged by us.
    logging.getLogger("arq.worker").setLevel(logging.WARNING if not verbose else logging.INFO)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="update-executor",
        description="Update a Docker Compose deployment through an ARQ queue and Ansible.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("worker", help="run the worker (what systemd starts)")
    run.add_argument("--burst", action="store_true", help="stop when the queue is empty")
    run.add_argument(
        "--insecure-unsigned-jobs",
        action="store_true",
        help="run without UPDATE_JOB_SECRET, accepting unsigned jobs from anyone who can write "
        "to Redis (a warning is logged at every start); never in production",
    )

    enqueue = commands.add_parser("enqueue", help="queue an update")
    enqueue.add_argument("--no-migrations", action="store_true", help="skip the migration step")
    enqueue.add_argument("--services", help="comma list of services (default: all allowed)")
    enqueue.add_argument("--dry-run", action="store_true", help="check mode: change nothing")
    enqueue.add_argument("--requested-by", help="who asked, for the summary and the log")
    enqueue.add_argument(
        "--wait",
        action="store_true",
        help="show the progress (a bar on a terminal, plain lines otherwise) on stderr, "
        "then print the summary",
    )
    enqueue.add_argument(
        "--timeout", type=float, default=None, help="with --wait: give up after N seconds"
    )

    status = commands.add_parser("status", help="print a job's state and summary")
    status.add_argument("job_id")

    check = commands.add_parser(
        "check",
        help="check the registry for newer images (no pull); exit 0 up to date, "
        "10 update available, 1 error",
    )
    check.add_argument("--services", help="comma list of services (default: all allowed)")
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.add_argument(
        "--timeout", type=float, default=60, help="give up waiting after N seconds (default 60)"
    )

    history = commands.add_parser(
        "history", help="the last updates, checks and refused jobs (oldest first)"
    )
    history.add_argument("--limit", type=int, default=20, help="how many records (1-500)")
    history.add_argument("--json", action="store_true", help="print the records as JSON")
    history.add_argument(
        "--file",
        type=Path,
        help="read this HISTORY_FILE (the host's copy) instead of Redis",
    )
    return parser


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


async def enqueue(settings: Settings, args: argparse.Namespace) -> int:
    services = [s.strip() for s in args.services.split(",") if s.strip()] if args.services else None
    async with await UpdateClient.connect(settings) as client:
        job_id = await client.enqueue_update(
            run_migrations=not args.no_migrations,
            services=services,
            dry_run=args.dry_run,
            requested_by=args.requested_by,
        )
        if not args.wait:
            print_json({"job_id": job_id, "state": "queued"})
            return 0
        print(f"queued update job {job_id}; waiting for the worker", file=sys.stderr)
        summary = await follow(client, job_id, sys.stderr, timeout=args.timeout)
        print_json(summary)
        return 0 if summary.get("status") == "successful" else 1


async def status(settings: Settings, job_id: str) -> int:
    async with await UpdateClient.connect(settings) as client:
        answer = await client.status(job_id)
    print_json(answer)
    if answer["state"] == "running":
        done, planned = answer["progress"]["done"], answer["progress"]["planned"]
        step = answer["current_step"] or "between steps"
        print(f"running: {step} ({done}/{planned} steps done)", file=sys.stderr)
    if answer["state"] == "not_found":
        return 2
    summary = answer.get("summary")
    return 1 if summary and summary.get("status") != "successful" else 0


async def check_updates(settings: Settings, args: argparse.Namespace) -> int:
    """`update-executor check`: the worker compares the running images with the registry."""
    services = [s.strip() for s in args.services.split(",") if s.strip()] if args.services else None
    async with await UpdateClient.connect(settings) as client:
        result = await client.check_for_updates(services=services, timeout=args.timeout)
    if args.json:
        print_json(result)
    else:
        print(format_check_table(result))
    return check_exit_status(result)


async def show_history(settings: Settings, args: argparse.Namespace) -> int:
    """`update-executor history`: from Redis (verified records only), or from --file."""
    limit = max(1, min(args.limit, MAX_LIMIT))
    if args.file is not None:
        records = read_history_file(args.file, limit)
    else:
        async with await UpdateClient.connect(settings) as client:
            records = await client.history(limit)
    if args.json:
        print_json(records)
    else:
        print(format_history_table(records))
    return 0


def run_worker(settings: Settings, burst: bool) -> int:
    worker = create_worker(settings, burst=burst)
    try:
        worker.run()
    except StartupError as exc:
        print(f"update-executor: cannot start: {exc}", file=sys.stderr)
        return 3
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"update-executor: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_file if args.command == "worker" else None, args.verbose)
    if args.command == "worker" and args.insecure_unsigned_jobs:
        settings = replace(settings, insecure_unsigned_jobs=True)
    try:
        if args.command == "worker":
            return run_worker(settings, args.burst)
        if args.command == "enqueue":
            return asyncio.run(enqueue(settings, args))
        if args.command == "check":
            return asyncio.run(check_updates(settings, args))
        if args.command == "history":
            return asyncio.run(show_history(settings, args))
        return asyncio.run(status(settings, args.job_id))
    except InvalidRequest as exc:
        print(f"update-executor: invalid request: {exc}", file=sys.stderr)
        return 2
    except (TimeoutError, LookupError) as exc:
        print(f"update-executor: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # Redis unreachable and the like
        print(f"update-executor: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
