"""A small Docker registry (distribution v2) client: the digest a tag points to, without pulling.

`check_for_updates` (worker/host/check.py) compares it with the repo digest of the image a service
runs. The digest asked for is the one of what the tag points to: a manifest list / OCI image
index for a multi-platform tag (which is also what Docker records in `RepoDigests` when it
pulls by tag), a single manifest otherwise. It is the `Docker-Content-Digest` of a HEAD on
`/v2/<repository>/manifests/<tag>` (the sha256 of a GET's body when a registry omits it).

Authentication follows the registry's challenge (`WWW-Authenticate`):

- `Basic`: the configured username and token;
- `Bearer` (GHCR, Docker Hub, a distribution registry with `auth: token`): GET the challenge's
  `realm` with `service` and `scope=repository:<repository>:pull` (with the username and
  token as Basic credentials), take `token` or `access_token` from the JSON answer, retry.

Credentials are only ever sent to the configured registry host (and to its token service when
that is https or on loopback). Loopback registries (127.0.0.0/8, localhost, ::1) are spoken to
over plain HTTP, like Docker's default insecure registries; every other one over HTTPS.

The blocking calls use `requests`; async code runs them with `asyncio.to_thread`. Failures a
check must survive (missing tag, wrong credentials, registry down) raise `RegistryError`, whose
message is safe to show: it never contains the token, nor a bearer token.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests  # type: ignore[import-untyped,unused-ignore]

from .settings import Secret

logger = logging.getLogger("update_executor.registry")

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPES = (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX)
INDEX_MEDIA_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"
# (connect, read) seconds: a check answers quickly or reports the registry unreachable.
DEFAULT_TIMEOUT = (3.05, 10.0)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024

# docker/distribution's reference grammar, reduced to what a compose `image:` holds.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::\d{1,5})?")
# One auth-param: name=token or name="quoted string" (RFC 7235).
_AUTH_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


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


@dataclass(frozen=True)
class Credentials:
    """Username and token for one registry host; the token never shows in a repr."""

    host: str  # host[:port], lower case, as in registry_host()
    username: str
    token: Secret

    def applies_to(self, registry: str) -> bool:
        return bool(self.username) and bool(self.token) and registry.lower() == self.host


@dataclass(frozen=True)
class RemoteManifest:
    """What the tag points to: its digest and media type (and, for an index, its children)."""

    digest: str
    media_type: str | None
    children: tuple[str, ...] = ()

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_MEDIA_TYPES


def connection_reason(exc: BaseException) -> str:
    """A short reason for a failed connection: `Connection refused`, `timed out`, ..."""
    if isinstance(exc, requests.exceptions.Timeout):
        return "timed out"
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS error (certificate not trusted, or the registry does not speak HTTPS)"
    found = _ERRNO.search(str(exc))
    if found:
        return found.group(1).strip()
    if "Name or service not known" in str(exc) or "Temporary failure in name" in str(exc):
        return "name not resolved"
    return type(exc).__name__


class RegistryClient:
    """Digest lookups against registries; one instance per check (it caches bearer tokens).

    Blocking; use `asyncio.to_thread(client.remote_manifest, ref)` from async code.
    """

    def __init__(
        self,
        credentials: Credentials | None = None,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        session: requests.Session | None = None,
    ) -> None:
        self.credentials = credentials
        self.timeout = timeout
        self.session = session or requests.Session()
        self._tokens: dict[tuple[str, str, str], str] = {}

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ public
    def remote_manifest(
        self, ref: ImageReference, *, with_children: bool = False
    ) -> RemoteManifest:
        """The digest (and media type) of what `ref`'s tag points to now; RegistryError if not.

        `with_children=True` also GETs an index to list the manifests it points to.
        """
        target = ref.tag or ref.digest
        if target is None:
            raise RegistryError(f"{ref}: no tag or digest to look up")
        path = f"/v2/{ref.repository}/manifests/{target}"
        response = self._request("HEAD", ref, path)
        digest = response.headers.get("Docker-Content-Digest", "").strip()
        media_type = _media_type(response.headers.get("Content-Type"))
        if digest and not (with_children and media_type in INDEX_MEDIA_TYPES):
            return RemoteManifest(digest, media_type)
        # No digest header (some registries omit it on HEAD), or the index's children wanted.
        response = self._request("GET", ref, path)
        body = response.content[: MAX_MANIFEST_BYTES + 1]
        if len(body) > MAX_MANIFEST_BYTES:
            raise RegistryError(f"{ref}: the manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        media_type = _media_type(response.headers.get("Content-Type")) or media_type
        digest = response.headers.get("Docker-Content-Digest", "").strip() or sha256_digest(body)
        children = manifest_children(body) if media_type in INDEX_MEDIA_TYPES else ()
        return RemoteManifest(digest, media_type, children)

    # ------------------------------------------------------------------ plumbing
    def _request(self, method: str, ref: ImageReference, path: str) -> requests.Response:
        url = registry_base_url(ref.registry) + path
        headers = {"Accept": ACCEPT}
        response = self._send(method, url, headers, ref)
        if response.status_code == 401:
            auth = self._authorization(ref, response.headers.get("WWW-Authenticate", ""))
            response.close()
            response = self._send(method, url, {**headers, "Authorization": auth}, ref)
            if response.status_code == 401:
                response.close()
                raise RegistryError(self._refused(ref))
        self._raise_for_status(response, ref)
        return response

    def _send(
        self, method: str, url: str, headers: Mapping[str, str], ref: ImageReference
    ) -> requests.Response:
        try:
            return self.session.request(
                method, url, headers=dict(headers), timeout=self.timeout, allow_redirects=True
            )
        except requests.exceptions.RequestException as exc:
            raise RegistryError(
                f"registry {ref.registry} is unreachable ({connection_reason(exc)})"
            ) from None

    def _credentials_for(self, ref: ImageReference) -> Credentials | None:
        creds = self.credentials
        return creds if creds is not None and creds.applies_to(ref.registry) else None

    def _authorization(self, ref: ImageReference, header: str) -> str:
        """The Authorization header answering the registry's challenge."""
        challenges = {c.scheme: c for c in parse_www_authenticate(header)}
        creds = self._credentials_for(ref)
        if "bearer" in challenges:
            return "Bearer " + self._bearer_token(ref, challenges["bearer"], creds)
        if "basic" in challenges:
            if creds is None:
                raise RegistryError(
                    f"registry {ref.registry} requires authentication and no credentials are "
                    "configured for it (REGISTRY_USERNAME and a token for REGISTRY_URL)"
                )
            return "Basic " + _basic(creds)
        raise RegistryError(
            f"registry {ref.registry} answered 401 without a usable authentication challenge"
        )

    def _bearer_token(
        self, ref: ImageReference, challenge: Challenge, creds: Credentials | None
    ) -> str:
        realm = challenge.realm
        parts = urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RegistryError(f"registry {ref.registry} sent an invalid token realm")
        service = challenge.params.get("service", "")
        scope = f"repository:{ref.repository}:pull"
        key = (realm, service, scope)
        if key in self._tokens:
            return self._tokens[key]
        # The token goes to the token service only over https (or on loopback).
        safe_realm = parts.scheme == "https" or is_loopback_host(parts.hostname)
        headers = {"Authorization": "Basic " + _basic(creds)} if creds and safe_realm else {}
        params = {"scope": scope, **({"service": service} if service else {})}
        try:
            response = self.session.get(realm, params=params, headers=headers, timeout=self.timeout)
        except requests.exceptions.RequestException as exc:
            raise RegistryError(
                f"the token service of registry {ref.registry} ({parts.hostname}) is "
                f"unreachable ({connection_reason(exc)})"
            ) from None
        with response:
            if response.status_code in (401, 403):
                raise RegistryError(self._refused(ref, by_token_service=True))
            if response.status_code != 200:
                raise RegistryError(
                    f"the token service of registry {ref.registry} answered HTTP "
                    f"{response.status_code}"
                )
            try:
                data: Any = response.json()
            except ValueError:
                data = None
        token = ""
        if isinstance(data, dict):
            token = str(data.get("token") or data.get("access_token") or "")
        if not token:
            raise RegistryError(
                f"the token service of registry {ref.registry} answered without a token"
            )
        self._tokens[key] = token
        return token

    def _refused(self, ref: ImageReference, *, by_token_service: bool = False) -> str:
        creds = self._credentials_for(ref)
        who = "the token service of registry" if by_token_service else "registry"
        if creds is None:
            return (
                f"{who} {ref.registry} requires authentication for {ref.repository} and no "
                "credentials are configured for it (REGISTRY_USERNAME and a token)"
            )
        return (
            f"{who} {ref.registry} refused the credentials of user {creds.username!r} for "
            f"{ref.repository} (HTTP 401): wrong username or token, or no pull access"
        )

    def _raise_for_status(self, response: requests.Response, ref: ImageReference) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        response.close()
        if status == 404:
            what = f"tag {ref.tag!r}" if ref.tag else f"digest {ref.digest}"
            raise RegistryError(
                f"{what} not found in {ref.name} (the repository or the tag does not exist)"
            )
        if status == 403:
            raise RegistryError(
                f"registry {ref.registry} denied access to {ref.repository} (HTTP 403)"
            )
        if status == 429:
            raise RegistryError(f"registry {ref.registry} is rate limiting requests (HTTP 429)")
        raise RegistryError(f"registry {ref.registry} answered HTTP {status} for {ref}")


def _basic(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.token.reveal()}".encode()
    return base64.b64encode(raw).decode()


def _media_type(value: str | None) -> str | None:
    if not value:
        return None
    return value.split(";", 1)[0].strip().lower() or None


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced (a last line of defence for messages we show)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "**********")
    return text
