# -*- coding: utf-8 -*-
"""Does the registry have anything new for the targets? Asked by update_start (issue 20) after it
took the lock and recorded the state before the update, so that an update with nothing new skips the
login, the pull and the image info (one module process instead of four).

Per target, the digest of what its image reference's tag points at in the registry (the
`Docker-Content-Digest` of a HEAD on /v2/<repository>/manifests/<tag>, an index or a manifest) is
compared with the repo digests of the image the target's container RUNS (not what the local tag
points at): the same rules as the worker's "check for updates" (worker/host/check.py `compare`,
worker/host/references.py; tests/unit/test_registry_noop.py checks that they agree). Only when every
target is positively current is the answer "nothing new"; any doubt (the registry unreachable or
refusing, a media type not known, no repo digest, a reference pinned by digest, a container not
running) is "not decided", and the update runs its normal path, which reports errors as before.

Authentication follows the registry's challenge: Basic with the configured username and token, or the
Bearer token flow (GHCR, Docker Hub, distribution with `auth: token`). Credentials go only to the
configured registry host, and to its token service only over https or on loopback; they never appear in
a message or a result. Loopback registries are spoken to over plain HTTP (Docker's default insecure
registries), every other one over HTTPS with the system's CAs and /etc/docker/certs.d/<host>/ca.crt
(and client.cert/client.key there), as Docker does. Redirects are not followed (urllib would send the
credentials along). Standard library only: this runs on the inventory host.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST_MEDIA_TYPES = (DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX)
INDEX_MEDIA_TYPES = frozenset((DOCKER_MANIFEST_LIST, OCI_INDEX))
ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"
DEFAULT_TIMEOUT = 5.0
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
CERTS_DIR = "/etc/docker/certs.d"

# docker/distribution's reference grammar, reduced to what a compose `image:` holds (as references.py).
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(r"%s(?:/%s)*" % (_COMPONENT, _COMPONENT))
_TAG = re.compile(r"[\w][\w.-]{0,127}")
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}")
_HOST = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::\d{1,5})?")
_AUTH_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,"]*)\s*(?:,|$)')
_SCHEME = re.compile(r"\s*,?\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)(?:\s+|$)")
_SHA256 = re.compile(r"sha256:[0-9a-f]{64}")


class NotDecided(Exception):
    """The registry could not say; the message is safe to show (no credentials)."""


# ------------------------------------------------------------------------------------ pure parts
def parse_reference(reference):
    """(registry, repository, tag, digest) of an image reference, as Docker resolves it; ValueError
    when it is not one. `redis` -> ("docker.io", "library/redis", "latest", None)."""
    text = (reference or "").strip()
    if not text or len(text) > 512 or any(c.isspace() for c in text):
        raise ValueError("an image reference is a non-empty string without spaces")
    name, _, digest = text.partition("@")
    if digest and not _DIGEST.fullmatch(digest):
        raise ValueError("invalid digest in image reference %r" % reference)
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, remainder = first, rest
        if not _HOST.fullmatch(registry):
            raise ValueError("invalid registry host in image reference %r" % reference)
    else:
        registry, remainder = DOCKER_HUB, name
    repository, tag = remainder, ""
    colon = remainder.rfind(":")
    if colon > remainder.rfind("/"):
        repository, tag = remainder[:colon], remainder[colon + 1:]
        if not _TAG.fullmatch(tag):
            raise ValueError("invalid tag in image reference %r" % reference)
    if registry in (DOCKER_HUB, "index.docker.io", DOCKER_HUB_API):
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = "library/" + repository
    if not _REPOSITORY.fullmatch(repository):
        raise ValueError("invalid repository name in image reference %r" % reference)
    return registry, repository, tag or (None if digest else DEFAULT_TAG), digest or None


def registry_host(registry_url):
    """The host[:port] of a registry URL setting (scheme and path dropped, lower case)."""
    text = (registry_url or "").strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    host = text.split("/", 1)[0].lower()
    return DOCKER_HUB if host in ("index.docker.io", DOCKER_HUB_API) else host


def split_host(registry):
    """("127.0.0.1", 5000) from "127.0.0.1:5000"; ("::1", 5000) from "[::1]:5000"."""
    if registry.startswith("["):
        host, _, rest = registry[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") and rest[1:].isdigit() else None
    host, sep, port = registry.rpartition(":")
    if sep and port.isdigit():
        return host, int(port)
    return registry, None


def is_loopback_host(host):
    """127.0.0.0/8, ::1 and localhost: Docker's insecure-by-default registries."""
    host = (host or "").strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def base_url(registry):
    """The API base URL: http:// for loopback registries, https:// otherwise."""
    if registry == DOCKER_HUB:
        return "https://" + DOCKER_HUB_API
    return ("http://" if is_loopback_host(split_host(registry)[0]) else "https://") + registry


def parse_www_authenticate(header):
    """[(scheme in lower case, {param: value})] of a WWW-Authenticate header, in order; what could be
    read of garbage, never an error."""
    challenges, position, text = [], 0, header or ""
    while position < len(text):
        match = _SCHEME.match(text, position)
        if match is None:
            break
        scheme, position, params = match.group(1).lower(), match.end(), {}
        while position < len(text):
            param = _AUTH_PARAM.match(text, position)
            if param is None:
                break
            value = param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params[param.group(1).lower()] = value
            position = param.end()
        challenges.append((scheme, params))
    return challenges


def content_media_type(value):
    return (value or "").split(";", 1)[0].strip().lower() or None


def manifest_children(body):
    """The digests an index / manifest list points to (empty for anything else)."""
    try:
        data = json.loads(body)
    except ValueError:
        return ()
    manifests = data.get("manifests") if isinstance(data, dict) else None
    if not isinstance(manifests, list):
        return ()
    return tuple(str(item["digest"]) for item in manifests
                 if isinstance(item, dict) and isinstance(item.get("digest"), str))


def repo_digests_for(registry, repository, repo_digests):
    """The digests among an image's RepoDigests (`repo@digest`, Docker Hub names shortened) that
    belong to registry/repository."""
    found = []
    for entry in repo_digests or []:
        try:
            parsed = parse_reference(str(entry))
        except ValueError:
            continue
        if (parsed[0], parsed[1]) == (registry, repository) and parsed[3]:
            found.append(parsed[3])
    return found


def current_digest(local, remote_digest, children=()):
    """The local digest that shows the container runs what the registry serves now, or None: the
    registry's digest itself, or (for an index) one of the manifests it lists (worker/host/check.py's
    `compare`: the container was pulled by its platform's digest)."""
    if remote_digest in local:
        return remote_digest
    return next((digest for digest in local if digest in children), None)


def target_doubt(service, reference, restart, before, state, local):
    """Why `service` cannot be judged from the registry (a sentence), or None when it can: it has a
    container running the image (long-running: running and not unhealthy or starting; a one-shot job:
    exited 0, as the role's no-op rule compose_update_noop), a reference with a tag, and repo digests
    of that repository."""
    if not reference:
        return "%s has no image (a build-only service)" % service
    try:
        parsed = parse_reference(reference)
    except ValueError as err:
        return "%s: %s" % (service, err)
    if parsed[3] is not None:
        return "%s's image is pinned by digest" % service
    if not before or not before.get("image_id"):
        return "%s has no container" % service
    state = state or {}
    if restart == "no":
        if state.get("status") != "exited" or state.get("exit_code") != 0:
            return "%s's last run did not exit 0" % service
    elif state.get("status") != "running" or state.get("health") in ("unhealthy", "starting"):
        return "%s is not running healthy" % service
    if not local:
        return "%s's image has no repo digest of %s/%s" % (service, parsed[0], parsed[1])
    return None


# ------------------------------------------------------------------------------------ HTTP
class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise NotDecided("the registry redirected the manifest request (HTTP %d)" % code)


class _Answer(object):
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body


class RegistryClient(object):
    """Manifest digests from registries; one per run (it keeps bearer tokens). `credentials`:
    (host, username, token) of the configured registry, or None."""

    def __init__(self, credentials=None, timeout=DEFAULT_TIMEOUT, certs_dir=CERTS_DIR):
        self.credentials = credentials if credentials and credentials[1] and credentials[2] else None
        self.timeout = timeout
        self.certs_dir = certs_dir
        self._auth = {}  # (registry, repository) -> Authorization header that worked

    def _basic(self):
        raw = ("%s:%s" % (self.credentials[1], self.credentials[2])).encode("utf-8")
        return "Basic " + base64.b64encode(raw).decode("ascii")

    def _creds_apply(self, registry):
        return self.credentials is not None and registry.lower() == self.credentials[0]

    def _opener(self, url):
        parts = urllib.parse.urlsplit(url)
        handlers = [_NoRedirect()]
        if is_loopback_host(parts.hostname or ""):
            handlers.append(urllib.request.ProxyHandler({}))  # never through a proxy
        if parts.scheme == "https":
            context = ssl.create_default_context()
            host_dir = os.path.join(self.certs_dir, parts.netloc)
            ca = os.path.join(host_dir, "ca.crt")
            if os.path.isfile(ca):
                context.load_verify_locations(cafile=ca)
            cert, key = os.path.join(host_dir, "client.cert"), os.path.join(host_dir, "client.key")
            if os.path.isfile(cert) and os.path.isfile(key):
                context.load_cert_chain(cert, key)
            handlers.append(urllib.request.HTTPSHandler(context=context))
        return urllib.request.build_opener(*handlers)

    def _send(self, method, url, headers, what):
        request = urllib.request.Request(url, headers=headers, method=method)
        try:
            response = self._opener(url).open(request, timeout=self.timeout)
        except urllib.error.HTTPError as err:
            body = b""
            try:
                body = err.read(MAX_MANIFEST_BYTES + 1) if method == "GET" else b""
            except Exception:  # noqa: BLE001 - an error's body only helps a token service's message
                pass
            answer = _Answer(err.code, err.headers, body)
            err.close()
            return answer
        except NotDecided:
            raise
        except (urllib.error.URLError, OSError, ValueError, ssl.SSLError) as err:
            reason = getattr(err, "reason", err)
            raise NotDecided("%s is unreachable (%s)" % (what, str(reason) or reason.__class__.__name__))
        with response:
            body = response.read(MAX_MANIFEST_BYTES + 1) if method == "GET" else b""
            return _Answer(response.status, response.headers, body)

    def _authorization(self, registry, repository, header):
        challenges = dict(parse_www_authenticate(header))
        if "bearer" in challenges:
            return "Bearer " + self._bearer(registry, repository, challenges["bearer"])
        if "basic" in challenges and self._creds_apply(registry):
            return self._basic()
        raise NotDecided("registry %s asks for credentials it has not been given" % registry)

    def _bearer(self, registry, repository, params):
        realm = params.get("realm", "")
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NotDecided("registry %s sent an invalid token realm" % registry)
        query = {"scope": "repository:%s:pull" % repository}
        if params.get("service"):
            query["service"] = params["service"]
        headers = {}
        if self._creds_apply(registry) and (parts.scheme == "https" or is_loopback_host(parts.hostname)):
            headers["Authorization"] = self._basic()
        separator = "&" if parts.query else "?"
        answer = self._send("GET", realm + separator + urllib.parse.urlencode(query), headers,
                            "the token service of registry %s" % registry)
        if answer.status != 200:
            raise NotDecided("the token service of registry %s answered HTTP %d" % (registry, answer.status))
        try:
            data = json.loads(answer.body[:MAX_MANIFEST_BYTES])
        except ValueError:
            data = None
        token = str(data.get("token") or data.get("access_token") or "") if isinstance(data, dict) else ""
        if not token:
            raise NotDecided("the token service of registry %s answered without a token" % registry)
        return token

    def _request(self, method, registry, repository, path):
        url = base_url(registry) + path
        key = (registry, repository)
        headers = {"Accept": ACCEPT}
        if key in self._auth:
            headers["Authorization"] = self._auth[key]
        what = "registry %s" % registry
        answer = self._send(method, url, headers, what)
        if answer.status == 401:
            authorization = self._authorization(registry, repository, answer.headers.get("WWW-Authenticate", ""))
            answer = self._send(method, url, dict(headers, Authorization=authorization), what)
            if answer.status == 401:
                raise NotDecided("registry %s refused the credentials for %s (HTTP 401)" % (registry, repository))
            self._auth[key] = authorization
        if answer.status != 200:
            raise NotDecided("registry %s answered HTTP %d for %s" % (registry, answer.status, repository))
        return answer

    def manifest(self, registry, repository, tag, with_children=False):
        """(digest, media type, children) of what registry/repository:tag points to now;
        NotDecided when the registry cannot say. `children` only for an index and `with_children`."""
        path = "/v2/%s/manifests/%s" % (repository, urllib.parse.quote(tag, safe=""))
        answer = self._request("HEAD", registry, repository, path)
        digest = (answer.headers.get("Docker-Content-Digest") or "").strip()
        media_type = content_media_type(answer.headers.get("Content-Type"))
        if digest and not (with_children and media_type in INDEX_MEDIA_TYPES):
            return digest, media_type, ()
        answer = self._request("GET", registry, repository, path)
        if len(answer.body) > MAX_MANIFEST_BYTES:
            raise NotDecided("the manifest of %s/%s:%s is too large" % (registry, repository, tag))
        media_type = content_media_type(answer.headers.get("Content-Type")) or media_type
        digest = (answer.headers.get("Docker-Content-Digest") or "").strip() or (
            "sha256:" + hashlib.sha256(answer.body).hexdigest())
        children = manifest_children(answer.body) if media_type in INDEX_MEDIA_TYPES else ()
        return digest, media_type, children


# ------------------------------------------------------------------------------------ the decision
def nothing_new(targets, service_image, service_restart, before, states, repo_digests, client):
    """{"nothing_new": bool, "reason": str, "services": {service: {reference, remote_digest,
    local_digest}}}: nothing_new only when every target's container runs what its tag points at in
    the registry now. `repo_digests`: {service: RepoDigests of the image its container runs}.
    `client`: a RegistryClient (or anything with its `manifest`). Stops at the first doubt."""
    services, seen = {}, {}
    if not targets:
        return dict(nothing_new=False, reason="no target services", services=services)
    for service in targets:
        reference = (service_image or {}).get(service) or ""
        parsed = None
        try:
            parsed = parse_reference(reference) if reference else None
        except ValueError:
            pass
        local = repo_digests_for(parsed[0], parsed[1], (repo_digests or {}).get(service)) if parsed else []
        doubt = target_doubt(service, reference, (service_restart or {}).get(service),
                             (before or {}).get(service), (states or {}).get(service), local)
        if doubt is not None:
            return dict(nothing_new=False, reason=doubt, services=services)
        registry, repository, tag, _digest = parsed
        try:
            remote = seen.get(reference) or client.manifest(registry, repository, tag)
            seen[reference] = remote
            digest, media_type, _children = remote
            if media_type not in MANIFEST_MEDIA_TYPES:
                raise NotDecided("registry %s serves %s with media type %s" % (registry, reference, media_type))
            if not _SHA256.fullmatch(digest):
                raise NotDecided("registry %s sent a digest that is not sha256 for %s" % (registry, reference))
            found = current_digest(local, digest)
            if found is None and media_type in INDEX_MEDIA_TYPES:
                digest, media_type, children = client.manifest(registry, repository, tag, with_children=True)
                found = current_digest(local, digest, children)
        except NotDecided as err:
            return dict(nothing_new=False, reason=str(err), services=services)
        services[service] = dict(reference=reference, remote_digest=digest, local_digest=found)
        if found is None:
            return dict(nothing_new=False, reason="the registry has a new image for %s" % service, services=services)
    return dict(nothing_new=True, reason="every target runs what its tag points at in the registry", services=services)
