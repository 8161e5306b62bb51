"""The registry standing in for GHCR: Debian's `docker-registry` (distribution 2.8) with htpasswd.

It listens on 127.0.0.1 only; Docker treats 127.0.0.0/8 registries as insecure (plain HTTP)
without any daemon setting. Stop/start keeps the port, the data and the password, so fault
tests can take it down in the middle of an update and bring it back.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
from pathlib import Path

from testbed.procs import Daemon, TestBedError

REALM = "update-executor-testbed"


def bcrypt_htpasswd_line(username: str, password: str) -> str:
    """`user:$2y$...` from `htpasswd -niB`, the password given on stdin (never in argv)."""
    done = subprocess.run(
        ["htpasswd", "-niB", username],
        input=password,
        capture_output=True,
        text=True,
        check=False,
    )
    line = done.stdout.strip()
    if done.returncode != 0 or not line.startswith(f"{username}:$2"):
        raise TestBedError(f"htpasswd -niB failed ({done.returncode}): {done.stderr.strip()}")
    return line


class Registry(Daemon):
    """One `docker-registry serve` process with a generated config under `<base>/registry`;
    ready once GET /v2/ answers 401 (up, auth on). Stopped, its data stays for a later start."""

    name = "docker-registry"

    def __init__(
        self, base_dir: Path, port: int, username: str, password: str, log_path: Path
    ) -> None:
        super().__init__(log_path)
        self.root = base_dir / "registry"
        self.port = port
        self.username = username
        self.password = password

    @property
    def address(self) -> str:
        """host:port as used in image references."""
        return f"127.0.0.1:{self.port}"

    def write_config(self) -> Path:
        """Write htpasswd and config (JSON is valid YAML for the registry); return its path."""
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        htpasswd = self.root / "htpasswd"
        htpasswd.write_text(bcrypt_htpasswd_line(self.username, self.password) + "\n")
        htpasswd.chmod(0o600)
        config = {
            "version": "0.1",
            "log": {"level": "info", "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(data)},
                "delete": {"enabled": True},
                # No blob-descriptor cache: after a delete or restart, answers come from disk.
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": self.address,
                "secret": secrets.token_hex(16),
                "headers": {"X-Content-Type-Options": ["nosniff"]},
            },
            "auth": {"htpasswd": {"realm": REALM, "path": str(htpasswd)}},
        }
        path = self.root / "config.yml"
        path.write_text(json.dumps(config, indent=2) + "\n")
        return path

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        config = self.root / "config.yml"
        if not config.exists():  # written on the first start
            config = self.write_config()
        # REGISTRY_* variables override the config file in distribution (REGISTRY_URL of the
        # worker would even be rejected as an unknown field): the registry gets none of them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        return ["docker-registry", "serve", str(config)], env, self.root

    def ready(self) -> bool:
        return self.challenges()

    def challenges(self) -> bool:
        """True when GET /v2/ without credentials answers 401 Unauthorized."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2.0)
        try:
            conn.request("GET", "/v2/")
            return conn.getresponse().status == 401
        finally:
            conn.close()
