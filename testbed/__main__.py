"""`python -m testbed up [--demo]` keeps a bed running for humans; `clean` removes stale beds.

`up` prints the bed's settings as shell `export` lines (eval them in another shell), then
waits until Ctrl-C or SIGTERM and stops everything. `--demo` also builds and pushes app and
frontend v1, writes the sample project under the base dir and deploys it.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from testbed.bed import TestBed, cleanup_stale
from testbed.containers import service_url
from testbed.images import build_app_image
from testbed.project import write_sample_project
from testbed.stack import Stack


def _exports(stack: Stack) -> list[str]:
    values = {
        "DOCKER_HOST": stack.docker_host,
        # Anonymous config: log in yourself, or use UE_DOCKER_CONFIG_LOGGED_IN.
        "DOCKER_CONFIG": str(stack.anonymous_docker_config),
        "UE_DOCKER_CONFIG_LOGGED_IN": str(stack.docker_config),
        "UE_BASE_DIR": str(stack.base_dir),
        "REGISTRY_URL": stack.registry,
        "REGISTRY_USERNAME": stack.registry_username,
        "UE_REGISTRY_PASSWORD": stack.registry_password,
        "REDIS_QUEUE_HOST": stack.redis_host,
        "REDIS_QUEUE_PORT": str(stack.redis_port),
    }
    return [f"export {key}={shlex.quote(value)}" for key, value in values.items()]


def _up(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before the bed starts: the bed's own handler stops it, then calls this one.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with TestBed(parent=Path(args.parent)) as stack:
        for line in _exports(stack):
            print(line)
        if args.demo:
            project = "demo"
            build_app_image(stack, "acme/app", "1")
            build_app_image(stack, "acme/frontend", "1")
            compose_file = write_sample_project(stack, stack.base_dir / "demo", project)
            stack.compose(compose_file, project, "up", "-d", "--wait", logged_in=True)
            print(f"export COMPOSE_FILE_PATH={shlex.quote(str(compose_file))}")
            print(f"# demo api: {service_url(stack, f'{project}-api')}/version")
        print("# test bed running; Ctrl-C or SIGTERM stops it", flush=True)
        while not stop.is_set():
            time.sleep(0.2)
    print("# test bed stopped", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m testbed`."""
    parser = argparse.ArgumentParser(prog="python -m testbed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a bed, print export lines, wait for Ctrl-C")
    up.add_argument("--demo", action="store_true", help="also deploy the sample project")
    up.add_argument("--parent", default="/tmp", help="where the base dir is made (short!)")
    clean = sub.add_parser("clean", help="remove beds whose owner process is gone")
    clean.add_argument("--parent", default="/tmp")
    args = parser.parse_args(argv)
    if args.command == "up":
        return _up(args)
    for path in cleanup_stale(Path(args.parent)):
        print(f"removed stale test bed {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
