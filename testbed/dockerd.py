"""A private Docker daemon (Debian's dockerd 20.10) that lives entirely under the bed's base dir.

Flags, and why (verified next to another dockerd that owns docker0 and iptables):
- `--data-root/--exec-root/--pidfile/--host unix://`: all state and the API socket are private;
  dockerd starts its own containerd under the exec root.
- `--config-file <empty json>`: the host's /etc/docker/daemon.json must not leak in (a key set
  there and on the command line makes dockerd refuse to start).
- `--bridge=ue-n<N>` (a bridge made by testbed.host) and `--default-address-pool
  base=10.<N>.0.0/16,size=24`: no clash with docker0 or with the networks of other daemons.
- `--iptables=false --ip-masq=false --ip-forward=false`: the host firewall and sysctls stay
  untouched. Published ports still work on 127.0.0.1 through docker-proxy (the userland proxy,
  on by default); containers need no outbound traffic (nothing is pulled from the internet).
  Side effect: where br_netfilter is loaded and FORWARD's policy is DROP (another dockerd with
  iptables does that), containers of the bed cannot reach *each other*; host -> container and
  a container's own loopback (healthchecks) are unaffected.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from testbed.host import BridgeLease, delete_bridges_in, reserve_bridge, unmount_all
from testbed.procs import Daemon
from testbed.stack import docker_binary

_PING = b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n"


class Dockerd(Daemon):
    """One dockerd process; ready once its API answers /_ping."""

    name = "dockerd"
    start_timeout = 60.0
    stop_timeout = 30.0  # it stops its containerd too

    def __init__(self, base_dir: Path, lease: BridgeLease, log_path: Path) -> None:
        super().__init__(log_path)
        self.root = base_dir / "docker"
        self.socket_path = base_dir / "docker.sock"
        self.lease = lease

    @property
    def host(self) -> str:
        """DOCKER_HOST value for this daemon."""
        return f"unix://{self.socket_path}"

    def argv(self) -> list[str]:
        """The dockerd command line (see the module docstring for each flag)."""
        return [
            "dockerd",
            "--config-file",
            str(self.root / "daemon.json"),
            "--data-root",
            str(self.root / "data"),
            "--exec-root",
            str(self.root / "exec"),
            "--pidfile",
            str(self.root / "dockerd.pid"),
            "--host",
            self.host,
            "--bridge",
            self.lease.name,
            "--default-address-pool",
            f"base={self.lease.pool},size=24",
            "--iptables=false",
            "--ip-masq=false",
            "--ip-forward=false",
            "--userland-proxy=true",
        ]

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "daemon.json").write_text("{}\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")}
        # dockerd finds containerd, runc, docker-proxy and docker-init on PATH (/usr/sbin too).
        path = env.get("PATH", "/usr/local/bin:/usr/bin:/bin")
        env["PATH"] = ":".join([path, "/usr/local/sbin", "/usr/sbin", "/sbin"])
        return self.argv(), env, self.root

    def ready(self) -> bool:
        return self.ping()

    def ping(self) -> bool:
        """True when the daemon answers GET /_ping on its socket."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            sock.connect(str(self.socket_path))
            sock.sendall(_PING)
            head = sock.recv(256).split(b"\r\n", 1)[0]
        return head.startswith(b"HTTP/1.") and b" 200 " in head + b" "


@contextlib.contextmanager
def another_dockerd(prefix: str = "ue-2d-") -> Iterator[str]:
    """Another private dockerd beside the bed's (its own data root, socket and bridge, under a
    /tmp/<prefix>* directory): yields its DOCKER_HOST. At the end its containers are removed,
    it is stopped, and its bridges, mounts and files are gone, also when the test failed."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    lease = reserve_bridge()
    daemon = Dockerd(base, lease, base / "dockerd.log")
    try:
        daemon.start()
        daemon.wait()
        yield daemon.host
    finally:
        with contextlib.suppress(Exception):
            env = {**os.environ, "DOCKER_HOST": daemon.host}
            env.pop("DOCKER_CONTEXT", None)
            docker = docker_binary()
            ids = subprocess.run(
                [docker, "ps", "-aq"], env=env, capture_output=True, text=True, check=False
            ).stdout.split()
            if ids:
                subprocess.run([docker, "rm", "-f", *ids], env=env, check=False, timeout=120)
        daemon.stop()
        delete_bridges_in(lease.pool)
        unmount_all(base)
        shutil.rmtree(base, ignore_errors=True)
