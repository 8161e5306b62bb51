"""The `update-executor` command (and `python -m worker`).

`update-executor worker`, `rollback` and `unlock` run the host side (worker/host/cli.py),
imported only for them, so that the API side's commands (worker/api/cli.py: enqueue, status,
check, history) also work where only the base package or `[api]` is installed, without Ansible.
"""

from __future__ import annotations

import sys

from .api.cli import build_parser, run_client

# Commands that need the worker's side (Ansible): the rest speak to Redis only.
HOST_COMMANDS = ("worker", "rollback", "unlock")
WORKER_MISSING = (
    "update-executor: the worker is not installed here ({error}); on the host, "
    "pip install 'update-executor[worker]'"
)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command not in HOST_COMMANDS:
        return run_client(args)
    if args.command == "worker" and args.env_file is not None:
        # The worker reads its environment as systemd hands it over (EnvironmentFile=).
        print(
            "update-executor: --env-file is for the client commands, not `worker`", file=sys.stderr
        )
        return 2
    try:
        from .host.cli import run_host_command  # noqa: PLC0415 (the host side, only here)
    except ImportError as exc:
        print(WORKER_MISSING.format(error=exc), file=sys.stderr)
        return 2
    return run_host_command(args)


if __name__ == "__main__":
    sys.exit(main())
