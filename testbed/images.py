"""Test images, built FROM scratch with Debian's static busybox; nothing comes from the internet.

- The base image (busybox installed in /bin) is built once per bed and reused.
- App images (`build_app_image`) are pushed to the bed's registry. Their content depends on
  version and behaviour, so every version/behaviour has its own digest.
- Local images (`build_local_image`) are never pushed, like postgres or redis in production.

Images that must never be pulled (base, local ones) are named under 127.0.0.1:9, where nothing
listens: a stray `docker pull`/`compose pull` of them fails at once on loopback instead of
asking Docker Hub. The legacy builder (DOCKER_BUILDKIT=0, there is no buildx here) runs with
`--network none`: RUN steps need no network.

App image layout (HEALTHCHECK is *not* in the image: the compose file sets it, as in production):
- `/app/entrypoint` (ENTRYPOINT): runs the command; for `crash` it exits 1 at once instead, for
  every container of the image (api, worker, init_db alike);
- `/app/serve` (default CMD): `busybox httpd -f -p 8080 -h /www`;
- `/www/version` = the version text (no newline), `/www/health` = "ok" (absent for `unhealthy`);
- `/app/migrate`: appends "migrated <version>" to /data/migrations.log, prints
  "migrated to <version>", exit 0; for `migrate_fail` it prints an error to stderr and exits 3.
  `/usr/local/bin/alembic upgrade ...` runs it too, so the worker's default `alembic upgrade
  head` works; any other alembic command exits 2 (no revision here: `alembic current`, the
  revision probe of issue 23, finds none and the database rollback stays off, as on a site
  without Alembic: testbed/dbimages.py has the real one);
- `/app/work`: a long-running worker (prints a line, then sleeps).
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import threading
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from testbed.containers import APP_PORT, container_ids, running_image_ids
from testbed.stack import Stack

# Re-exported: callers may import these two from here as well as from testbed.containers.
__all__ = ["container_ids", "running_image_ids"]

LOCAL_REGISTRY = "127.0.0.1:9"
BASE_IMAGE = f"{LOCAL_REGISTRY}/ue-testbed/busybox:1"
BEHAVIOURS = ("healthy", "unhealthy", "crash", "migrate_fail")
BUSYBOX = Path("/bin/busybox")

_MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    )
)
_VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_REPO_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
_base_lock = threading.Lock()

_BASE_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN ["/bin/sh", "-c", "mkdir -p /tmp /etc /data && chmod 1777 /tmp"]
LABEL io.update-executor.testbed.image="base"
CMD ["/bin/sh"]
"""


def _build(stack: Stack, ref: str, dockerfile: str, files: dict[str, tuple[str, int]]) -> str:
    """Build `dockerfile` with `files` ({path: (text, mode)}) as context, tag `ref`; return ID."""
    context = stack.base_dir / "build" / uuid.uuid4().hex[:12]
    context.mkdir(parents=True)
    try:
        (context / "Dockerfile").write_text(dockerfile)
        for rel, (text, mode) in files.items():
            path = context / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(mode)
        if "FROM scratch" in dockerfile:
            shutil.copy2(BUSYBOX, context / "busybox")
        return build_context(stack, ref, context)
    finally:
        shutil.rmtree(context, ignore_errors=True)


def build_context(stack: Stack, ref: str, context: Path) -> str:
    """`docker build` of the directory `context` (no network, no BuildKit), tagged `ref`;
    the image's ID."""
    stack.docker(
        "build",
        "--network",
        "none",
        "--quiet",
        "--tag",
        ref,
        str(context),
        env={"DOCKER_BUILDKIT": "0"},
        timeout=300,
    )
    image_id = image_id_of(stack, ref)
    if image_id is None:
        raise RuntimeError(f"docker build reported success but {ref} does not exist")
    return image_id


def image_id_of(stack: Stack, ref: str) -> str | None:
    """Local image ID (sha256:...) of `ref` in the bed's daemon, None if absent."""
    done = stack.docker("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    if done.returncode != 0:
        return None
    return done.stdout.strip() or None


def ensure_base_image(stack: Stack) -> str:
    """Build the busybox base image once per bed; return its reference."""
    with _base_lock:
        if image_id_of(stack, BASE_IMAGE) is None:
            if not BUSYBOX.is_file():
                raise FileNotFoundError(f"{BUSYBOX} missing: install busybox-static")
            _build(stack, BASE_IMAGE, _BASE_DOCKERFILE, {})
    return BASE_IMAGE


def _check_names(repo: str, version: str) -> None:
    if not _REPO_RE.match(repo):
        raise ValueError(f"invalid repository name {repo!r}")
    if not _VERSION_RE.match(version):
        raise ValueError(f"invalid version {version!r}: use [A-Za-z0-9._+-]")


def _app_files(version: str, behaviour: str) -> dict[str, tuple[str, int]]:
    if behaviour == "crash":
        entrypoint = (
            "#!/bin/sh\n"
            f'echo "app {version}: fatal error at start-up (crash behaviour)" >&2\n'
            "exit 1\n"
        )
    else:
        entrypoint = '#!/bin/sh\nexec "$@"\n'
    if behaviour == "migrate_fail":
        migrate = (
            "#!/bin/sh\n"
            f'echo "migration to {version} failed: relation \\"users\\" already exists" >&2\n'
            "exit 3\n"
        )
    else:
        migrate = (
            "#!/bin/sh\nset -e\nmkdir -p /data\n"
            f'echo "migrated {version}" >> /data/migrations.log\n'
            f'echo "migrated to {version}"\n'
        )
    files = {
        "app/entrypoint": (entrypoint, 0o755),
        "app/serve": (
            f'#!/bin/sh\necho "app {version} listening on :{APP_PORT}"\n'
            f"exec httpd -f -p {APP_PORT} -h /www\n",
            0o755,
        ),
        "app/work": (
            f'#!/bin/sh\necho "worker {version} started"\nexec sleep 2147483647\n',
            0o755,
        ),
        "app/migrate": (migrate, 0o755),
        "app/VERSION": (version, 0o644),
        "bin/alembic": (
            '#!/bin/sh\n# stands in for "alembic upgrade head" only\n'
            'case "$1" in upgrade) exec /app/migrate ;; esac\n'
            'echo "alembic stand-in: only upgrade is known" >&2\nexit 2\n',
            0o755,
        ),
        "www/version": (version, 0o644),
        "www/behaviour": (behaviour, 0o644),
    }
    if behaviour != "unhealthy":
        files["www/health"] = ("ok", 0o644)
    return files


def build_app_image(
    stack: Stack,
    repo: str,
    version: str,
    behaviour: str = "healthy",
    *,
    tag: str = "latest",
    push: bool = True,
    registry_only: bool = False,
) -> str:
    """Build `{registry}/{repo}:{tag}` for `version`/`behaviour`, push it, return the reference.

    By default the new image stays tagged in the bed's daemon (and, being pushed, knows its
    repo digest), so `compose up` can use it without a pull.

    `registry_only=True` leaves the daemon as it was before the build: the tag points again
    at the image it pointed at (or at nothing) and the new image is deleted if nothing uses
    it. The registry is then the only place the new version exists, as on a production host
    when CI pushed a release: only a pull brings it (and downloads its layers again).
    """
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"behaviour must be one of {BEHAVIOURS}, not {behaviour!r}")
    _check_names(repo, version)
    ensure_base_image(stack)
    ref = f"{stack.registry}/{repo}:{tag}"
    previous = image_id_of(stack, ref)
    dockerfile = (
        f"FROM {BASE_IMAGE}\n"
        "COPY app/ /app/\nCOPY www/ /www/\nCOPY bin/ /usr/local/bin/\n"
        f'LABEL org.opencontainers.image.version="{version}" '
        f'io.update-executor.testbed.behaviour="{behaviour}"\n'
        f"ENV APP_VERSION={version}\nEXPOSE {APP_PORT}\n"
        'ENTRYPOINT ["/app/entrypoint"]\nCMD ["/app/serve"]\n'
    )
    new_id = _build(stack, ref, dockerfile, _app_files(version, behaviour))
    if push:
        stack.docker("push", ref, logged_in=True, timeout=300)
    if push and registry_only and new_id != previous:
        if previous is not None:
            stack.docker("tag", previous, ref)
        else:
            stack.docker("image", "rm", ref, check=False)
        # Fails harmlessly when a container or another tag still uses it.
        stack.docker("image", "rm", new_id, check=False)
    return ref


def build_local_image(stack: Stack, name: str, version: str = "1") -> str:
    """Build a never-pushed, long-running image (a db-like or cache-like service).

    It runs `busybox httpd -f -p 8080 -h /www` and serves /www/health ("ok") and
    /www/version. Returns `127.0.0.1:9/local/{name}:{version}` (see the module docstring).
    """
    _check_names(f"local/{name}", version)
    ensure_base_image(stack)
    ref = f"{LOCAL_REGISTRY}/local/{name}:{version}"
    dockerfile = (
        f"FROM {BASE_IMAGE}\nCOPY www/ /www/\n"
        f'LABEL io.update-executor.testbed.local="{name}"\n'
        f"EXPOSE {APP_PORT}\n"
        f'CMD ["httpd", "-f", "-p", "{APP_PORT}", "-h", "/www"]\n'
    )
    files = {
        "www/health": ("ok", 0o644),
        "www/version": (version, 0o644),
        "www/name": (name, 0o644),
    }
    _build(stack, ref, dockerfile, files)
    return ref


def _registry_request(
    stack: Stack, method: str, path: str, headers: dict[str, str]
) -> tuple[int, dict[str, str]]:
    token = base64.b64encode(
        f"{stack.registry_username}:{stack.registry_password}".encode()
    ).decode()
    request = urllib.request.Request(  # always http://127.0.0.1:PORT (the bed)
        f"http://{stack.registry}{path}",
        method=method,
        headers={"Authorization": f"Basic {token}", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, dict(response.headers.items())
    except urllib.error.HTTPError as err:
        err.close()
        return err.code, dict(err.headers.items())


def registry_digest(stack: Stack, repo: str, tag: str = "latest") -> str | None:
    """The manifest digest the registry serves for `repo:tag` now (None if no such tag)."""
    status, headers = _registry_request(
        stack, "HEAD", f"/v2/{repo}/manifests/{tag}", {"Accept": _MANIFEST_TYPES}
    )
    if status == 404:
        return None
    if status != 200:
        raise RuntimeError(f"registry answered {status} for {repo}:{tag}")
    return headers.get("Docker-Content-Digest")


def registry_image_id(stack: Stack, repo: str, tag: str = "latest") -> str:
    """The image ID a pull of `repo:tag` gives: the config digest of its (schema 2) manifest."""
    token = base64.b64encode(
        f"{stack.registry_username}:{stack.registry_password}".encode()
    ).decode()
    request = urllib.request.Request(  # always http://127.0.0.1:PORT (the bed)
        f"http://{stack.registry}/v2/{repo}/manifests/{tag}",
        headers={
            "Authorization": f"Basic {token}",
            "Accept": "application/vnd.docker.distribution.manifest.v2+json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        manifest = json.loads(response.read())
    return str(manifest["config"]["digest"])


def delete_from_registry(stack: Stack, repo: str, tag: str = "latest") -> bool:
    """Delete the manifest `repo:tag` points at (storage.delete is enabled); False if absent."""
    digest = registry_digest(stack, repo, tag)
    if digest is None:
        return False
    status, _headers = _registry_request(
        stack, "DELETE", f"/v2/{repo}/manifests/{digest}", {"Accept": _MANIFEST_TYPES}
    )
    if status != 202:
        raise RuntimeError(f"registry answered {status} to DELETE {repo}@{digest}")
    return True
