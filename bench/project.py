"""Compose stacks for the benchmark: N services, some from the registry, the rest local.

Built on `testbed.project` (its healthcheck, compose file name and local images): local
images (database-like with a healthcheck, cache-like without) are never pulled; registry
images are built with `testbed.build_app_image`, and each registry image runs two services,
a web service with a healthcheck and a worker without one, like the sample project's `api`
and `worker` sharing one image. Every long-running service has `init: true`; healthchecks
run inside the container every second (containers of a bed cannot reach each other here, so
nothing depends on container-to-container traffic).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from testbed.project import COMPOSE_FILE_NAME, HEALTHCHECK, local_image
from testbed.stack import Stack

__all__ = [
    "COMPOSE_FILE_NAME",
    "MIGRATION_COMMAND",
    "MIGRATION_SERVICE",
    "StackShape",
    "write_stack",
]

MIGRATION_SERVICE = "api"
MIGRATION_COMMAND = "/app/migrate"


@dataclass(frozen=True)
class Service:
    """One service of a benchmark stack."""

    name: str
    repo: str | None  # registry repository (None: a local image that is never pulled)
    local_image: str = ""  # "db" or "cache" for local services
    worker: bool = False  # runs /app/work instead of the web server
    depends_on: str | None = None  # a database-like service it waits for (healthy)
    oneshot: bool = False  # restart "no", runs the migration and exits (the real app's init)
    waits_for: str | None = None  # a one-shot service it waits for (completed successfully)

    @property
    def healthcheck(self) -> bool:
        return self.local_image == "db" or (
            self.repo is not None and not self.worker and not self.oneshot
        )


@dataclass(frozen=True)
class StackShape:
    """A stack of `total` services of which `targets` come from the registry."""

    total: int
    targets: int
    # Shaped like the real application (issue 13): db, redis and frontend (local), and on the
    # registry image `api` (healthcheck), `worker` and the one-shot `init` both wait for.
    real: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.targets < self.total:
            raise ValueError("a stack needs at least one local and one registry service")
        if self.real and (self.total, self.targets) != (6, 3):
            raise ValueError("the real application's shape has 6 services, 3 of them targets")

    def services(self, namespace: str) -> list[Service]:
        """The services; registry repositories are `{namespace}/app`, `{namespace}/svcN`."""
        if self.real:
            app = f"{namespace}/app"
            return [
                Service("db", None, "db"),
                Service("redis", None, "cache"),
                Service("frontend", None, "cache"),
                Service(MIGRATION_SERVICE, app, depends_on="db", waits_for="init"),
                Service("worker", app, worker=True, depends_on="db", waits_for="init"),
                Service("init", app, oneshot=True, depends_on="db"),
            ]
        locals_ = self.total - self.targets
        n_db = (locals_ + 1) // 2
        dbs = [f"db{i}" if n_db > 1 else "db" for i in range(1, n_db + 1)]
        n_cache = locals_ - n_db
        caches = [f"cache{i}" if n_cache > 1 else "cache" for i in range(1, n_cache + 1)]
        out = [Service(name, None, "db") for name in dbs]
        out += [Service(name, None, "cache") for name in caches]
        for index in range(self.targets):
            pair, second = divmod(index, 2)
            repo = f"{namespace}/app" if pair == 0 else f"{namespace}/svc{pair + 1}"
            if pair == 0:
                name = "worker" if second else MIGRATION_SERVICE
            else:
                name = f"worker{pair + 1}" if second else f"web{pair + 1}"
            db = dbs[pair % len(dbs)]
            out.append(Service(name, repo, worker=bool(second), depends_on=db))
        return out

    def target_names(self, namespace: str) -> list[str]:
        return [s.name for s in self.services(namespace) if s.repo is not None]

    def repos(self, namespace: str) -> list[str]:
        return sorted({s.repo for s in self.services(namespace) if s.repo is not None})


def _service_yaml(stack: Stack, service: Service, local_refs: dict[str, str]) -> str:
    if service.repo is None:
        image = local_refs[service.local_image]
    else:
        image = f"{stack.registry}/{service.repo}:latest"
    lines = [f"  {service.name}:", f"    image: {image}", "    init: true"]
    if service.worker:
        lines.append('    command: ["/app/work"]')
    if service.oneshot:
        lines += ['    restart: "no"', '    command: ["/app/migrate"]']
    if service.name == MIGRATION_SERVICE or service.oneshot:
        lines += ["    volumes:", "      - app-data:/data"]
    text = "\n".join(lines) + "\n"
    if service.healthcheck:
        text += HEALTHCHECK
    if service.depends_on or service.waits_for:
        text += "    depends_on:\n"
    if service.depends_on:
        text += f"      {service.depends_on}:\n        condition: service_healthy\n"
    if service.waits_for:
        text += f"      {service.waits_for}:\n        condition: service_completed_successfully\n"
    return text


def write_stack(stack: Stack, directory: Path, project: str, shape: StackShape) -> Path:
    """Write `docker-compose.prod.yml` (with `name: <project>`) for `shape`; return its path.

    The local images are built here when missing; the registry images are not (see
    `bench.deployment`).
    """
    directory.mkdir(parents=True, exist_ok=True)
    local_refs = {name: local_image(stack, name) for name in ("db", "cache")}
    body = "".join(_service_yaml(stack, s, local_refs) for s in shape.services(project))
    text = (
        f"# Written by bench.project: {shape.total} services, {shape.targets} from the registry.\n"
        f"name: {project}\n\nservices:\n{body}\nvolumes:\n  app-data: {{}}\n"
    )
    compose_file = directory / COMPOSE_FILE_NAME
    compose_file.write_text(text)
    return compose_file
