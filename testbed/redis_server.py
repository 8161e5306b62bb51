"""A throw-away Redis (Debian's redis-server) on a loopback port: the ARQ queue of the tests,
and the password/ACL/TLS servers of tests/integration/test_security.py (`extra_args`, `tls`)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from testbed.procs import spawn, terminate, wait_until


class RedisServer:
    """One redis-server child process without persistence (`--save ""`, no AOF)."""

    def __init__(
        self,
        base_dir: Path,
        port: int,
        log_path: Path,
        *,
        extra_args: Sequence[str] = (),
        tls: bool = False,
        ready: Callable[[], bool] | None = None,
    ) -> None:
        """`tls`: `port` is the TLS port (and no plain one); `ready` replaces the plain PING
        as the readiness check (e.g. one that logs in or speaks TLS)."""
        self.root = base_dir / "redis"
        self.port = port
        self.log_path = log_path
        self.extra_args = list(extra_args)
        self.tls = tls
        self.ready = ready or self.ping
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        """The redis-server command line; the log goes to stdout, i.e. our log file."""
        ports = ["--port", "0", "--tls-port"] if self.tls else ["--port"]
        return [
            "redis-server",
            *ports,
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.root),
            "--logfile",
            "",
            *self.extra_args,
        ]

    def start(self, *, timeout: float = 20.0) -> None:
        """Spawn redis-server; call `wait()` afterwards."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(self.argv(), self.log_path, cwd=self.root)
        self._timeout = timeout

    def wait(self) -> None:
        """Block until Redis answers PING, or raise with the log's tail."""
        wait_until(
            self.ready,
            what="redis-server",
            timeout=self._timeout,
            proc=self.proc,
            log_path=self.log_path,
        )

    def ping(self) -> bool:
        """True when PING gets +PONG (raw RESP, no client library needed)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")

    def running(self) -> bool:
        """True while the redis-server process lives."""
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """Stop Redis (SIGTERM: with no save point configured it exits without writing)."""
        if self.proc is not None:
            terminate(self.proc, timeout=10.0)
            self.proc = None
