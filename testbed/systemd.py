"""A Debian 12 host with systemd as PID 1, in a container of the bed's own dockerd.

- `rootfs_tarball()` builds a root file system with `debootstrap --variant=minbase` from the
  Debian archive apt already uses (nothing else is reached), and caches it as a tarball under
  CACHE_DIR, keyed on what went into it (suite, mirror, package list): about 80 s once, then
  reused by every run.
- `SystemdHost` imports it into the bed's dockerd and boots it. Flags, and why:
  `--cap-add SYS_ADMIN --security-opt seccomp=unconfined` (systemd mounts and makes namespaces
  for the sandboxing options; `--privileged` fails on these machines: their bounding set lacks
  CAP_SYS_RESOURCE), `--tmpfs /run --tmpfs /run/lock`, the host's `/sys/fs/cgroup`;
  `--network host`: the bed's Redis and registry listen on 127.0.0.1 only, and the traffic
  stays on loopback.
- Mount propagation. systemd makes `/` shared at boot, but not when it detects a container,
  and Docker makes a container's mounts private. `LoadCredential=` needs propagation: systemd
  mounts the service's credentials in a short-lived child with a mount namespace of its own and
  moves that mount to /run/credentials/<unit>, which only reaches systemd's (and so the
  service's) namespace through a shared /run. Without it the service sees an empty
  $CREDENTIALS_DIRECTORY. So PID 1 is `mount --make-rshared /` then `exec systemd`: what
  systemd does itself on a real host. Shared here means within the container's own namespace:
  nothing propagates to the machine running the bed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from testbed.procs import TestBedError, wait_until
from testbed.stack import Stack

DEBIAN_SUITE = "bookworm"
# What a Debian 12 host running the worker has besides Docker: systemd, Python with venv
# (the documented install makes a virtualenv), openssl (the job secret is made with it).
ROOTFS_PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "openssl")
# Outside the repository (not in git), kept between runs; UE_CACHE_DIR moves it.
CACHE_DIR = Path(os.environ.get("UE_CACHE_DIR", "/var/cache/update-executor-tests"))
BOOT_TIMEOUT_S = 120.0
SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def apt_mirror() -> str:
    """The Debian archive apt already uses for `DEBIAN_SUITE` main (deb822 or one-line)."""
    files: list[Path] = []
    for source in SOURCES:
        if source.is_dir():
            files.extend(sorted(source.glob("*.sources")) + sorted(source.glob("*.list")))
        elif source.is_file():
            files.append(source)
    for path in files:
        text = path.read_text(errors="replace")
        for stanza in re.split(r"\n\s*\n", text):
            fields: dict[str, str] = dict(re.findall(r"^(\w[\w-]*):\s*(.+)$", stanza, re.MULTILINE))
            if (
                DEBIAN_SUITE in fields.get("Suites", "").split()
                and "main" in fields.get("Components", "").split()
            ):
                return fields["URIs"].split()[0]
        for line in text.splitlines():
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if words[:1] == ["deb"] and words[2:3] == [DEBIAN_SUITE] and "main" in words[3:]:
                return words[1]
    raise TestBedError(f"no Debian {DEBIAN_SUITE} main archive in apt's sources ({SOURCES})")


def rootfs_key(mirror: str, packages: Sequence[str] = ROOTFS_PACKAGES, version: int = 1) -> str:
    """Names the cached tarball: a new package list, archive or recipe version (bumped when
    what is done to the tree changes) makes a new one."""
    recipe = {"suite": DEBIAN_SUITE, "mirror": mirror, "packages": tuple(packages), "v": version}
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Two test sessions on one machine build the tarball once.
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def rootfs_tarball(
    cache_dir: Path = CACHE_DIR,
    *,
    name: str = "systemd",
    packages: Sequence[str] = ROOTFS_PACKAGES,
    version: int = 1,
    prune: Sequence[str] = (),
) -> Path:
    """The cached root file system tarball, built with debootstrap when missing.

    `packages` are added to minbase; `prune` are globs (relative to the root) removed before
    the tarball is made (caches, what a package's postinst created and the image does not
    use); a change to them needs a new `version`, which is part of the key.
    """
    mirror = apt_mirror()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = rootfs_key(mirror, packages, version)
    tarball = cache_dir / f"debian-{DEBIAN_SUITE}-{name}-{key}.tar"
    # A lock per tarball: two sessions build one tarball once, and two different ones at once.
    with _locked(cache_dir / f".{tarball.name}.lock"):
        if tarball.is_file():
            return tarball
        debootstrap = shutil.which("debootstrap", path="/usr/sbin:/sbin:" + os.environ["PATH"])
        if debootstrap is None:
            raise TestBedError("debootstrap is missing: run scripts/bootstrap.sh as root")
        with tempfile.TemporaryDirectory(prefix="rootfs-", dir=cache_dir) as tmp:
            root = Path(tmp) / "root"
            argv = [debootstrap, "--variant=minbase", "--include=" + ",".join(packages)]
            done = subprocess.run(
                [*argv, DEBIAN_SUITE, str(root), mirror],
                capture_output=True,
                text=True,
                timeout=1200,
                check=False,
            )
            if done.returncode != 0:
                lines = (done.stdout + done.stderr).strip().splitlines()
                log = root / "debootstrap" / "debootstrap.log"
                if log.is_file():
                    lines += log.read_text(errors="replace").splitlines()
                raise TestBedError("debootstrap failed:\n" + "\n".join(lines[-30:]))
            for pattern in prune:
                for path in root.glob(pattern):
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    else:
                        path.unlink()
            partial = Path(tmp) / "rootfs.tar"
            subprocess.run(
                ["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."],
                check=True,
                timeout=600,
            )
            partial.rename(tarball)
    return tarball


@dataclass(frozen=True)
class Mount:
    """A bind mount from the machine running the bed into the systemd host."""

    source: Path
    target: str
    read_only: bool = True

    def arg(self) -> str:
        return f"{self.source}:{self.target}" + (":ro" if self.read_only else "")


class SystemdHost:
    """One container booted with systemd as PID 1; `exec()` runs commands in it as root."""

    def __init__(self, stack: Stack, tarball: Path, mounts: Sequence[Mount] = ()) -> None:
        self.stack = stack
        self.tarball = tarball
        self.mounts = tuple(mounts)
        self.name = f"ue-systemd-{os.getpid()}-{time.monotonic_ns() % 10**6}"
        self.image = f"ue-testbed/debian-systemd:{tarball.stem.rsplit('-', 1)[-1]}"
        self.timings: dict[str, float] = {}

    def start(self) -> None:
        began = time.monotonic()
        inspect = self.stack.docker("image", "inspect", self.image, check=False, timeout=60)
        if inspect.returncode != 0:
            self.stack.docker("import", str(self.tarball), self.image, timeout=600)
        self.timings["import"] = time.monotonic() - began
        began = time.monotonic()
        self.stack.docker(
            "run",
            "--detach",
            "--name",
            self.name,
            "--hostname",
            "ue-systemd-host",
            "--cap-add",
            "SYS_ADMIN",
            "--security-opt",
            "seccomp=unconfined",
            "--tmpfs",
            "/run",
            "--tmpfs",
            "/run/lock",
            "--volume",
            "/sys/fs/cgroup:/sys/fs/cgroup:rw",
            "--network",
            "host",
            *[arg for mount in self.mounts for arg in ("--volume", mount.arg())],
            "--entrypoint",
            "/bin/sh",
            self.image,
            "-c",
            "mount --make-rshared / && exec /lib/systemd/systemd",
            timeout=120,
        )
        wait_until(self._booted, what="systemd in the container", timeout=BOOT_TIMEOUT_S)
        self.timings["boot"] = time.monotonic() - began

    def _booted(self) -> bool:
        state = self.exec("systemctl", "is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            return True
        if not self.stack.docker("ps", "-q", "--filter", f"name={self.name}").stdout.strip():
            logs = self.stack.docker("logs", "--tail", "40", self.name, check=False)
            raise TestBedError(f"the systemd container exited:\n{logs.stdout}{logs.stderr}")
        return False

    def exec(
        self,
        *argv: str,
        input: str | None = None,  # same name as subprocess.run's
        env: Mapping[str, str] | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run ARGV in the container as root (stdin from `input`, never on a command line)."""
        args = ["exec", "--interactive"] if input is not None else ["exec"]
        for name, value in (env or {}).items():
            args += ["--env", f"{name}={value}"]
        return self.stack.docker(*args, self.name, *argv, input=input, check=check, timeout=timeout)

    def script(
        self, text: str, *, env: Mapping[str, str] | None = None, timeout: float = 600.0
    ) -> str:
        """Run a bash script given on stdin (read whole first: a command reading stdin must not
        eat the rest of the script); return its output. Raises CommandError on failure."""
        done = self.exec(
            "bash",
            "-c",
            'set -euo pipefail; script="$(cat)"; eval "$script"',
            input=text,
            env=env,
            check=True,
            timeout=timeout,
        )
        return done.stdout + done.stderr

    def copy_in(self, source: Path, target: str) -> None:
        """`docker cp` a file or directory into the container."""
        self.stack.docker("cp", str(source), f"{self.name}:{target}", timeout=300)

    def unit(self, unit: str, *names: str) -> dict[str, str]:
        """`systemctl show` properties of a unit."""
        out = self.exec("systemctl", "show", unit, "--property=" + ",".join(names)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_unit(
        self, unit: str, what: str, accept: Mapping[str, Sequence[str]], timeout: float = 180.0
    ) -> dict[str, str]:
        """Poll the unit's properties until each named one has one of the accepted values."""
        seen: dict[str, str] = {}

        def ready() -> bool:
            seen.update(self.unit(unit, *accept))
            return all(seen.get(name) in values for name, values in accept.items())

        try:
            wait_until(ready, what=f"{unit} {what}", timeout=timeout, interval=0.2)
        except TestBedError as exc:
            raise TestBedError(f"{exc}; last seen {seen}\n{self.journal(unit)[-3000:]}") from exc
        return seen

    def journal(self, unit: str | None = None, *, after: str | None = None) -> str:
        """The journal (of one unit, or all of it; after a `cursor()`) as plain text."""
        argv = ["journalctl", "--no-pager", "--output=short-iso"]
        if unit:
            argv += ["--unit", unit]
        if after:
            argv += ["--after-cursor", after]
        return self.exec(*argv, check=False, timeout=120).stdout

    def cursor(self) -> str:
        """The journal's current end, for `journal(after=...)`/`wait_journal`."""
        out = self.exec("journalctl", "--show-cursor", "--lines=0", "--quiet").stdout
        return out.rsplit("cursor: ", 1)[-1].strip()

    def wait_journal(self, unit: str, text: str, *, after: str, timeout: float = 180.0) -> str:
        """Poll the unit's journal after `after` until a line holds `text`; return it all."""
        seen = [""]

        def found() -> bool:
            seen[0] = self.journal(unit, after=after)
            return text in seen[0]

        try:
            wait_until(
                found, what=f"{text!r} in the journal of {unit}", timeout=timeout, interval=0.3
            )
        except TestBedError as exc:
            raise TestBedError(f"{exc}\n{seen[0][-3000:]}") from exc
        return seen[0]

    def remove(self) -> None:
        self.stack.docker("rm", "--force", "--volumes", self.name, check=False, timeout=120)
