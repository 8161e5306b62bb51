"""Process helpers shared by the daemons of the test bed: spawn, wait, stop, find leftovers."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class TestBedError(RuntimeError):
    """A component of the test bed could not be started, reached or stopped."""

    __test__ = False  # not a pytest test class, despite the name


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tail(path: Path, lines: int = 40) -> str:
    """Last `lines` lines of a log file, or a note when it does not exist."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64 * 1024))
            text = fh.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"({path}: {exc.strerror})"
    return "\n".join(text.splitlines()[-lines:])


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the Python process that started the bed is
    # killed (SIGKILL, OOM), the kernel sends SIGTERM to the daemon, which then shuts down
    # instead of living on unowned. PR_SET_PDEATHSIG survives execve for non-setuid binaries.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a daemon in its own session with stdout+stderr appended to `log_path`.

    Its own session keeps a terminal's Ctrl-C (sent to the foreground process group) from
    killing the daemon before the bed stops it in order. The parent-death signal is only armed
    when called from the main thread: the kernel ties it to the *thread* that forked, and a
    worker thread that ends would otherwise take the daemon with it.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    in_main = threading.current_thread() is threading.main_thread()
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent if in_main else None,  # noqa: PLW1509
        )


def wait_until(
    ready: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
    log_path: Path | None = None,
    interval: float = 0.05,
) -> None:
    """Poll `ready()` until it is true; fail early if `proc` dies, with the log's tail."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except OSError:
            pass  # not listening yet
        if proc is not None and proc.poll() is not None:
            raise TestBedError(
                f"{what} exited with status {proc.returncode} before it was ready"
                + (f"; last lines of {log_path}:\n{tail(log_path)}" if log_path else "")
            )
        if time.monotonic() > deadline:
            raise TestBedError(
                f"{what} not ready after {timeout:.0f}s"
                + (f"; last lines of {log_path}:\n{tail(log_path)}" if log_path else "")
            )
        time.sleep(interval)


class Daemon:
    """A daemon of the bed (dockerd, the registry, a Redis): `start()` spawns it into its log,
    `wait()` polls `ready()` until it answers (split, so that the others start meanwhile),
    `stop()` ends it with SIGTERM (SIGKILL after `stop_timeout`). A subclass says how to run
    it (`command()`, preparing its files first) and when it is ready (`ready()`)."""

    name = "daemon"
    start_timeout = 30.0
    stop_timeout = 10.0

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._timeout = self.start_timeout

    def command(self) -> tuple[list[str], Mapping[str, str] | None, Path | None]:
        """argv, environment (None: this process') and working directory."""
        raise NotImplementedError

    def ready(self) -> bool:
        """True once the daemon answers (OSError counts as not yet)."""
        raise NotImplementedError

    def start(self, *, timeout: float | None = None) -> None:
        """Spawn the daemon; call `wait()` afterwards."""
        argv, env, cwd = self.command()
        self.proc = spawn(argv, self.log_path, env=env, cwd=cwd)
        self._timeout = self.start_timeout if timeout is None else timeout

    def wait(self) -> None:
        """Block until `ready()`, or raise TestBedError with the log's tail."""
        wait_until(
            self.ready,
            what=self.name,
            timeout=self._timeout,
            proc=self.proc,
            log_path=self.log_path,
        )

    def running(self) -> bool:
        """True while the daemon's process lives."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self, *, timeout: float | None = None) -> None:
        """SIGTERM, then SIGKILL after `timeout` (`stop_timeout` by default)."""
        if self.proc is not None:
            terminate(self.proc, timeout=self.stop_timeout if timeout is None else timeout)
            self.proc = None


def terminate(proc: subprocess.Popen[bytes], *, timeout: float = 20.0) -> None:
    """SIGTERM, wait up to `timeout`, then SIGKILL; always reaps the child."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def process_start_time(pid: int) -> int | None:
    """Kernel start time of `pid` (clock ticks since boot), None if it does not exist.

    Stored next to a pid so a later check is not fooled by pid reuse.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces: split after its closing parenthesis.
    fields = stat.rpartition(")")[2].split()
    return int(fields[19])  # field 22 of stat(5); fields[0] here is field 3


def is_alive(pid: int, start_time: int | None) -> bool:
    """True if `pid` runs and, when given, was started at `start_time` (same process)."""
    current = process_start_time(pid)
    if current is None:
        return False
    return start_time is None or current == start_time


def iter_processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, argv) of every process visible in /proc (zombies and kernel threads skipped)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if raw:
            yield int(entry.name), raw.decode("utf-8", "replace").rstrip("\0").split("\0")


def pids_mentioning(text: str) -> list[int]:
    """Pids whose command line contains `text` (the bed's unique base dir), except ours."""
    if len(text) < 8:
        raise ValueError(f"refusing to match processes on a short string {text!r}")
    me = os.getpid()
    return [pid for pid, argv in iter_processes() if pid != me and any(text in a for a in argv)]


def kill_pids(pids: Sequence[int], *, grace: float = 5.0) -> None:
    """SIGTERM the given pids, wait up to `grace` seconds, SIGKILL the survivors."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if _running(pid)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"
