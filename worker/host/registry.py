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
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests  # type: ignore[import-untyped,unused-ignore]

from .references import (
    INDEX_MEDIA_TYPES,
    MANIFEST_MEDIA_TYPES,
    Challenge,
    ImageReference,
    RegistryError,
    content_media_type,
    is_loopback_host,
    manifest_children,
    parse_www_authenticate,
    registry_base_url,
    sha256_digest,
)
from .settings import Secret

logger = logging.getLogger("update_executor.registry")

ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)
DEFAULT_TIMEOUT = (3.05, 10.0)
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")


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
        media_type = content_media_type(response.headers.get("Content-Type"))
        if digest and not (with_children and media_type in INDEX_MEDIA_TYPES):
            return RemoteManifest(digest, media_type)
        # No digest header (some registries omit it on HEAD), or the index's children wanted.
        response = self._request("GET", ref, path)
        body = response.content[: MAX_MANIFEST_BYTES + 1]
        if len(body) > MAX_MANIFEST_BYTES:
            raise RegistryError(f"{ref}: the manifest is larger than {MAX_MANIFEST_BYTES} bytes")
        media_type = content_media_type(response.headers.get("Content-Type")) or media_type
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


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced (a last line of defence for messages we show)."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "**********")
    return text
