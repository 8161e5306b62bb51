"""A compose project shaped like the application this executor was made for (fica-academic's
docker-compose.prod.yml): no top-level `name:` (the project is the directory's name), the
service names db/redis/api/worker/frontend/init-permissions with fixed `container_name`s, a
one-shot `init-permissions` (`restart: "no"`) that api and worker wait for with
`service_completed_successfully`, db with `service_healthy`, ports on 127.0.0.1, an env_file,
and `${VAR}` interpolation from the project's `.env` with the names the worker's own settings
use (REDIS_QUEUE_HOST, COMPOSE_FILE_PATH in a bind mount, REGISTRY_URL, GITHUB_TOKEN).

Images: the busybox base (init-permissions), the local db and cache images, and the bed's
registry images for the backend (api, worker) and the frontend. Nothing public.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from testbed.containers import APP_PORT
from testbed.images import BASE_IMAGE, build_local_image, ensure_base_image, image_id_of
from testbed.stack import Stack

COMPOSE_FILE_NAME = "docker-compose.prod.yml"
APP_ENV_FILE = "backend/src/.env.production"
BACKEND_SERVICES = ("api", "worker")
FRONTEND_SERVICES = ("frontend",)
LOCAL_SERVICES = ("db", "redis", "init-permissions")
# The migration command of the real application: alembic.ini lives in /code/src, which is not
# the image's working directory (here /code/src exists as the parent of the logs volume).
MIGRATION_COMMAND = 'sh -c "cd /code/src && alembic upgrade head"'

_HEALTH = f"""\
    healthcheck:
      test: ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:{APP_PORT}/health"]
      interval: 1s
      timeout: 2s
      retries: 3
"""

# The backend's environment in the real file: interpolated from the shell or the .env.
_BACKEND_ENV = """\
    env_file:
      - ./backend/src/.env.production
    environment:
      APP_NAME: ${APP_NAME}
      POSTGRES_USER: ${POSTGRES_USER}
      POSTGRES_DB: ${POSTGRES_DB}
      POSTGRES_SERVER: ${POSTGRES_SERVER:-db}
      REDIS_QUEUE_HOST: ${REDIS_QUEUE_HOST:-redis}
      REDIS_QUEUE_PORT: ${REDIS_QUEUE_PORT:-6379}
      GHCR_REGISTRY_URL: ${REGISTRY_URL:-https://ghcr.io}
      GITHUB_TOKEN: ${GITHUB_TOKEN:-}
      COMPOSE_FILE_PATH: ${COMPOSE_FILE_PATH:-/host/docker-compose.prod.yml}
      ENVIRONMENT: ${ENVIRONMENT:-production}
      TZ: UTC
"""

_TEMPLATE = (
    """\
# Written by testbed.real_shape: shaped like fica-academic's docker-compose.prod.yml.
services:
  init-permissions:
    image: @BASE_IMAGE@
    container_name: @P@_init_permissions
    user: "0:0"  # `root` in the real file; the busybox test image has no /etc/passwd
    volumes:
      - logs-prod:/code/src/app/logs
      - uploads-prod:/code/uploads
    command: >
      sh -c "chmod -R 777 /code/src/app/logs /code/uploads && echo 'permissions set'"
    restart: "no"
    networks:
      - prod-network

  db:
    image: @DB_IMAGE@
    container_name: @P@_db_prod
    restart: always
    env_file:
      - ./backend/src/.env.production
    environment:
      POSTGRES_USER: ${POSTGRES_USER}
      POSTGRES_DB: ${POSTGRES_DB}
      TZ: UTC
    ports:
      - "127.0.0.1::5432"
    healthcheck:
      test: ["CMD-SHELL", "test -n \\"$$POSTGRES_USER\\" && wget -q -O- http://127.0.0.1:@PORT@/health"]
      interval: 1s
      timeout: 2s
      retries: 5
    networks:
      - prod-network

  redis:
    image: @CACHE_IMAGE@
    container_name: @P@_redis_prod
    restart: always
    ports:
      - "127.0.0.1::6379"
    networks:
      - prod-network

  api:
    image: @BACKEND@
    container_name: @P@_api_prod
    restart: always
"""
    + _BACKEND_ENV
    + """\
    volumes:
      - uploads-prod:/code/uploads
      - logs-prod:/code/src/app/logs
      - app-data:/data
      - ${COMPOSE_FILE_PATH:-${PWD}}:/host:ro
    ports:
      - "127.0.0.1::@PORT@"
    depends_on:
      init-permissions:
        condition: service_completed_successfully
      db:
        condition: service_healthy
      redis:
        condition: service_started
"""
    + _HEALTH
    + """\
    networks:
      - prod-network

  frontend:
    image: @FRONTEND@
    container_name: @P@_frontend_prod
    restart: always
    ports:
      - "127.0.0.1::@PORT@"
    depends_on:
      - api
"""
    + _HEALTH
    + """\
    networks:
      - prod-network

  worker:
    image: @BACKEND@
    container_name: @P@_worker_prod
    restart: always
"""
    + _BACKEND_ENV
    + """\
    volumes:
      - uploads-prod:/code/uploads
      - logs-worker-prod:/code/src/app/logs
    command: ["/app/work"]
    depends_on:
      init-permissions:
        condition: service_completed_successfully
      db:
        condition: service_healthy
      redis:
        condition: service_started
    networks:
      - prod-network

volumes:
  postgres-data-prod:
  uploads-prod:
  logs-prod:
  logs-worker-prod:
  app-data:

networks:
  prod-network:
    driver: bridge
"""
)


@dataclass(frozen=True)
class RealShapedProject:
    directory: Path  # its name is the compose project's name
    compose_file: Path
    dotenv: dict[str, str]  # what the project's .env says

    @property
    def project(self) -> str:
        return self.directory.name


def write_real_shaped_project(
    stack: Stack, directory: Path, *, backend_repo: str, frontend_repo: str
) -> RealShapedProject:
    """Write the compose file, its `.env` and `backend/src/.env.production` into `directory`
    (whose name becomes the project's: keep it short and unique). Registry images are
    `{registry}/{repo}:latest`; build and push them with `build_app_image` (not done here)."""
    directory.mkdir(parents=True, exist_ok=True)
    ensure_base_image(stack)
    local = {}
    for name in ("db", "cache"):
        ref = f"127.0.0.1:9/local/{name}:1"
        local[name] = ref if image_id_of(stack, ref) is not None else build_local_image(stack, name)
    text = (
        _TEMPLATE.replace("@P@", directory.name)
        .replace("@BASE_IMAGE@", BASE_IMAGE)
        .replace("@DB_IMAGE@", local["db"])
        .replace("@CACHE_IMAGE@", local["cache"])
        .replace("@BACKEND@", f"{stack.registry}/{backend_repo}:latest")
        .replace("@FRONTEND@", f"{stack.registry}/{frontend_repo}:latest")
        .replace("@PORT@", str(APP_PORT))
    )
    compose_file = directory / COMPOSE_FILE_NAME
    compose_file.write_text(text)
    # What the containers need, under the names the worker's settings use too: inside the
    # containers Redis is `redis`, the compose directory is mounted from here, and so on.
    dotenv = {
        "APP_NAME": "FICA Academic (test bed)",
        "POSTGRES_USER": "fica",
        "POSTGRES_DB": "fica",
        "REDIS_QUEUE_HOST": "redis",
        "REDIS_QUEUE_PORT": "6379",
        "REGISTRY_URL": "https://ghcr.io",
        "GITHUB_TOKEN": "token-from-the-dotenv",
        "COMPOSE_FILE_PATH": str(directory),
    }
    (directory / ".env").write_text("".join(f"{k}={v}\n" for k, v in dotenv.items()))
    app_env = directory / APP_ENV_FILE
    app_env.parent.mkdir(parents=True, exist_ok=True)
    app_env.write_text("SECRET_KEY=not-a-real-secret\nPOSTGRES_PASSWORD=not-real\n")
    return RealShapedProject(directory, compose_file, dotenv)
