"""A throw-away Redis (Debian's redis-server) on a loopback port: the ARQ queue of the tests,
and the password/ACL/TLS servers of tests/integration/test_security.py (`extra_args`, `tls`)."""

from __future__ import annotations

import socket
from collections.abc import Callable, Sequence
from pathlib import Path

from testbed.procs import Daemon


class RedisServer(Daemon):
    """One redis-server child process without persistence (`--save ""`, no AOF); ready once it
    answers PING (or `ready()` as given). Stopped (SIGTERM), it exits without writing."""

    name = "redis-server"
    start_timeout = 20.0

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
        super().__init__(log_path)
        self.root = base_dir / "redis"
        self.port = port
        self.extra_args = list(extra_args)
        self.tls = tls
        self._ready = ready or self.ping

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

    def command(self) -> tuple[list[str], None, Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        return self.argv(), None, self.root

    def ready(self) -> bool:
        return self._ready()

    def ping(self) -> bool:
        """True when PING gets +PONG (raw RESP, no client library needed)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
