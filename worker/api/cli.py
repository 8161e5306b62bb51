"""`update-executor enqueue|status|check|history`: the API side's commands (they speak to
Redis only). The command line itself, with `update-executor worker`, is worker/command.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from ..shared.client import UpdateClient
from ..shared.history import MAX_LIMIT, read_history_file
from ..shared.logs import setup_logging
from ..shared.request import InvalidRequest
from ..shared.settings import ClientSettings, ConfigError
from .follow import follow
from .tables import check_exit_status, format_check_table, format_history_table

logger = logging.getLogger("update_executor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="update-executor",
        description="Update a Docker Compose deployment through an ARQ queue and Ansible.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    # Parsed here so that `update-executor --help` lists it; run by worker/host/cli.py.
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


async def enqueue(settings: ClientSettings, args: argparse.Namespace) -> int:
    services = [s.strip() for s in args.services.split(",") if s.strip()] if args.services else None
    request: dict[str, Any] = {
        "run_migrations": not args.no_migrations,
        "services": services,
        "dry_run": args.dry_run,
        "requested_by": args.requested_by,
    }
    async with await UpdateClient.connect(settings) as client:
        enqueued = await client.submit_update(**request)
        job_id = enqueued.job_id
        if not args.wait:
            print_json({"job_id": job_id, "state": "queued"})
            return 0
        joined = "joined the update in flight" if enqueued.existing else "queued update"
        print(f"{joined} job {job_id}; waiting for the worker", file=sys.stderr)

        async def rejoin(lost: str) -> str:
            return await client.rejoin(lost, **request)

        summary = await follow(
            client,
            job_id,
            sys.stderr,
            timeout=args.timeout,
            rejoin=rejoin if enqueued.existing else None,
        )
        print_json(summary)
        return 0 if summary.get("status") == "successful" else 1


async def status(settings: ClientSettings, job_id: str) -> int:
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


async def check_updates(settings: ClientSettings, args: argparse.Namespace) -> int:
    """`update-executor check`: the worker compares the running images with the registry."""
    services = [s.strip() for s in args.services.split(",") if s.strip()] if args.services else None
    async with await UpdateClient.connect(settings) as client:
        result = await client.check_for_updates(services=services, timeout=args.timeout)
    if args.json:
        print_json(result)
    else:
        print(format_check_table(result))
    return check_exit_status(result)


async def show_history(settings: ClientSettings, args: argparse.Namespace) -> int:
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


def run_client(args: argparse.Namespace) -> int:
    """Every command but `worker`; the exit status."""
    try:
        settings = ClientSettings.from_env()
    except ConfigError as exc:
        print(f"update-executor: {exc}", file=sys.stderr)
        return 2
    setup_logging(None, args.verbose)
    try:
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
