"""What a registry's names and answers mean, without talking to one: image references
(docker/distribution's grammar, reduced to what a compose `image:` holds), registry hosts and
their base URLs, `WWW-Authenticate` challenges, manifest media types, digests and an index's
children. Pure functions, unit-tested over real values (tests/unit/test_registry.py); the
HTTP client that uses them is worker/host/registry.py.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPES = (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX)
INDEX_MEDIA_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"
# (connect, read) seconds: a check answers quickly or reports the registry unreachable.

# docker/distribution's reference grammar, reduced to what a compose `image:` holds.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::\d{1,5})?")
# One auth-param: name=token or name="quoted string" (RFC 7235).
_AUTH_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')


class RegistryError(Exception):
    """The registry could not tell the digest; the message is safe to show (no secrets)."""


@dataclass(frozen=True)
class ImageReference:
    """`registry/repository:tag` or `registry/repository@digest`, as Docker resolves it."""

    registry: str  # host[:port] as written; docker.io for Docker Hub
    repository: str  # e.g. org/app, library/redis
    tag: str | None  # None only when pinned by digest without a tag
    digest: str | None = None

    @property
    def name(self) -> str:
        """`registry/repository`, what Docker's RepoDigests entries start with."""
        return f"{self.registry}/{self.repository}"

    @property
    def host(self) -> str:
        """The host name without the port (brackets removed for IPv6)."""
        return split_host(self.registry)[0]

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def split_host(registry: str) -> tuple[str, int | None]:
    """("127.0.0.1", 5000) from "127.0.0.1:5000"; ("::1", 5000) from "[::1]:5000"."""
    if registry.startswith("["):
        host, _, rest = registry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, sep, port = registry.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return registry, None


def parse_reference(reference: str) -> ImageReference:
    """Parse an image reference the way Docker does; raise ValueError with the reason.

    `ghcr.io/org/app:1.2` -> (ghcr.io, org/app, 1.2); `redis` -> (docker.io, library/redis,
    latest); `127.0.0.1:5000/app` -> (127.0.0.1:5000, app, latest). The first component is a
    registry when it has a `.` or a `:` or is `localhost` (or is bracketed IPv6).
    """
    text = reference.strip()
    if not text or len(text) > 512 or any(c.isspace() for c in text):
        raise ValueError("an image reference is a non-empty string without spaces")
    name, _, digest = text.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise ValueError(f"invalid digest in image reference {reference!r}")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, remainder = first, rest
        if not _HOST.fullmatch(registry):
            raise ValueError(f"invalid registry host in image reference {reference!r}")
    else:
        registry, remainder = DOCKER_HUB, name
    repository, tag = remainder, ""
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        repository, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise ValueError(f"invalid tag in image reference {reference!r}")
    if registry in (DOCKER_HUB, "index.docker.io", DOCKER_HUB_API):
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    if not _REPOSITORY.fullmatch(repository):
        raise ValueError(
            f"invalid repository name in image reference {reference!r} "
            "(lowercase letters, digits and separators)"
        )
    return ImageReference(
        registry=registry,
        repository=repository,
        tag=tag or (None if digest else DEFAULT_TAG),
        digest=digest or None,
    )


@dataclass(frozen=True)
class Challenge:
    """One challenge of a `WWW-Authenticate` header: scheme (lower case) and parameters."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_www_authenticate(header: str) -> list[Challenge]:
    """The challenges of a `WWW-Authenticate` header, in order.

    `Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/a:pull"` ->
    [Challenge("bearer", {"realm": ..., "service": ..., "scope": ...})]. Parameter names are
    lower-cased, quoted values unescaped. Several challenges may share one header
    (`Basic realm="x", Bearer realm="y"`). Garbage gives what could be read, never an error.
    """
    challenges: list[Challenge] = []
    position, text = 0, header or ""
    scheme_re = re.compile(r"\s*,?\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?:\s+|$)")
    while position < len(text):
        match = scheme_re.match(text, position)
        if match is None:
            break
        scheme = match.group(1).lower()
        position = match.end()
        params: dict[str, str] = {}
        while position < len(text):
            param = _AUTH_PARAM.match(text, position)
            if param is None:
                break
            # A token68 or the next scheme: a name not followed by '=' ends the parameters.
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[param.group(1).lower()] = value
            position = param.end()
        challenges.append(Challenge(scheme, params))
    return challenges


def is_loopback_host(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: Docker's insecure-by-default registries."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def registry_base_url(registry: str) -> str:
    """The API base URL: http:// for loopback registries, https:// otherwise."""
    if registry == DOCKER_HUB:
        return f"https://{DOCKER_HUB_API}"
    scheme = "http" if is_loopback_host(split_host(registry)[0]) else "https"
    return f"{scheme}://{registry}"


def registry_host(registry_url: str) -> str:
    """The host[:port] of a REGISTRY_URL setting (which may carry a path: ghcr.io/org)."""
    text = registry_url.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    host = text.split("/", 1)[0].lower()
    return DOCKER_HUB if host in ("index.docker.io", DOCKER_HUB_API) else host


def sha256_digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def manifest_children(body: bytes) -> tuple[str, ...]:
    """The digests an index / manifest list points to (empty for a single manifest)."""
    try:
        data = json.loads(body)
    except ValueError:
        return ()
    manifests = data.get("manifests") if isinstance(data, dict) else None
    if not isinstance(manifests, list):
        return ()
    return tuple(
        str(item["digest"])
        for item in manifests
        if isinstance(item, dict) and isinstance(item.get("digest"), str)
    )


def content_media_type(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(";", 1)[0].strip().lower() or None
