"""`TestBed`: start dockerd + registry + Redis under one base dir, and stop them in all cases.

Cleanup paths, from the most to the least orderly:
1. `with TestBed() as stack:` / `stop()`;
2. SIGTERM or SIGHUP to the Python process: a handler stops every live bed, then lets the
   signal do what it would have done (default: die by it);
3. interpreter exit without stop(): an atexit hook stops every live bed;
4. SIGKILL of the Python process: the daemons get SIGTERM from the kernel (parent-death signal,
   see procs.spawn) and exit; the base dir, the bridge and any process still mentioning the
   base dir are reclaimed by `cleanup_stale()` (run at every `start()` and by
   `python -m testbed clean`), which only touches beds whose owner process is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from testbed import host
from testbed.dockerd import Dockerd
from testbed.procs import (
    TestBedError,
    free_port,
    is_alive,
    iter_processes,
    kill_pids,
    pids_mentioning,
    process_start_time,
)
from testbed.redis_server import RedisServer
from testbed.registry import Registry
from testbed.stack import Stack

REGISTRY_USERNAME = "updater"
REQUIRED_TOOLS = (
    "dockerd",
    "docker",
    "docker-registry",
    "redis-server",
    "htpasswd",
    "ip",
    "umount",
)
MARKER = "testbed.json"
BASE_PREFIX = "ue-"

_live: list[TestBed] = []
_live_lock = threading.RLock()
_previous_handlers: dict[int, Any] = {}
_atexit_registered = False


def _stop_all_live() -> None:
    with _live_lock:
        beds = list(_live)
    for bed in beds:
        try:
            bed.stop()
        except Exception as exc:  # best effort on the way out: report and go on
            print(f"testbed: cleanup of {bed.base_dir} failed: {exc}", file=sys.stderr)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    # Read before stopping: stopping the last bed restores (and forgets) the handlers.
    previous = _previous_handlers.get(signum, signal.SIG_DFL)
    _stop_all_live()
    if callable(previous):
        previous(signum, frame)
        return
    if previous == signal.SIG_IGN:
        return
    # Default disposition: restore it and deliver the signal again, so the process ends the
    # way its parent expects (killed by SIGTERM), only after the daemons are gone.
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_cleanup_hooks() -> None:
    global _atexit_registered  # noqa: PLW0603 - one registration per process
    if not _atexit_registered:
        atexit.register(_stop_all_live)
        _atexit_registered = True
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be installed from the main thread
    for signum in (signal.SIGTERM, signal.SIGHUP):
        current = signal.getsignal(signum)
        if current is not _on_signal:
            _previous_handlers[signum] = current
            signal.signal(signum, _on_signal)


def _restore_signal_handlers() -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, previous in list(_previous_handlers.items()):
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        del _previous_handlers[signum]


def _is_bed_dir(path: Path) -> bool:
    # Guard for everything that kills or deletes by path: never act on "." or "/tmp".
    return path.is_absolute() and path.name.startswith(BASE_PREFIX) and len(path.name) > 6


def _kill_leftovers(base_dir: Path, pool: ipaddress.IPv4Network | None) -> list[int]:
    """Kill what outlived dockerd: processes naming the base dir (containerd, shims) and
    docker-proxy processes forwarding to the bed's pool (their command line has no path)."""
    pids = pids_mentioning(str(base_dir)) if _is_bed_dir(base_dir) else []
    if pool is not None:
        for pid, argv in iter_processes():
            if argv and argv[0].endswith("docker-proxy") and "-container-ip" in argv:
                value = argv[argv.index("-container-ip") + 1 : argv.index("-container-ip") + 2]
                with contextlib.suppress(ValueError):
                    if value and ipaddress.IPv4Address(value[0]) in pool:
                        pids.append(pid)
    if pids:
        kill_pids(pids)
    return pids


def _reclaim(base_dir: Path, pool: ipaddress.IPv4Network | None, bridge: str | None) -> list[str]:
    """Free what a bed holds outside processes: mounts, bridges, the base dir itself."""
    if not _is_bed_dir(base_dir):
        return []
    problems = []
    still_mounted = host.unmount_all(base_dir)
    if still_mounted:
        problems.append(f"still mounted: {still_mounted}")
    if pool is not None:
        problems.extend(host.delete_bridges_in(pool))
    if bridge:
        host.delete_link(bridge)
    shutil.rmtree(base_dir, ignore_errors=True)
    if base_dir.exists():
        problems.append(f"could not remove {base_dir}")
    return problems


def check_prerequisites() -> None:
    """Fail early, with the fix, when the machine is not set up for a bed."""
    if os.geteuid() != 0:
        raise TestBedError("the test bed needs root (dockerd, bridges, mounts)")
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool, path=path) is None]
    if missing:
        raise TestBedError(f"missing {', '.join(missing)}: run scripts/bootstrap.sh as root")


def cleanup_stale(parent: Path = Path("/tmp")) -> list[Path]:
    """Remove the beds under `parent` whose owner process is gone (killed before stop()).

    Only directories named ue-* that hold a testbed marker are considered, and only when the
    recorded owner (pid + start time, so pid reuse does not fool it) no longer runs.
    Returns the directories that were removed.
    """
    removed = []
    for base_dir in sorted(parent.glob(f"{BASE_PREFIX}*")):
        try:
            marker = json.loads((base_dir / MARKER).read_text())
            owner_alive = is_alive(int(marker["owner_pid"]), marker.get("owner_start"))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not a bed (other tools use ue-* too), or one still being created
        if owner_alive:
            continue
        for pid, start in marker.get("pids", {}).values():
            if is_alive(int(pid), start):
                kill_pids([int(pid)])
        pool = ipaddress.IPv4Network(marker["pool"]) if marker.get("pool") else None
        _kill_leftovers(base_dir, pool)
        _reclaim(base_dir, pool, marker.get("bridge"))
        removed.append(base_dir)
    return removed


class TestBed:
    """Context manager owning one test bed: `with TestBed() as stack: ...`.

    `start()` returns the `Stack`; `stop()` removes every container, stops the daemons,
    unmounts, deletes the bed's bridges and the base dir (idempotent). Fault helpers:
    `stop_registry()`/`start_registry()` (same port, data and password) and
    `stop_redis()`/`start_redis()`/`restart_redis()` (same port; Redis keeps no data).
    """

    __test__ = False  # a class named Test* imported into a test module is not a test

    def __init__(self, *, parent: Path = Path("/tmp"), reclaim_stale: bool = True) -> None:
        self.parent = parent
        self.reclaim_stale = reclaim_stale
        self.base_dir = Path()  # set by start(); the guards in _kill_leftovers/_reclaim hold
        self._stack: Stack | None = None
        self._dockerd: Dockerd | None = None
        self._registry: Registry | None = None
        self._redis: RedisServer | None = None
        self._lease: host.BridgeLease | None = None
        self._started = False
        self._stopped = False
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ lifecycle
    @property
    def stack(self) -> Stack:
        """The running stack (after `start()`)."""
        if self._stack is None:
            raise TestBedError("the test bed is not started")
        return self._stack

    def start(self) -> Stack:
        """Start dockerd, the registry and Redis in parallel, log the bed's CLI in."""
        if self._started:
            raise TestBedError("a TestBed can be started once; make a new one")
        check_prerequisites()
        self._started = True
        began = time.monotonic()
        if self.reclaim_stale:
            cleanup_stale(self.parent)
        # Short base path: unix socket paths (docker.sock, containerd's) are limited to 108.
        self.base_dir = Path(tempfile.mkdtemp(prefix=BASE_PREFIX, dir=self.parent))
        with _live_lock:
            _live.append(self)
        _install_cleanup_hooks()
        try:
            self._start_components()
        except BaseException:
            self.stop(raise_on_leak=False)
            raise
        self.timings["start"] = time.monotonic() - began
        return self.stack

    def _start_components(self) -> None:
        logs = self.base_dir / "logs"
        self._lease = host.reserve_bridge()
        self._write_marker()
        password = secrets.token_urlsafe(24)
        self._dockerd = Dockerd(self.base_dir, self._lease, logs / "dockerd.log")
        self._registry = Registry(
            self.base_dir, free_port(), REGISTRY_USERNAME, password, logs / "registry.log"
        )
        self._redis = RedisServer(self.base_dir, free_port(), logs / "redis.log")
        # Spawn all three, then wait for each: the others start while dockerd initialises.
        self._dockerd.start()
        self._registry.start()
        self._redis.start()
        self._write_marker()
        self._dockerd.wait()
        self._registry.wait()
        self._redis.wait()

        docker_config = self.base_dir / "docker-config"
        anonymous = self.base_dir / "docker-anon"
        for directory in (docker_config, anonymous):
            directory.mkdir(mode=0o700)
            (directory / "config.json").write_text("{}\n")
        self._stack = Stack(
            base_dir=self.base_dir,
            docker_host=self._dockerd.host,
            registry=self._registry.address,
            registry_username=REGISTRY_USERNAME,
            registry_password=password,
            redis_host="127.0.0.1",
            redis_port=self._redis.port,
            docker_config=docker_config,
            anonymous_docker_config=anonymous,
        )
        self._stack.docker(
            "login",
            self._registry.address,
            "--username",
            REGISTRY_USERNAME,
            "--password-stdin",
            input=password,
            logged_in=True,
            timeout=60,
        )

    def _write_marker(self) -> None:
        pids = {}
        for name, comp in (
            ("dockerd", self._dockerd),
            ("registry", self._registry),
            ("redis", self._redis),
        ):
            proc = comp.proc if comp is not None else None
            if proc is not None:
                pids[name] = [proc.pid, process_start_time(proc.pid)]
        marker = {
            "owner_pid": os.getpid(),
            "owner_start": process_start_time(os.getpid()),
            "bridge": self._lease.name if self._lease else None,
            "pool": str(self._lease.pool) if self._lease else None,
            "pids": pids,
        }
        (self.base_dir / MARKER).write_text(json.dumps(marker) + "\n")

    @property
    def bridge(self) -> str | None:
        """Name of the bed's own bridge (ue-n<N>), once started."""
        return self._lease.name if self._lease else None

    @property
    def address_pool(self) -> ipaddress.IPv4Network | None:
        """10.<N>.0.0/16: the bed's bridge and every network compose creates are in it."""
        return self._lease.pool if self._lease else None

    def pids(self) -> dict[str, int]:
        """Pids of the bed's daemons that were started (running or not)."""
        out = {}
        for name, comp in (
            ("dockerd", self._dockerd),
            ("registry", self._registry),
            ("redis", self._redis),
        ):
            if comp is not None and comp.proc is not None:
                out[name] = comp.proc.pid
        return out

    def stop(self, *, raise_on_leak: bool = True) -> None:
        """Remove containers and networks, stop the daemons, unmount, delete bridges and dir.

        Idempotent and safe to call from a signal handler or atexit. Raises TestBedError
        when something of the bed is left behind (unless `raise_on_leak=False`).
        """
        if self._stopped or not self._started:
            return
        self._stopped = True
        began = time.monotonic()
        problems: list[str] = []
        try:
            if self._dockerd is not None and self._dockerd.running() and self._stack:
                problems.extend(self._remove_containers_and_networks(self._stack))
            for comp in (self._dockerd, self._registry, self._redis):
                if comp is not None:
                    try:
                        comp.stop()
                    except Exception as exc:  # keep stopping the others
                        problems.append(f"stopping {type(comp).__name__}: {exc}")
            pool = self._lease.pool if self._lease else None
            leftovers = _kill_leftovers(self.base_dir, pool)
            if leftovers:
                problems.append(f"killed leftover processes {leftovers}")
            problems.extend(
                _reclaim(self.base_dir, pool, self._lease.name if self._lease else None)
            )
        finally:
            with _live_lock:
                if self in _live:
                    _live.remove(self)
                if not _live:
                    _restore_signal_handlers()
            self.timings["stop"] = time.monotonic() - began
        if problems:
            message = f"test bed {self.base_dir} did not stop cleanly: " + "; ".join(problems)
            if raise_on_leak:
                raise TestBedError(message)
            print(f"testbed: {message}", file=sys.stderr)

    @staticmethod
    def _remove_containers_and_networks(stack: Stack) -> list[str]:
        problems = []
        ids = stack.docker("ps", "-aq", check=False, timeout=60).stdout.split()
        if ids:
            done = stack.docker("rm", "-f", "-v", *ids, check=False, timeout=120)
            if done.returncode != 0:
                problems.append(f"docker rm -f: {done.stderr.strip()}")
        # Compose's networks have host bridges (br-<id>) that dockerd keeps after it stops.
        nets = stack.docker(
            "network", "ls", "-q", "--filter", "type=custom", check=False, timeout=60
        ).stdout.split()
        if nets:
            stack.docker("network", "rm", *nets, check=False, timeout=60)
        return problems

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # A leak is reported as an error only when it would not hide the test's own failure.
        self.stop(raise_on_leak=exc_type is None)

    # ------------------------------------------------------------------ fault helpers
    def stop_registry(self) -> None:
        """Take the registry down (pulls and logins then fail with connection refused)."""
        if self._registry is None:
            raise TestBedError("the test bed is not started")
        self._registry.stop()

    def start_registry(self, *, timeout: float = 30.0) -> None:
        """Bring the registry back on the same port with the same data and password."""
        if self._registry is None:
            raise TestBedError("the test bed is not started")
        if not self._registry.running():
            self._registry.start(timeout=timeout)
            self._registry.wait()
            self._write_marker()

    def stop_redis(self) -> None:
        """Stop Redis (its data is lost: no persistence)."""
        if self._redis is None:
            raise TestBedError("the test bed is not started")
        self._redis.stop()

    def start_redis(self, *, timeout: float = 20.0) -> None:
        """Start Redis again on the same port (empty)."""
        if self._redis is None:
            raise TestBedError("the test bed is not started")
        if not self._redis.running():
            self._redis.start(timeout=timeout)
            self._redis.wait()
            self._write_marker()

    def restart_redis(self) -> None:
        """Stop and start Redis on the same port; clients see their connections dropped."""
        self.stop_redis()
        self.start_redis()

    def registry_running(self) -> bool:
        """True while the registry process runs."""
        return self._registry is not None and self._registry.running()

    def redis_running(self) -> bool:
        """True while redis-server runs."""
        return self._redis is not None and self._redis.running()
