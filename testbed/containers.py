"""Look at a compose project's containers: what tests compare before and after an update."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass

from testbed.stack import Stack

APP_PORT = 8080  # the port every test image listens on


@dataclass(frozen=True)
class ContainerInfo:
    """One container of a compose project, as `docker inspect` sees it."""

    service: str
    container_id: str
    name: str
    image: str  # the reference from the compose file
    image_id: str  # sha256:... the container runs
    state: str  # running | exited | created | restarting | ...
    health: str | None  # healthy | unhealthy | starting | None (no healthcheck)
    exit_code: int


def containers(stack: Stack, project: str) -> dict[str, ContainerInfo]:
    """Service -> its container (`docker ps -a`, one-off `run` containers excluded).

    With several containers for one service (scaled), the most recently created one wins.
    """
    ids = stack.docker(
        "ps",
        "-aq",
        "--no-trunc",
        "--filter",
        f"label=com.docker.compose.project={project}",
        "--filter",
        "label=com.docker.compose.oneoff=False",
    ).stdout.split()
    if not ids:
        return {}
    data = json.loads(stack.docker("inspect", *ids).stdout)
    data.sort(key=lambda c: c["Created"])
    out = {}
    for item in data:
        service = item["Config"]["Labels"].get("com.docker.compose.service", "")
        health = item["State"].get("Health")
        out[service] = ContainerInfo(
            service=service,
            container_id=item["Id"],
            name=item["Name"].lstrip("/"),
            image=item["Config"]["Image"],
            image_id=item["Image"],
            state=item["State"]["Status"],
            health=health["Status"] if health else None,
            exit_code=int(item["State"]["ExitCode"]),
        )
    return out


def running_image_ids(stack: Stack, project: str) -> dict[str, str]:
    """Service -> image ID (sha256:...) of its container; compare before/after an update."""
    return {s: c.image_id for s, c in containers(stack, project).items()}


def container_ids(stack: Stack, project: str) -> dict[str, str]:
    """Service -> container ID; a recreated service gets a new one."""
    return {s: c.container_id for s, c in containers(stack, project).items()}


def service_url(stack: Stack, container: str, port: int = APP_PORT) -> str:
    """http://127.0.0.1:HOSTPORT of a published container port (e.g. `<project>-api`)."""
    out = stack.docker("port", container, f"{port}/tcp").stdout.split()
    if not out:
        raise RuntimeError(f"{container}: port {port} is not published")
    return f"http://{out[0]}"


def http_get(url: str, *, timeout: float = 5.0) -> str:
    """GET `url` (a loopback address of the bed) and return the body as text."""
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"only the bed's loopback addresses are fetched, not {url!r}")
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - loopback
        body: bytes = response.read()
    return body.decode()
