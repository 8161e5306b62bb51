"""`python -m bench.worker_launch --poll-delay S`: the product's worker with ARQ settings
overridden, to measure a lever (e.g. `poll_delay`) without changing worker/. Everything else
is what `update-executor worker` does: same settings, logging, checks and job function."""

from __future__ import annotations

import argparse
import sys

from worker.host.main import StartupError, create_worker
from worker.host.settings import Settings
from worker.shared.logs import setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker_launch")
    parser.add_argument("--poll-delay", type=float, required=True, help="ARQ poll_delay (s)")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    setup_logging(settings.log_file)
    worker = create_worker(settings, poll_delay=args.poll_delay)
    try:
        worker.run()
    except StartupError as exc:
        print(f"bench.worker_launch: cannot start: {exc}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
