"""The `update-executor` command (and `python -m worker`): the global options, then each
command to the side that owns it.

worker/api/cli.py owns the commands that only speak to Redis (enqueue, revert, status, cancel,
check, history); worker/host/cli.py owns the host's (worker, rollback, unlock) and imports the
worker's dependencies (Ansible) only to run one of them, so `--help` and the API side's
commands also work where only the base package or `[api]` is installed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .api import cli as api_cli

# The unit docs/operations.md installs: its LoadCredential= lines say where the secrets are.
DEFAULT_UNIT = Path("/etc/systemd/system/update-executor.service")
# What each side sets as `run` on its commands' parsers: the command's exit status.
Run = Callable[[argparse.Namespace], int]


def package_version() -> str:
    try:
        return version("update-executor")
    except PackageNotFoundError:  # a checkout that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    """The global options; each side adds its commands, with the function that runs them."""
    from .host import cli as host_cli  # noqa: PLC0415 (`import worker.command` loads no host code)

    parser = argparse.ArgumentParser(
        prog="update-executor",
        description="Update a Docker Compose deployment through an ARQ queue and Ansible.",
        epilog=api_cli.EXIT_STATUSES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--version", action="version", version=f"update-executor {package_version()}"
    )
    parser.add_argument(
        "--env-file",
        type=Path,
        help="read the settings from the worker's environment file (systemd's EnvironmentFile "
        "format, e.g. /etc/update-executor/update-executor.env; never executed); its values "
        "override the shell's, and the secrets come from the unit's LoadCredential= files",
    )
    parser.add_argument(
        "--unit",
        type=Path,
        default=DEFAULT_UNIT,
        help=f"with --env-file: the unit whose LoadCredential= lines name the secrets' files "
        f"(default {DEFAULT_UNIT}, when it exists)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    host_cli.add_commands(commands)
    api_cli.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    run: Run = args.run
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
