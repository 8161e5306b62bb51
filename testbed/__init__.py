"""Real components for update-executor's tests, demo and benchmark, started on loopback.

`with TestBed() as stack:` starts a private dockerd (own socket, bridge and address pool), a
distribution registry with htpasswd auth standing in for GHCR, and a Redis for the ARQ queue,
all under one short base dir in /tmp, and removes all of it on exit. See docs in each module:
`bed` (lifecycle, cleanup), `dockerd` (daemon flags and why), `images` (test images and their
behaviours), `project` (the sample compose stack), `containers` (what tests compare before/after),
`dbimages` (PostgreSQL and an Alembic app from Debian's packages), `systemd` (a systemd host).
"""

from testbed.bed import TestBed, cleanup_stale
from testbed.containers import (
    ContainerInfo,
    container_ids,
    containers,
    http_get,
    running_image_ids,
    service_url,
)
from testbed.images import (
    BASE_IMAGE,
    BEHAVIOURS,
    build_app_image,
    build_local_image,
    delete_from_registry,
    ensure_base_image,
    image_id_of,
    registry_digest,
    registry_image_id,
)
from testbed.procs import TestBedError
from testbed.project import (
    COMPOSE_FILE_NAME,
    LOCAL_SERVICES,
    REGISTRY_SERVICES,
    write_sample_project,
)
from testbed.stack import CommandError, Stack

__all__ = [
    "BASE_IMAGE",
    "BEHAVIOURS",
    "COMPOSE_FILE_NAME",
    "LOCAL_SERVICES",
    "REGISTRY_SERVICES",
    "CommandError",
    "ContainerInfo",
    "Stack",
    "TestBed",
    "TestBedError",
    "build_app_image",
    "build_local_image",
    "cleanup_stale",
    "container_ids",
    "containers",
    "delete_from_registry",
    "ensure_base_image",
    "http_get",
    "image_id_of",
    "registry_digest",
    "registry_image_id",
    "running_image_ids",
    "service_url",
    "write_sample_project",
]
