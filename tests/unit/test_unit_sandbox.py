"""Every path the worker writes with its default settings is writable under the systemd unit's
sandbox (issue 11). Fast: the unit is parsed, nothing runs. The proof under a real systemd is
tests/integration/test_systemd.py; this catches a new default path or a changed unit at once.

Under `ProtectSystem=strict` the file system is read-only except the service's own
directories (`RuntimeDirectory=` in /run, `StateDirectory=` in /var/lib, `LogsDirectory=` in
/var/log, `CacheDirectory=` in /var/cache), `ReadWritePaths=`, and with `PrivateTmp=` a /tmp
and /var/tmp of its own; `ProtectHome=yes` hides /home, /root and /run/user.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from worker.host.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
UNIT = REPO_ROOT / "deploy" / "systemd" / "update-executor.service"
ENV_EXAMPLE = REPO_ROOT / "deploy" / "update-executor.env.example"
DIRECTORY_ROOTS = {
    "RuntimeDirectory": "/run",
    "StateDirectory": "/var/lib",
    "LogsDirectory": "/var/log",
    "CacheDirectory": "/var/cache",
}
HIDDEN_BY_PROTECT_HOME = ("/home", "/root", "/run/user")


def directives(path: Path) -> dict[str, list[str]]:
    """Key -> values (a key may repeat), from a unit file's [Service] section."""
    out: dict[str, list[str]] = defaultdict(list)
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()].append(value.strip())
    return out


def env_file(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs if not key.startswith("#")}


def writable_roots(unit: dict[str, list[str]]) -> list[Path]:
    assert unit["ProtectSystem"] == ["strict"], "the rest of this test assumes strict"
    roots = [Path(p.lstrip("-+")) for v in unit.get("ReadWritePaths", []) for p in v.split()]
    for key, parent in DIRECTORY_ROOTS.items():
        roots += [Path(parent) / name for v in unit.get(key, []) for name in v.split()]
    if unit.get("PrivateTmp") == ["yes"]:
        roots += [Path("/tmp"), Path("/var/tmp")]
    return roots


def unit_environment(unit: dict[str, list[str]]) -> dict[str, str]:
    """The worker's environment under the unit: Environment= lines, then the env file (which
    systemd reads after them, so it wins), the documented example for it."""
    env = dict(value.split("=", 1) for value in unit.get("Environment", []))
    env.update(env_file(ENV_EXAMPLE))
    return env


def written_paths(env: dict[str, str]) -> dict[str, Path]:
    """What the worker and the playbook it runs write, with `env` and defaults otherwise."""
    settings = Settings.from_env(env)
    home = Path(env["HOME"])
    assert settings.log_file is not None
    # tempfile.gettempdir(), where the per-job dirs go: TMPDIR, else /tmp.
    tempdir = Path(env.get("TMPDIR", "/tmp"))
    return {
        "UPDATE_LOCK_DIR (lock, rollback point)": settings.lock_dir,
        "BACKUP_DIR": settings.backup_dir,
        "LOG_FILE": settings.log_file.parent,
        "ansible's ~/.ansible/tmp": home / ".ansible" / "tmp",
        "docker's ~/.docker (no token configured)": home / ".docker",
        "the per-job work dirs": tempdir,
    }


def test_every_path_the_worker_writes_is_writable_under_the_sandbox() -> None:
    unit = directives(UNIT)
    roots = writable_roots(unit)
    env = unit_environment(unit)
    not_writable = {
        what: str(path)
        for what, path in written_paths(env).items()
        if not any(path.is_relative_to(root) for root in roots)
    }
    assert not_writable == {}, f"read-only under the unit's sandbox (writable: {roots})"
    if unit.get("ProtectHome") == ["yes"]:
        for what, path in written_paths(env).items():
            assert not any(path.is_relative_to(hidden) for hidden in HIDDEN_BY_PROTECT_HOME), what


def test_the_lock_dir_is_a_state_directory_of_the_unit_and_outlives_a_reboot() -> None:
    """The rollback point sits next to the lock: it must survive the worker's automatic
    restart and a reboot of the host (/run is emptied then), or the cut-off update could not
    be rolled back. So the lock dir is on disk, one of the unit's StateDirectory= entries
    (systemd creates it, owned by the service user)."""
    unit = directives(UNIT)
    lock_dir = Settings.from_env(unit_environment(unit)).lock_dir
    entries = [entry for value in unit["StateDirectory"] for entry in value.split()]
    state_dirs = [Path("/var/lib") / entry for entry in entries]
    assert lock_dir in state_dirs
    assert not lock_dir.is_relative_to("/run")
    assert "RuntimeDirectory" not in unit  # nothing of the worker's lives in /run any more
    assert unit["Restart"] == ["always"]


@pytest.mark.parametrize(
    ("setting", "value"),
    [("UPDATE_LOCK_DIR", "/var/run-elsewhere"), ("BACKUP_DIR", "/var/backups/update-executor")],
)
def test_a_path_outside_the_sandbox_is_caught(setting: str, value: str) -> None:
    unit = directives(UNIT)
    roots = writable_roots(unit)
    paths = written_paths({**unit_environment(unit), setting: value})
    assert not all(any(p.is_relative_to(root) for root in roots) for p in paths.values())


def credential_ids(values: list[str]) -> list[str]:
    return [value.split(":", 1)[0] for value in values]


def test_the_unit_starts_without_a_registry_token_but_never_without_the_job_secret(
    tmp_path: Path,
) -> None:
    """Issue 25: a `LoadCredential=` whose file is missing fails the unit (243/CREDENTIALS),
    so a registry that needs no token could not run the worker. `SetCredential=` of the same
    id is the fallback (systemd 252; an empty value is refused there, so a newline), and the
    worker reads what it gives as no token. The job secret has no fallback."""
    unit = directives(UNIT)
    loaded = credential_ids(unit["LoadCredential"])
    fallbacks = dict(value.split(":", 1) for value in unit.get("SetCredential", []))
    assert "github_token" in loaded and "job_secret" in loaded
    assert fallbacks.keys() == {"github_token"}, fallbacks
    assert fallbacks["github_token"] == "\\n"  # C-style escape: one newline
    # What the service then finds in $CREDENTIALS_DIRECTORY: a token-less worker.
    (tmp_path / "github_token").write_text("\n")
    env = {**unit_environment(unit), "CREDENTIALS_DIRECTORY": str(tmp_path), "LOG_FILE": ""}
    assert not Settings.from_env(env).has_registry_token
