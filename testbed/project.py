"""A sample production-shaped compose project for tests, the demo and the benchmark.

The shape mirrors the stack the update worker serves: a database and the Redis that carries
the queue (local images, never updated), a one-shot `init_db` migration, `api` and `worker`
sharing one registry image, and a `frontend` from another registry image.
"""

from __future__ import annotations

from pathlib import Path

from testbed.containers import APP_PORT
from testbed.images import build_local_image, image_id_of
from testbed.stack import Stack

COMPOSE_FILE_NAME = "docker-compose.prod.yml"
ENV_FILE_NAME = "app.env"
REGISTRY_SERVICES = ("init_db", "api", "worker", "frontend")
LOCAL_SERVICES = ("db", "cache")

# Fast for tests; no start_interval (needs Engine 25+, this is 20.10). `wget -T` is avoided on
# purpose: Debian's static busybox 1.35 wget segfaults with it; compose's timeout bounds it.
HEALTHCHECK = f"""\
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:{APP_PORT}/health"]
      interval: 1s
      timeout: 2s
      retries: 3
"""

_TEMPLATE = """\
# Written by testbed.project.write_sample_project: shaped like a production stack.
name: @PROJECT@

services:
  db:
    image: @DB_IMAGE@
    init: true@RESTART@
@HEALTHCHECK@
  cache:
    # Stands in for the Redis that carries the update queue: an update must not touch it.
    image: @CACHE_IMAGE@
    init: true@RESTART@

  init_db:
    image: @APP_IMAGE@
    restart: "no"
    command: ["/app/migrate"]
    volumes:
      - app-data:/data
    depends_on:
      db:
        condition: service_healthy

  api:
    image: @APP_IMAGE@
    container_name: @PROJECT@-api
    init: true@RESTART@
    env_file: @ENV_FILE@
    environment:
      APP_ENV: ${APP_ENV:-production}
      APP_ROLE: api
    ports:
      - "127.0.0.1::@PORT@"
    volumes:
      - app-data:/data
@HEALTHCHECK@    depends_on:
      db:
        condition: service_healthy
      init_db:
        condition: service_completed_successfully

  worker:
    image: @APP_IMAGE@
    command: ["/app/work"]
    init: true@RESTART@
    env_file: @ENV_FILE@
    environment:
      APP_ROLE: worker
    volumes:
      - app-data:/data
    depends_on:
      db:
        condition: service_healthy

  frontend:
    image: @FRONTEND_IMAGE@
    init: true@RESTART@
@HEALTHCHECK@    depends_on:
      - api

volumes:
  app-data: {}
"""


def write_sample_project(
    stack: Stack,
    directory: Path,
    project: str,
    *,
    app_repo: str = "acme/app",
    frontend_repo: str = "acme/frontend",
    tag: str = "latest",
    restart: str | None = None,
) -> Path:
    """Write `docker-compose.prod.yml` and `app.env` into `directory`; return the file's path.

    The registry images are referenced as `{stack.registry}/{app_repo}:{tag}` and
    `{stack.registry}/{frontend_repo}:{tag}`; build and push them with `build_app_image`
    (this function does not). The local `db` and `cache` images are built here if missing.
    `restart` (e.g. "unless-stopped") is set on the long-running services when given; by
    default they have none, so a crashing container stays exited instead of looping.
    The file has `name: <project>`, so compose finds the project without `-p` too.
    """
    directory.mkdir(parents=True, exist_ok=True)
    db_image = local_image(stack, "db")
    cache_image = local_image(stack, "cache")
    text = (
        _TEMPLATE.replace("@HEALTHCHECK@", HEALTHCHECK)
        .replace("@RESTART@", f"\n    restart: {restart}" if restart else "")
        .replace("@PROJECT@", project)
        .replace("@DB_IMAGE@", db_image)
        .replace("@CACHE_IMAGE@", cache_image)
        .replace("@APP_IMAGE@", f"{stack.registry}/{app_repo}:{tag}")
        .replace("@FRONTEND_IMAGE@", f"{stack.registry}/{frontend_repo}:{tag}")
        .replace("@ENV_FILE@", ENV_FILE_NAME)
        .replace("@PORT@", str(APP_PORT))
    )
    (directory / ENV_FILE_NAME).write_text(
        f"APP_NAME={project}\nDATABASE_URL=postgresql://app@db:5432/app\nLOG_LEVEL=info\n"
    )
    compose_file = directory / COMPOSE_FILE_NAME
    compose_file.write_text(text)
    return compose_file


def local_image(stack: Stack, name: str) -> str:
    """The local (never pulled) image `name` (db, cache), built when missing."""
    ref = f"127.0.0.1:9/local/{name}:1"
    if image_id_of(stack, ref) is None:
        ref = build_local_image(stack, name, "1")
    return ref
