"""An inventory host reached over SSH (issue 24): Debian's sshd on a random loopback port, with
its own config and host key in a temp dir of its own, key authentication only (a key made per
host), a non-root user made for it that becomes root with sudo (a sudoers drop-in allowing only
Ansible's become command), and the Docker daemon it updates (`docker_host`, the bed's private
dockerd helper). `with ssh_host(docker_host) as host:` starts sshd, waits until it answers and
pings it (log in with the key, sudo to root); on the way out, also when the test failed, it
stops sshd and ends the user's sessions, then removes the user (and its home), the sudoers file
and the temp dir. A host whose owner process was killed (SIGKILL) is reclaimed by the next
`ssh_host()` (`cleanup_stale`).

Ansible reaches it with `inventory_vars()`: the ssh connection to 127.0.0.1 on the port, the
user and key, `become`, and host key checking against the host's own known_hosts file (not
disabled). Its Python is this virtualenv's (it has `requests`, which community.docker's API
modules need; a real host has Debian's python3-requests).

sshd's privilege separation directory (/run/sshd, what the package's tmpfiles.d makes at boot)
is created when missing and left in place: other sessions' hosts may use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from testbed.procs import (
    Daemon,
    TestBedError,
    free_port,
    is_alive,
    iter_processes,
    kill_pids,
    process_start_time,
)

SSHD = "/usr/sbin/sshd"
SUDO = "/usr/bin/sudo"
SUDOERS_DIR = Path("/etc/sudoers.d")
PREFIX = "ue-ssh-"  # the temp dir, the user and the sudoers file are named PREFIX + 8 hex
MARKER = "sshhost.json"
PRIVSEP_DIR = Path("/run/sshd")
# The command Ansible's sudo become runs: `sudo -H -S -n -u root /bin/sh -c 'echo BECOME-...'`.
BECOME_COMMAND = "/bin/sh -c *"


class Sshd(Daemon):
    """sshd in the foreground (-D), logging to stderr (-e); ready once it sends its banner."""

    name = "sshd"
    start_timeout = 20.0
    stop_timeout = 10.0

    def __init__(self, config: Path, port: int, log_path: Path) -> None:
        super().__init__(log_path)
        self.config = config
        self.port = port

    def command(self) -> tuple[list[str], dict[str, str], Path]:
        # An absolute path: sshd re-executes itself for each connection.
        return [SSHD, "-D", "-e", "-f", str(self.config)], dict(os.environ), self.config.parent

    def ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
            return sock.recv(64).startswith(b"SSH-2.0-")


@dataclass(frozen=True)
class SshHost:
    """What reaches the host: its address, user, key and known_hosts, and its Docker daemon."""

    base_dir: Path
    user: str
    port: int
    private_key: Path
    known_hosts: Path
    docker_host: str
    python: str
    sshd: Sshd

    def inventory_vars(self, *, timeout: int = 10) -> dict[str, object]:
        """host_vars of an inventory host reached over SSH with become (`timeout`: seconds
        to connect, Ansible's `timeout`/ssh ConnectTimeout, which also bounds the banner)."""
        return {
            "ansible_connection": "ssh",
            "ansible_host": "127.0.0.1",
            "ansible_port": self.port,
            "ansible_user": self.user,
            "ansible_ssh_private_key_file": str(self.private_key),
            "ansible_ssh_common_args": (
                f"-o UserKnownHostsFile={self.known_hosts} -o StrictHostKeyChecking=yes"
            ),
            "ansible_ssh_timeout": timeout,
            "ansible_become": True,
            "ansible_become_method": "sudo",
            "ansible_python_interpreter": self.python,
            "compose_update_docker_host": self.docker_host,
        }

    def ssh(self, *command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run `command` on the host as its user, as Ansible connects (key, known_hosts)."""
        return subprocess.run(
            [
                "ssh",
                "-F",
                "/dev/null",
                "-i",
                str(self.private_key),
                "-o",
                f"UserKnownHostsFile={self.known_hosts}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                "-p",
                str(self.port),
                f"{self.user}@127.0.0.1",
                shlex.join(command),  # the remote shell splits it again
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ping(self) -> None:
        """Log in with the key and become root as Ansible does; TestBedError otherwise."""
        done = self.ssh(SUDO, "-H", "-S", "-n", "-u", "root", "/bin/sh", "-c", "id -u")
        if done.returncode != 0 or done.stdout.strip() != "0":
            raise TestBedError(
                f"ssh {self.user}@127.0.0.1:{self.port} + sudo failed (rc {done.returncode}): "
                f"{done.stdout.strip()} {done.stderr.strip()}"
            )

    def stop_sshd(self) -> None:
        """The host's sshd goes away with its connections (as when the host goes down):
        new connections are refused and no multiplexed one lives on."""
        self.sshd.stop()
        end_user_processes(self.user, self.base_dir)

    def start_sshd(self) -> None:
        """sshd back on the same port, with the same key and config."""
        if not self.sshd.running():
            self.sshd.start()
            self.sshd.wait()
            write_marker(self.base_dir, self.user, self.sshd)

    @contextlib.contextmanager
    def sshd_hung(self) -> Iterator[None]:
        """sshd frozen (SIGSTOP): the kernel still accepts connections, nobody answers."""
        proc = self.sshd.proc
        if proc is None:
            raise TestBedError("sshd is not running")
        proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            proc.send_signal(signal.SIGCONT)


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if done.returncode != 0:
        raise TestBedError(f"{' '.join(argv)} failed: {done.stderr.strip()}")


def user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _uid_of(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def end_user_processes(user: str, base_dir: Path) -> list[int]:
    """Kill (by pid) the sessions of `user`: its processes (real uid) and the sshd processes
    serving it (`sshd: <user>@notty`) or started with the host's config."""
    try:
        uid: int | None = pwd.getpwnam(user).pw_uid
    except KeyError:
        uid = None
    me = os.getpid()
    pids = [
        pid
        for pid, argv in iter_processes()
        if pid != me
        and (
            (uid is not None and _uid_of(pid) == uid)
            or any(f"{user}@" in a or f"{user} [" in a or str(base_dir) in a for a in argv)
        )
    ]
    if pids:
        kill_pids(pids)
    return pids


def write_marker(base_dir: Path, user: str, sshd: Sshd | None) -> None:
    proc = sshd.proc if sshd is not None else None
    marker = {
        "owner_pid": os.getpid(),
        "owner_start": process_start_time(os.getpid()),
        "user": user,
        "sshd": [proc.pid, process_start_time(proc.pid)] if proc is not None else None,
    }
    (base_dir / MARKER).write_text(json.dumps(marker) + "\n")


def _remove(base_dir: Path, user: str) -> list[str]:
    """Remove what a host made outside its processes; what could not be removed."""
    problems = []
    end_user_processes(user, base_dir)
    if user_exists(user):
        done = subprocess.run(
            ["userdel", "--remove", user], capture_output=True, text=True, check=False
        )
        # userdel warns (exit 12) when the mail spool it looks for does not exist.
        if user_exists(user):
            problems.append(f"userdel {user}: {done.stderr.strip()}")
    (SUDOERS_DIR / user).unlink(missing_ok=True)
    if base_dir.name.startswith(PREFIX) and base_dir.is_absolute():
        shutil.rmtree(base_dir, ignore_errors=True)
        if base_dir.exists():
            problems.append(f"could not remove {base_dir}")
    return problems


def cleanup_stale(parent: Path = Path("/tmp")) -> list[Path]:
    """Reclaim the hosts under `parent` whose owner process is gone (killed before the end):
    their sshd, the user's processes, the user, its sudoers file and the dir."""
    removed = []
    for base_dir in sorted(parent.glob(f"{PREFIX}*")):
        try:
            marker = json.loads((base_dir / MARKER).read_text())
            owner_alive = is_alive(int(marker["owner_pid"]), marker.get("owner_start"))
            user = str(marker["user"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if owner_alive or not user.startswith(PREFIX):
            continue
        if marker.get("sshd") and is_alive(int(marker["sshd"][0]), marker["sshd"][1]):
            kill_pids([int(marker["sshd"][0])])
        _remove(base_dir, user)
        removed.append(base_dir)
    return removed


def check_prerequisites() -> None:
    missing = [tool for tool in (SSHD, SUDO, "/usr/sbin/useradd", "/usr/bin/ssh-keygen")]
    missing = [tool for tool in missing if not Path(tool).exists()]
    if missing:
        raise TestBedError(f"missing {', '.join(missing)}: run scripts/bootstrap.sh as root")
    if os.geteuid() != 0:
        raise TestBedError("an SSH host of the test bed needs root (a user, sudoers, sshd)")


def _sshd_config(base_dir: Path, port: int, user: str, host_key: Path) -> str:
    return "\n".join(
        [
            f"Port {port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {host_key}",
            f"PidFile {base_dir / 'sshd.pid'}",
            "AuthorizedKeysFile .ssh/authorized_keys",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "HostbasedAuthentication no",
            "PermitRootLogin no",
            "UsePAM no",
            "StrictModes yes",
            f"AllowUsers {user}",
            "X11Forwarding no",
            "AllowTcpForwarding no",
            "PrintMotd no",
            "LogLevel VERBOSE",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


@contextlib.contextmanager
def ssh_host(docker_host: str, *, parent: Path = Path("/tmp")) -> Iterator[SshHost]:
    """An SSH host for `docker_host` (see the module docstring); everything removed at the end."""
    check_prerequisites()
    cleanup_stale(parent)
    base_dir = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    base_dir.chmod(0o755)  # the user's home is in it: traversable, written by root only
    user = PREFIX + secrets.token_hex(4)
    write_marker(base_dir, user, None)
    sshd: Sshd | None = None
    try:
        keys = base_dir / "keys"  # the controller's: root only
        keys.mkdir(mode=0o700)
        etc = base_dir / "sshd"
        etc.mkdir(mode=0o700)
        private_key, host_key = keys / "id_ed25519", etc / "host_ed25519"
        for path, comment in ((private_key, "ansible@controller"), (host_key, "host")):
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))

        home = base_dir / "home"
        # No password (`*`: not locked, so sshd lets the key in with UsePAM no; no password
        # logs in either).
        _run(
            "useradd",
            "--home-dir",
            str(home),
            "--create-home",
            "--shell",
            "/bin/sh",
            "--user-group",
            "--password",
            "*",
            "--comment",
            "update-executor test bed (testbed/sshhost.py)",
            user,
        )
        account = pwd.getpwnam(user)
        ssh_dir = home / ".ssh"
        ssh_dir.mkdir(mode=0o700)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(Path(f"{private_key}.pub").read_text())
        authorized.chmod(0o600)
        for path in (ssh_dir, authorized):
            os.chown(path, account.pw_uid, account.pw_gid)

        # sudo: only the command Ansible's become runs, as root, without a password.
        rule = f"{user} ALL=(root) NOPASSWD: {BECOME_COMMAND}\n"
        staged = etc / "sudoers"
        staged.write_text(rule)
        _run("visudo", "-c", "-q", "-f", str(staged))
        sudoers = SUDOERS_DIR / user  # no dot in the name: sudo would skip the file
        fd = os.open(sudoers, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o440)
        with os.fdopen(fd, "w") as fh:
            fh.write(rule)

        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        port = free_port()
        config = etc / "sshd_config"
        config.write_text(_sshd_config(base_dir, port, user, host_key))
        _run(SSHD, "-t", "-f", str(config))
        known_hosts = keys / "known_hosts"
        key_type, key_blob = Path(f"{host_key}.pub").read_text().split()[:2]
        known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key_blob}\n")

        sshd = Sshd(config, port, base_dir / "sshd.log")
        sshd.start()
        write_marker(base_dir, user, sshd)
        sshd.wait()
        host = SshHost(
            base_dir=base_dir,
            user=user,
            port=port,
            private_key=private_key,
            known_hosts=known_hosts,
            docker_host=docker_host,
            python=sys.executable,
            sshd=sshd,
        )
        host.ping()
        yield host
    finally:
        if sshd is not None:
            with contextlib.suppress(Exception):
                if sshd.proc is not None:
                    sshd.proc.send_signal(signal.SIGCONT)  # a test may have frozen it
            sshd.stop()
        problems = _remove(base_dir, user)
        if problems:
            print(f"testbed: SSH host {user} not removed cleanly: {'; '.join(problems)}")
