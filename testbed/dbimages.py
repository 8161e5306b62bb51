"""Real database parts for the test bed: PostgreSQL and an Alembic app, from Debian packages.

Nothing comes from a public image registry: `rootfs_tarball()` (testbed/systemd.py's recipe)
debootstraps Debian 12 minbase with DB_PACKAGES from the archive apt already uses and caches
the tarball in CACHE_DIR (keyed on suite, mirror, packages and DB_ROOTFS_VERSION); the bed's
dockerd imports it once per bed as BASE_IMAGE, and two small Dockerfiles build on it:

- `build_db_image(stack)`: Debian's PostgreSQL 15 (never pushed, like postgres in
  production). The entrypoint runs as the unprivileged `postgres` user; at the first start
  (empty PGDATA, a volume) it runs initdb with POSTGRES_USER as superuser and
  POSTGRES_PASSWORD (read from the environment, never on a command line), creates
  POSTGRES_DB, and listens on every address (scram-sha-256 from the network; trust on the
  container's own socket and loopback, as the official image does, so `docker exec db
  pg_dump -U app app` needs no password). HEALTHCHECK: `pg_isready` over TCP, which only
  answers once the server listens for real. pg_dump, pg_restore and psql are on PATH.
- `build_app_image(stack, version)`: python3 with Debian's SQLAlchemy 1.4, psycopg2 and
  Alembic 1.8, carrying testbed/dbapp: `alembic.ini`, `migrations/env.py` (URL from
  POSTGRES_* variables, `transaction_per_migration=True`) and the revisions of its version
  (CHAINS: v1 creates items, v2 adds a filled column, v3 fails half-way, v4 follows v2 with a
  revision that has no downgrade()). Its command serves GET /health on APP_PORT: 200 only
  when the database's alembic_version equals the head its code expects (the last revision it
  carries), else 503; a HEALTHCHECK calls it. Pushed to the bed's registry, as an
  application image is.

`write_db_project()` writes a compose project {db, api} (`DbProject`); its `migrate()` runs
`docker compose exec api alembic upgrade head`, as the worker's migration step does;
`publish_version()` pushes a version as `:latest` to the registry only, as CI releases one.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import threading
import time
import urllib.error
import uuid
from dataclasses import dataclass
from pathlib import Path

from testbed.containers import APP_PORT, containers, http_get, service_url
from testbed.images import LOCAL_REGISTRY, build_context, image_id_of
from testbed.procs import wait_until
from testbed.stack import Stack
from testbed.systemd import CACHE_DIR, apt_mirror, rootfs_key, rootfs_tarball

log = logging.getLogger(__name__)

DB_PACKAGES = ("postgresql", "python3", "python3-sqlalchemy", "python3-psycopg2", "alembic")
# Bump when PRUNE or anything else done to the tree changes: it is part of the cache key.
DB_ROOTFS_VERSION = 2
# Removed before the tarball is made: downloaded .debs, docs, translations, locale sources
# (initdb uses the built-in C.UTF-8), the 15/main cluster that postgresql's postinst creates
# (the image runs initdb into its own volume instead), and PostgreSQL's LLVM JIT with what
# only it needs (130 MB of 490; without llvmjit.so the server runs with JIT unavailable).
PRUNE = (
    "var/cache/apt/archives/*.deb",
    "var/lib/apt/lists/*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/locale/*",
    "usr/share/i18n/locales/*",
    "var/lib/postgresql/15",
    "etc/postgresql/15",
    "var/log/postgresql/*",
    "usr/lib/postgresql/15/lib/llvmjit*",
    "usr/lib/postgresql/15/lib/bitcode",
    "usr/lib/*/libLLVM-*",
    "usr/lib/*/libz3.so*",
)
PG_BIN = "/usr/lib/postgresql/15/bin"
DB_IMAGE = f"{LOCAL_REGISTRY}/local/postgres:15"
DB_PORT = 5432
APP_DIR = Path(__file__).resolve().parent / "dbapp"
APP_VERSIONS = (1, 2, 3, 4)
# The revisions each version carries, oldest first; the last one is the head its code expects.
# v4 follows v2 (v3's revision never succeeds); its revision has no downgrade().
CHAINS = {1: (1,), 2: (1, 2), 3: (1, 2, 3), 4: (1, 2, 4)}
REVISIONS = {1: "1a7c3e5b9d01", 2: "2b8d4f6a0e12", 3: "3c9e5a7b1f23", 4: "4d0f6b8c2a34"}
API_SERVICE = "api"
DB_SERVICE = "db"
_REPO_RE = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_lock = threading.Lock()


def db_rootfs_key(mirror: str) -> str:
    """The cache key of the database rootfs tarball (and the base image's tag)."""
    return rootfs_key(mirror, DB_PACKAGES, DB_ROOTFS_VERSION)


def db_rootfs_tarball(cache_dir: Path = CACHE_DIR) -> Path:
    """The cached Debian rootfs with DB_PACKAGES (built by debootstrap when missing)."""
    return rootfs_tarball(
        cache_dir, name="db", packages=DB_PACKAGES, version=DB_ROOTFS_VERSION, prune=PRUNE
    )


def base_image_ref(key: str) -> str:
    """The imported rootfs in a bed's dockerd (never pulled: see testbed/images.py)."""
    return f"{LOCAL_REGISTRY}/ue-testbed/debian-db:{key}"


def ensure_base_image(stack: Stack) -> str:
    """Import the cached rootfs into the bed's dockerd once per bed; return its reference."""
    with _lock:
        ref = base_image_ref(db_rootfs_key(apt_mirror()))
        if image_id_of(stack, ref) is None:
            tarball = db_rootfs_tarball()
            began = time.monotonic()
            stack.docker("import", str(tarball), ref, timeout=600)
            log.info("imported %s as %s in %.1f s", tarball, ref, time.monotonic() - began)
    return ref


def _build(stack: Stack, ref: str, dockerfile: str, files: dict[str, Path]) -> str:
    """`docker build` (legacy builder, no network) of `dockerfile` with `files`
    ({context path: source file or directory}) as context; tag `ref`, return the image ID."""
    context = stack.base_dir / "build" / uuid.uuid4().hex[:12]
    context.mkdir(parents=True)
    try:
        (context / "Dockerfile").write_text(dockerfile)
        for rel, source in files.items():
            target = context / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if source.is_dir():
                shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, target)
        return build_context(stack, ref, context)
    finally:
        shutil.rmtree(context, ignore_errors=True)


_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_DB_DOCKERFILE = f"""\
FROM @BASE@
ENV PATH={PG_BIN}:{_PATH} PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
COPY entrypoint.sh /usr/local/bin/postgres-entrypoint
RUN ["/bin/sh", "-c", "mkdir -p $PGDATA /run/postgresql && \
chown postgres:postgres $PGDATA /run/postgresql && \
chmod 0700 $PGDATA && chmod 2775 /run/postgresql"]
USER postgres
VOLUME /var/lib/postgresql/data
EXPOSE {DB_PORT}
STOPSIGNAL SIGINT
HEALTHCHECK --interval=1s --timeout=3s --start-period=60s --retries=3 \
CMD ["/bin/sh", "-c", \
"pg_isready -q -h 127.0.0.1 -p {DB_PORT} -U \\"${{POSTGRES_USER:-postgres}}\\""]
LABEL io.update-executor.testbed.local="postgres"
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint"]
CMD ["postgres"]
"""


def build_db_image(stack: Stack) -> str:
    """The PostgreSQL image (DB_IMAGE, never pushed), built in the bed's dockerd when missing."""
    if image_id_of(stack, DB_IMAGE) is None:
        base = ensure_base_image(stack)
        dockerfile = _DB_DOCKERFILE.replace("@BASE@", base)
        entrypoint = Path(__file__).resolve().parent / "postgres" / "entrypoint.sh"
        _build(stack, DB_IMAGE, dockerfile, {"entrypoint.sh": entrypoint})
    return DB_IMAGE


_APP_DOCKERFILE = f"""\
FROM @BASE@
ENV PATH={_PATH} LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
APP_PORT={APP_PORT} APP_VERSION=@VERSION@
COPY app/ /app/
WORKDIR /app
USER nobody
EXPOSE {APP_PORT}
HEALTHCHECK --interval=1s --timeout=3s --start-period=5s --retries=3 \
CMD ["python3", "/app/healthcheck.py"]
LABEL org.opencontainers.image.version="@VERSION@" io.update-executor.testbed.schema-head="@HEAD@"
CMD ["python3", "/app/server.py"]
"""


def app_files(version: int) -> dict[str, Path]:
    """The build context of the app at `version`: its code and the revisions 1..version."""
    if version not in APP_VERSIONS:
        raise ValueError(f"version must be one of {APP_VERSIONS}, not {version!r}")
    files = {
        f"app/{name}": APP_DIR / name
        for name in ("alembic.ini", "dburl.py", "server.py", "healthcheck.py")
    }
    for name in ("env.py", "script.py.mako"):
        files[f"app/migrations/{name}"] = APP_DIR / "migrations" / name
    for path in sorted((APP_DIR / "migrations" / "versions").glob("v*_*.py")):
        if int(path.name[1 : path.name.index("_")]) in CHAINS[version]:
            files[f"app/migrations/versions/{path.name}"] = path
    return files


def app_image_ref(stack: Stack, version: int, repo: str = "acme/dbapp") -> str:
    """Where `build_app_image` puts `version`: `{registry}/{repo}:v{version}`."""
    if not _REPO_RE.fullmatch(repo):
        raise ValueError(f"invalid repository name {repo!r}")
    return f"{stack.registry}/{repo}:v{version}"


def build_app_image(
    stack: Stack, version: int, *, repo: str = "acme/dbapp", push: bool = True
) -> str:
    """Build the app at `version` (APP_VERSIONS) as `{registry}/{repo}:v{version}`, push it (the
    daemon keeps it tagged too), return the reference. Its health wants REVISIONS[version]."""
    files = app_files(version)  # refuses an unknown version before anything is built
    ref = app_image_ref(stack, version, repo)
    base = ensure_base_image(stack)
    dockerfile = (
        _APP_DOCKERFILE.replace("@BASE@", base)
        .replace("@VERSION@", str(version))
        .replace("@HEAD@", REVISIONS[version])
    )
    _build(stack, ref, dockerfile, files)
    if push:
        stack.docker("push", ref, logged_in=True, timeout=300)
    return ref


def publish_version(stack: Stack, version: int, *, repo: str = "acme/dbapp") -> str:
    """Release `version` as CI would: push it as `{registry}/{repo}:latest` to the registry
    only; the daemon's `:latest` keeps pointing at what it pointed at (the containers' image),
    so only a pull brings the new one. Returns the image ID a pull gives."""
    ref = build_app_image(stack, version, repo=repo)
    latest = f"{stack.registry}/{repo}:latest"
    previous = image_id_of(stack, latest)
    stack.docker("tag", ref, latest)
    stack.docker("push", latest, logged_in=True, timeout=300)
    if previous is not None:
        stack.docker("tag", previous, latest)
    else:
        stack.docker("image", "rm", latest)
    image_id = image_id_of(stack, ref)
    if image_id is None:
        raise RuntimeError(f"{ref} vanished after its push")
    return image_id


COMPOSE_FILE_NAME = "docker-compose.yml"
ENV_FILE_NAME = "db.env"
_COMPOSE = f"""\
# Written by testbed.dbimages.write_db_project: PostgreSQL and an Alembic app.
name: @PROJECT@

services:
  {DB_SERVICE}:
    image: @DB_IMAGE@
    env_file: {ENV_FILE_NAME}
    volumes:
      - db-data:/var/lib/postgresql/data@DB_SOCKET@

  {API_SERVICE}:
    # Migrations: docker compose exec {API_SERVICE} alembic upgrade head
    image: @APP_IMAGE@
    env_file: {ENV_FILE_NAME}
    environment:
      POSTGRES_SERVER: @SERVER@
      POSTGRES_PORT: "{DB_PORT}"@API_SOCKET@
    ports:
      - "127.0.0.1::{APP_PORT}"
    depends_on:
      {DB_SERVICE}:
        condition: service_healthy

volumes:
  db-data: {{}}@SOCKET_VOLUME@
"""
SOCKET_DIR = "/run/postgresql"


@dataclass(frozen=True)
class DbProject:
    """A compose project {db, api} on the bed; `api` runs `app_image` (a tag the tests move,
    as CI moves `latest`: `run_version()` points it at another version and recreates api)."""

    stack: Stack
    project: str
    compose_file: Path
    app_image: str  # {registry}/{repo}:latest
    db_user: str = "app"
    db_name: str = "app"

    def compose(self, *args: str, check: bool = True, timeout: float = 300.0) -> str:
        """`docker compose ARGS` in the project; stdout."""
        done = self.stack.compose(
            self.compose_file, self.project, *args, check=check, timeout=timeout
        )
        return done.stdout

    def alembic(self, *args: str, check: bool = True) -> tuple[int, str]:
        """`docker compose exec api alembic ARGS`: (exit status, stdout + stderr)."""
        done = self.stack.compose(
            self.compose_file, self.project, "exec", "-T", API_SERVICE, "alembic", *args,
            check=check, timeout=300,
        )  # fmt: skip
        return done.returncode, done.stdout + done.stderr

    def migrate(self, *, check: bool = True) -> tuple[int, str]:
        """What the worker's migration step runs: `alembic upgrade head` in api."""
        return self.alembic("upgrade", "head", check=check)

    def current_revision(self) -> str | None:
        """The first token of `alembic current` (None before any migration)."""
        _status, out = self.alembic("current")
        for line in out.splitlines():
            words = line.split()
            if words and re.fullmatch(r"[0-9a-f]{12}", words[0]):
                return words[0]
        return None

    def psql(self, sql: str, **variables: str) -> list[list[str]]:
        """Run SQL (given on stdin) with psql in the db container; the rows, as text.
        `variables` are psql variables (`:'name'` in the SQL quotes one as a literal)."""
        args = [arg for name, value in variables.items() for arg in ("-v", f"{name}={value}")]
        done = self.stack.compose(
            self.compose_file, self.project, "exec", "-T", DB_SERVICE,
            "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-A", "-t", "-F", "\t", *args,
            "-U", self.db_user, "-d", self.db_name, "-f", "-",
            input=sql, timeout=120,
        )  # fmt: skip
        return [line.split("\t") for line in done.stdout.splitlines() if line]

    def columns(self, table: str) -> list[str]:
        """The columns of `table` in order (empty when the table does not exist)."""
        rows = self.psql(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = :'table' ORDER BY ordinal_position",
            table=table,
        )
        return [row[0] for row in rows]

    def indexes(self, table: str) -> list[str]:
        """The names of `table`'s indexes."""
        rows = self.psql(
            "SELECT indexname FROM pg_indexes WHERE tablename = :'table' ORDER BY 1", table=table
        )
        return [row[0] for row in rows]

    def run_version(self, version_ref: str) -> None:
        """Point the local `app_image` tag at `version_ref` and recreate api (no wait): a
        version change by hand, without the registry (see `publish_version` for that)."""
        self.stack.docker("tag", version_ref, self.app_image)
        self.compose("up", "-d", API_SERVICE)

    def pull_and_recreate(self) -> None:
        """`docker compose pull api` (logged in) then `up -d api`: what an update does."""
        self.stack.compose(
            self.compose_file, self.project, "pull", API_SERVICE, logged_in=True, timeout=300
        )
        self.compose("up", "-d", API_SERVICE)

    def health(self) -> str | None:
        """api's Docker health status (healthy, unhealthy, starting; None without one)."""
        info = containers(self.stack, self.project).get(API_SERVICE)
        return info.health if info is not None else None

    def wait_health(self, wanted: str, timeout: float = 60.0) -> None:
        """Wait until api's Docker health status is `wanted`."""
        wait_until(
            lambda: self.health() == wanted,
            what=f"{self.project} api {wanted}",
            timeout=timeout,
            interval=0.3,
        )

    def health_endpoint(self) -> tuple[int, str]:
        """GET /health on api's published port: (HTTP status, body)."""
        url = service_url(self.stack, self.container(API_SERVICE)) + "/health"
        try:
            return 200, http_get(url)
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.read().decode()

    def container(self, service: str) -> str:
        """The name of `service`'s container."""
        return containers(self.stack, self.project)[service].name


# A Docker healthcheck that says only "the app serves" (GET /health answers, 200 or 503): an
# update migrates once its recreated services are healthy, and the image's own healthcheck
# (200 only at the schema its code expects) would never let a new version get there.
SERVING = [
    "CMD", "python3", "-c",
    "import urllib.request as r, urllib.error as e\n"
    f"try: r.urlopen('http://127.0.0.1:{APP_PORT}/health', timeout=3)\n"
    "except e.HTTPError: pass",
]  # fmt: skip


def add_post_update_hook(project: DbProject, hook: str = "false") -> None:
    """Give api a post-update hook (`update-executor.post-update`, run in the new container after
    the migrations; `false` fails every update after its migration) and the SERVING
    healthcheck. GET /health (`DbProject.health_endpoint`) still says whether the schema fits."""
    text = project.compose_file.read_text()
    hooked = text.replace(
        f"  {API_SERVICE}:\n",
        f"  {API_SERVICE}:\n    labels:\n      update-executor.post-update: {json.dumps(hook)}\n"
        f"    healthcheck:\n      test: {json.dumps(SERVING)}\n"
        "      interval: 1s\n      timeout: 10s\n      retries: 10\n      start_period: 60s\n",
        1,
    )
    if hooked == text:
        raise ValueError(f"no {API_SERVICE} service in {project.compose_file}")
    project.compose_file.write_text(hooked)


def compose_text(project: str, db_image: str, app_image: str, *, via_socket: bool = False) -> str:
    """The compose file of a {db, api} project (see `write_db_project`)."""
    api_volumes = f"\n    volumes:\n      - db-socket:{SOCKET_DIR}"
    return (
        _COMPOSE.replace("@PROJECT@", project)
        .replace("@DB_IMAGE@", db_image)
        .replace("@APP_IMAGE@", app_image)
        .replace("@SERVER@", SOCKET_DIR if via_socket else DB_SERVICE)
        .replace("@DB_SOCKET@", f"\n      - db-socket:{SOCKET_DIR}" if via_socket else "")
        .replace("@API_SOCKET@", api_volumes if via_socket else "")
        .replace("@SOCKET_VOLUME@", "\n  db-socket: {}" if via_socket else "")
    )


def write_db_project(
    stack: Stack,
    directory: Path,
    project: str,
    *,
    repo: str = "acme/dbapp",
    version: int = 1,
    db_password: str | None = None,
    via_socket: bool = False,
) -> DbProject:
    """Write `docker-compose.yml` and `db.env` (0600) for {db, api} in `directory`, build the
    db image and the app at `version` (tagged `{registry}/{repo}:latest` and pushed, the image
    the file names); start nothing. The password is random unless given.

    `via_socket=True`: api reaches db through PostgreSQL's socket directory on a volume both
    mount, not over TCP, for machines where containers cannot reach each other (another
    dockerd's FORWARD policy DROP with br_netfilter, see testbed/dockerd.py)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", project):
        raise ValueError(f"invalid compose project name {project!r}")
    directory.mkdir(parents=True, exist_ok=True)
    db_image = build_db_image(stack)
    ref = build_app_image(stack, version, repo=repo)
    app_image = f"{stack.registry}/{repo}:latest"
    stack.docker("tag", ref, app_image)
    stack.docker("push", app_image, logged_in=True, timeout=300)
    env_file = directory / ENV_FILE_NAME
    env_file.touch(mode=0o600)
    env_file.write_text(
        "POSTGRES_USER=app\n"
        f"POSTGRES_PASSWORD={db_password or secrets.token_urlsafe(18)}\n"
        "POSTGRES_DB=app\n"
    )
    compose_file = directory / COMPOSE_FILE_NAME
    compose_file.write_text(compose_text(project, db_image, app_image, via_socket=via_socket))
    return DbProject(stack, project, compose_file, app_image)
