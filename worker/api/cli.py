"""`update-executor enqueue|revert|status|cancel|check|history`: the API side's commands (they
speak to Redis only). The global options and the dispatch are worker/command.py; the host's
commands (`worker`, `rollback`, `unlock`) are worker/host/cli.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..shared.client import UpdateClient
from ..shared.envfile import EnvFileError, command_environment
from ..shared.history import MAX_LIMIT, read_history_file
from ..shared.logs import setup_logging
from ..shared.request import InvalidRequest, UpdateRequest
from ..shared.settings import ClientSettings, ConfigError
from .follow import follow
from .tables import (
    EXIT_UPDATE_AVAILABLE,
    check_exit_status,
    format_check_table,
    format_history_table,
    format_summary,
    host_status_fields,
)

logger = logging.getLogger("update_executor")

# Exit statuses of the client commands (listed in --help).
EXIT_OK = 0
EXIT_FAILED = 1  # the update failed, or Redis could not be reached, or a wait gave up
EXIT_USAGE = 2  # bad arguments, an invalid request or configuration (argparse's own too)
EXIT_NOT_FOUND = 3  # no such job (unknown, or its result expired), or no update yet
EXIT_STATUSES = f"""exit status:
  {EXIT_OK}   success (check: up to date)
  {EXIT_FAILED}   the update failed, Redis could not be reached, or a wait gave up
  {EXIT_USAGE}   usage: bad arguments, an invalid request, or an invalid configuration
  {EXIT_NOT_FOUND}   not found: no such job (or its result expired), or no update yet
  {EXIT_UPDATE_AVAILABLE}  check: an update is available
"""
JSON_HELP = "print JSON (the default when stdout is not a terminal)"


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The API side's commands, each run by run_client."""
    enqueue = commands.add_parser("enqueue", help="queue an update")
    enqueue.add_argument("--no-migrations", action="store_true", help="skip the migration step")
    enqueue.add_argument("--services", help="comma list of services (default: all allowed)")
    enqueue.add_argument(
        "--hosts",
        help="comma list of hosts or groups of the worker's inventory (default: its "
        "UPDATE_HOSTS_GROUP)",
    )
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
    enqueue.add_argument("--json", action="store_true", help=JSON_HELP)

    revert_help = (
        "put back the images that ran before the last update that succeeded, through the "
        "queue and the worker (no pull: a `:latest` reference is pointed back at the previous "
        "image); once per such update: a second revert is refused until the next update; exit "
        "0 when the revert succeeded"
    )
    revert = commands.add_parser("revert", help=revert_help, description=revert_help)
    revert.add_argument("--requested-by", help="who asked, for the summary and the log")
    revert.add_argument(
        "--hosts",
        help="comma list of hosts or groups of the worker's inventory (default: its "
        "UPDATE_HOSTS_GROUP)",
    )
    revert.add_argument(
        "--wait",
        action="store_true",
        help="show the progress on stderr, then print the summary",
    )
    revert.add_argument(
        "--timeout", type=float, default=None, help="with --wait: give up after N seconds"
    )
    revert.add_argument("--json", action="store_true", help=JSON_HELP)

    status = commands.add_parser(
        "status", help="print a job's state and summary (default: the latest update)"
    )
    status.add_argument("job_id", nargs="?", help="the job (default: the latest update)")
    status.add_argument("--json", action="store_true", help=JSON_HELP)

    cancel = commands.add_parser(
        "cancel",
        help="cancel an update (default: the latest, if queued or running): the worker stops "
        "it and puts back what it had changed; exit 0 once it ended canceled",
    )
    cancel.add_argument("job_id", nargs="?", help="the job (default: the latest update)")
    cancel.add_argument(
        "--timeout",
        type=float,
        default=300,
        help="wait this many seconds for the job to end (default 300: a rollback takes time)",
    )

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
    for command in (enqueue, revert, status, cancel, check, history):
        command.set_defaults(run=run_client)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=False))


def wants_json(args: argparse.Namespace) -> bool:
    """JSON with --json, or when stdout is not a terminal (a script reads it); text otherwise."""
    return bool(getattr(args, "json", False)) or not sys.stdout.isatty()


async def joined_a_dry_run(client: UpdateClient, job_id: str) -> bool:
    """Whether the update in flight that a request joined is itself a dry run."""
    request = await client.queued_request(job_id)
    return request is not None and request.get("dry_run") is True


async def joined_a_revert(client: UpdateClient, job_id: str) -> bool:
    """Whether the job in flight that a request joined is itself a revert."""
    request = await client.queued_request(job_id)
    return request is not None and request.get("revert") is True


async def enqueue(settings: ClientSettings, args: argparse.Namespace) -> int:
    """`update-executor enqueue`, and `revert` (args.command): queue, then follow with --wait."""
    reverting = args.command == "revert"
    services = (
        [s.strip() for s in args.services.split(",") if s.strip()]
        if not reverting and args.services
        else None
    )
    hosts = getattr(args, "hosts", None)
    # InvalidRequest (a bad service or host name, a too long --requested-by): exit 2, nothing
    # queued. Whether the hosts are in the inventory only the worker can tell.
    request = UpdateRequest.parse(
        {
            "run_migrations": not reverting and not args.no_migrations,
            "services": services,
            "dry_run": not reverting and args.dry_run,
            "requested_by": args.requested_by,
            "revert": reverting,
            **({"hosts": [h.strip() for h in hosts.split(",")]} if hosts is not None else {}),
        }
    )
    async with await UpdateClient.connect(settings) as client:
        enqueued = await client.submit_update(request)
        job_id = enqueued.job_id
        if reverting and enqueued.existing and not await joined_a_revert(client, job_id):
            # A revert is not the update in flight: following that one instead would mislead.
            print(
                f"update-executor: an update is already queued or running (job {job_id}): the "
                "revert was not queued; wait for it to end (or `update-executor cancel` it), "
                "then revert",
                file=sys.stderr,
            )
            return EXIT_FAILED
        if request.dry_run and enqueued.existing and not await joined_a_dry_run(client, job_id):
            # The dry run was not queued: following the real update instead would be a surprise.
            print(
                f"update-executor: an update is already queued or running (job {job_id}): the "
                "dry run was not queued; try again when it has ended",
                file=sys.stderr,
            )
            return EXIT_FAILED
        what = "revert" if reverting else "update"
        if not args.wait:
            if wants_json(args):
                print_json({"job_id": job_id, "state": "queued", "joined": enqueued.existing})
            else:
                joined = f"joined the {what} in flight" if enqueued.existing else f"queued {what}"
                print(f"{joined}: job {job_id}")
            return EXIT_OK
        joined = f"joined the {what} in flight" if enqueued.existing else f"queued {what}"
        print(f"{joined} job {job_id}; waiting for the worker", file=sys.stderr)

        async def rejoin(lost: str) -> str:
            return await client.rejoin(lost, request)

        summary = await follow(
            client,
            job_id,
            sys.stderr,
            timeout=args.timeout,
            rejoin=rejoin if enqueued.existing else None,
        )
        if wants_json(args):
            print_json(summary)
        else:
            print(format_summary(summary))
        return EXIT_OK if summary.get("status") == "successful" else EXIT_FAILED


async def status(settings: ClientSettings, job_id: str | None, as_json: bool) -> int:
    async with await UpdateClient.connect(settings) as client:
        if job_id is not None:
            answer = await client.status(job_id)
        else:
            latest = await client.latest_update()
            if latest is None:
                print("update-executor: no update yet (or the last one expired)", file=sys.stderr)
                return EXIT_NOT_FOUND
            answer = latest
    if as_json:
        print_json({**answer, **host_status_fields(answer)})
    elif answer.get("summary"):
        print(format_summary(answer["summary"]))
    else:
        print(f"update {answer.get('job_id', job_id)}: {answer['state']}")
    if answer["state"] == "running":
        done, planned = answer["progress"]["done"], answer["progress"]["planned"]
        step = answer["current_step"] or "between steps"
        print(f"running: {step} ({done}/{planned} steps done)", file=sys.stderr)
    if answer["state"] == "not_found":
        return EXIT_NOT_FOUND
    summary = answer.get("summary")
    return EXIT_FAILED if summary and summary.get("status") != "successful" else EXIT_OK


async def cancel(settings: ClientSettings, job_id: str | None, timeout: float) -> int:
    """`update-executor cancel`: a signed cancel request, then wait for the job's end."""
    async with await UpdateClient.connect(settings) as client:
        answer = await client.status(job_id) if job_id else await client.latest_update()
        if answer is None or answer["state"] == "not_found":
            what = f"no update job {job_id}" if job_id else "no update yet"
            print(f"update-executor: {what} (or its result expired)", file=sys.stderr)
            return EXIT_NOT_FOUND
        job_id = str(answer["job_id"])
        if answer["state"] == "finished":
            status = (answer.get("summary") or {}).get("status", "?")
            print(f"update job {job_id} already ended ({status}): nothing to cancel")
            return EXIT_FAILED
        print(f"canceling update job {job_id} ({answer['state']}); waiting for it to end")
        canceled = await client.abort(job_id, timeout=timeout)
        final = await client.status(job_id)
    summary = final.get("summary") or {}
    if canceled:
        back = (
            "what it had changed was put back"
            if summary.get("rolled_back")
            else "nothing had changed"
        )
        print(f"update job {job_id} canceled: {back}")
        return EXIT_OK
    if final["state"] == "finished":
        print(
            f"update job {job_id} ended {summary.get('status', '?')} before the cancel took effect"
        )
    else:
        print(f"update job {job_id} did not end within {timeout:g} s; the cancel request stays")
    return EXIT_FAILED


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
    """Every command of this side; the exit status."""
    try:
        settings = ClientSettings.from_env(
            command_environment(os.environ, args.env_file, args.unit)
        )
    except (ConfigError, EnvFileError) as exc:
        print(f"update-executor: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"update-executor: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    setup_logging(None, args.verbose)
    try:
        if args.command in ("enqueue", "revert"):
            return asyncio.run(enqueue(settings, args))
        if args.command == "check":
            return asyncio.run(check_updates(settings, args))
        if args.command == "history":
            return asyncio.run(show_history(settings, args))
        if args.command == "cancel":
            return asyncio.run(cancel(settings, args.job_id, args.timeout))
        return asyncio.run(status(settings, args.job_id, wants_json(args)))
    except InvalidRequest as exc:
        print(f"update-executor: invalid request: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except LookupError as exc:
        print(f"update-executor: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except TimeoutError as exc:
        print(f"update-executor: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # Redis unreachable and the like
        print(f"update-executor: {exc}", file=sys.stderr)
        return EXIT_FAILED
