"""The registry's names and answers (worker/host/references.py), the client's pure parts
(worker/host/registry.py) and the check's comparisons (worker/host/check.py), table-driven.
Fast: no Docker, no Redis; one loopback HTTP server stands in for a registry that omits
Docker-Content-Digest (the real one always sends it)."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from worker.api.tables import check_exit_status, format_check_table, short_digest
from worker.host.check import compare, repo_digests_for
from worker.host.references import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_INDEX,
    OCI_MANIFEST,
    Challenge,
    ImageReference,
    RegistryError,
    is_loopback_host,
    manifest_children,
    parse_reference,
    parse_www_authenticate,
    registry_base_url,
    registry_host,
    sha256_digest,
)
from worker.host.registry import ACCEPT, Credentials, RegistryClient, connection_reason, redact
from worker.host.settings import Settings
from worker.shared.check import (
    ServiceCheck,
    check_outcome,
    open_last_check,
    seal_last_check,
    status_text,
)
from worker.shared.keys import pending_check_key
from worker.shared.request import InvalidRequest, validate_check_services
from worker.shared.settings import Secret

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


# ------------------------------------------------------------------------------ references
@pytest.mark.parametrize(
    ("text", "registry", "repository", "tag", "digest"),
    [
        ("ghcr.io/org/app:1.2", "ghcr.io", "org/app", "1.2", None),
        ("ghcr.io/org/app", "ghcr.io", "org/app", "latest", None),
        ("ghcr.io/org/team/app:v2-rc.1", "ghcr.io", "org/team/app", "v2-rc.1", None),
        ("127.0.0.1:5000/t1/app:latest", "127.0.0.1:5000", "t1/app", "latest", None),
        ("127.0.0.1:5000/app", "127.0.0.1:5000", "app", "latest", None),
        ("localhost/app:1", "localhost", "app", "1", None),
        ("localhost:5000/a/b", "localhost:5000", "a/b", "latest", None),
        ("[::1]:5000/app:2", "[::1]:5000", "app", "2", None),
        ("redis", "docker.io", "library/redis", "latest", None),
        ("redis:7-alpine", "docker.io", "library/redis", "7-alpine", None),
        ("bitnami/redis:7", "docker.io", "bitnami/redis", "7", None),
        ("docker.io/redis", "docker.io", "library/redis", "latest", None),
        ("index.docker.io/library/redis:7", "docker.io", "library/redis", "7", None),
        (f"ghcr.io/org/app@{D1}", "ghcr.io", "org/app", None, D1),
        (f"ghcr.io/org/app:1@{D1}", "ghcr.io", "org/app", "1", D1),
        (f"redis@{D2}", "docker.io", "library/redis", None, D2),
        (
            "my-registry.example.com:443/a_b/c-d:x",
            "my-registry.example.com:443",
            "a_b/c-d",
            "x",
            None,
        ),
    ],
)
def test_parse_reference(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        registry,
        repository,
        tag,
        digest,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "non-empty"),
        ("ghcr.io/org/app name", "without spaces"),
        ("ghcr.io/Org/App:1", "invalid repository name"),
        ("ghcr.io/org/app:bad/tag", "invalid repository name"),
        ("ghcr.io/org/app:-x", "invalid tag"),
        ("ghcr.io/org/app@sha256:short", "invalid digest"),
        ("ghcr.io//app", "invalid repository name"),
        ("bad_host.io:x:y/app", "invalid registry host"),
        ("x" * 600, "non-empty string"),
    ],
)
def test_parse_reference_refuses_bad_input_clearly(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_reference(text)


def test_reference_properties() -> None:
    ref = parse_reference("127.0.0.1:5000/t/app")
    assert ref.name == "127.0.0.1:5000/t/app"
    assert ref.host == "127.0.0.1"
    assert str(ref) == "127.0.0.1:5000/t/app:latest"
    assert str(ImageReference("ghcr.io", "o/a", None, D1)) == f"ghcr.io/o/a@{D1}"
    assert parse_reference("[::1]:5000/app").host == "::1"


# ------------------------------------------------------------------------------ WWW-Authenticate
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Basic realm="registry"', [("basic", {"realm": "registry"})]),
        ("basic realm=registry", [("basic", {"realm": "registry"})]),
        (
            'Bearer realm="https://ghcr.io/token",service="ghcr.io",'
            'scope="repository:org/app:pull"',
            [
                (
                    "bearer",
                    {
                        "realm": "https://ghcr.io/token",
                        "service": "ghcr.io",
                        "scope": "repository:org/app:pull",
                    },
                )
            ],
        ),
        (
            'Bearer realm="http://127.0.0.1:1/token", service="test registry", '
            'scope="repository:a/b:pull,push", error="insufficient_scope"',
            [
                (
                    "bearer",
                    {
                        "realm": "http://127.0.0.1:1/token",
                        "service": "test registry",
                        "scope": "repository:a/b:pull,push",
                        "error": "insufficient_scope",
                    },
                )
            ],
        ),
        (
            'Basic realm="a", Bearer realm="b",service="s"',
            [("basic", {"realm": "a"}), ("bearer", {"realm": "b", "service": "s"})],
        ),
        ('Bearer REALM="x\\"y"', [("bearer", {"realm": 'x"y'})]),
        ("Bearer", [("bearer", {})]),
        ("", []),
        ("   ", []),
    ],
)
def test_parse_www_authenticate(header: str, expected: list[tuple[str, dict[str, str]]]) -> None:
    assert parse_www_authenticate(header) == [Challenge(s, p) for s, p in expected]


def test_challenge_realm() -> None:
    assert Challenge("bearer", {"realm": "https://x/token"}).realm == "https://x/token"
    assert Challenge("basic").realm == ""


# ------------------------------------------------------------------------------ hosts, URLs
@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.9.8.7", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::1", True),
        ("[::1]", True),
        ("128.0.0.1", False),
        ("10.0.0.1", False),
        ("ghcr.io", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("registry", "url"),
    [
        ("ghcr.io", "https://ghcr.io"),
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("localhost:5000", "http://localhost:5000"),
        ("[::1]:5000", "http://[::1]:5000"),
        ("registry.example.com:8443", "https://registry.example.com:8443"),
        ("docker.io", "https://registry-1.docker.io"),
    ],
)
def test_registry_base_url(registry: str, url: str) -> None:
    assert registry_base_url(registry) == url


@pytest.mark.parametrize(
    ("setting", "host"),
    [
        ("ghcr.io", "ghcr.io"),
        ("ghcr.io/org", "ghcr.io"),
        ("GHCR.IO/org/", "ghcr.io"),
        ("https://ghcr.io/org", "ghcr.io"),
        ("127.0.0.1:5000", "127.0.0.1:5000"),
        ("index.docker.io", "docker.io"),
    ],
)
def test_registry_host_of_the_setting(setting: str, host: str) -> None:
    assert registry_host(setting) == host


def test_accept_header_names_the_four_manifest_types() -> None:
    assert [t.strip() for t in ACCEPT.split(",")] == [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ]
    assert {DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_MANIFEST, OCI_INDEX} == set(
        t.strip() for t in ACCEPT.split(",")
    )


def test_digest_and_index_children() -> None:
    body = b'{"schemaVersion":2}'
    assert sha256_digest(body) == "sha256:" + hashlib.sha256(body).hexdigest()
    index = json.dumps({"manifests": [{"digest": D1}, {"digest": D2}, {"x": 1}]}).encode()
    assert manifest_children(index) == (D1, D2)
    assert manifest_children(b'{"layers": []}') == ()
    assert manifest_children(b"not json") == ()
    assert manifest_children(b"[1]") == ()


def test_credentials_apply_only_to_their_registry() -> None:
    creds = Credentials("ghcr.io", "bot", Secret("ghp_secret"))
    assert creds.applies_to("ghcr.io") and creds.applies_to("GHCR.io")
    assert not creds.applies_to("evil.example.com")
    assert not Credentials("ghcr.io", "", Secret("t")).applies_to("ghcr.io")
    assert not Credentials("ghcr.io", "bot", Secret("")).applies_to("ghcr.io")
    assert "ghp_secret" not in repr(creds)


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (requests.exceptions.ConnectTimeout("x"), "timed out"),
        (requests.exceptions.ReadTimeout("x"), "timed out"),
        (
            requests.exceptions.ConnectionError(
                "HTTPConnectionPool(host='127.0.0.1', port=1): Max retries exceeded (Caused by "
                "NewConnectionError('<conn>: Failed to establish a new connection: "
                "[Errno 111] Connection refused'))"
            ),
            "Connection refused",
        ),
        (requests.exceptions.ConnectionError("[Errno -2] Name or service not known"), "Name or"),
        (requests.exceptions.ConnectionError("odd"), "ConnectionError"),
    ],
)
def test_connection_reason(exc: BaseException, reason: str) -> None:
    assert connection_reason(exc).startswith(reason)


def test_redact() -> None:
    assert redact("token abcdef leaked abcdef", ["abcdef"]) == "token ********** leaked **********"
    assert redact("a b", ["", "x"]) == "a b"


# ------------------------------------------------------------------------------ comparing
@pytest.mark.parametrize(
    ("entries", "reference", "expected"),
    [
        ([f"127.0.0.1:5000/t/app@{D1}"], "127.0.0.1:5000/t/app:latest", [D1]),
        ([f"127.0.0.1:5000/t/other@{D1}"], "127.0.0.1:5000/t/app:latest", []),
        (
            [f"127.0.0.1:5000/t/app@{D1}", f"127.0.0.1:5000/t/app@{D2}"],
            "127.0.0.1:5000/t/app:2",
            [D1, D2],
        ),
        ([f"redis@{D1}"], "docker.io/library/redis:7", [D1]),
        ([f"bitnami/redis@{D1}"], "redis:7", []),
        (["garbage", f"ghcr.io/o/a@{D3}"], "ghcr.io/o/a", [D3]),
        ([], "ghcr.io/o/a", []),
    ],
)
def test_repo_digests_for_the_service_repository(
    entries: list[str], reference: str, expected: list[str]
) -> None:
    assert repo_digests_for(parse_reference(reference), entries) == expected


@pytest.mark.parametrize(
    ("local", "remote", "children", "local_digest", "available"),
    [
        ([D1], D1, (), D1, False),  # same manifest
        ([D1], D2, (), D1, True),  # pushed again
        ([D3, D1], D1, (), D1, False),  # several repo digests: the current one is among them
        ([D1], D2, (D1, D3), D1, False),  # runs the current index's platform manifest
        ([D3], D2, (D1, D1), D3, True),  # an index that no longer lists it
        ([], D2, (), None, False),  # never pulled: cannot compare (the check sets an error)
    ],
)
def test_compare_like_with_like(
    local: list[str],
    remote: str,
    children: tuple[str, ...],
    local_digest: str | None,
    available: bool,
) -> None:
    check = ServiceCheck(image="x")
    compare(check, local, remote, children)
    assert (check.local_digest, check.remote_digest, check.update_available) == (
        local_digest,
        remote,
        available,
    )


@pytest.mark.parametrize(
    ("check", "text"),
    [
        (ServiceCheck("i", D1, D1, False, None), "up to date"),
        (ServiceCheck("i", D1, D2, True, None), "update available"),
        (ServiceCheck("i", D1, None, False, "tag 'x' not found"), "error: tag 'x' not found"),
        ({"update_available": True, "error": None}, "update available"),
    ],
)
def test_status_text(check: Any, text: str) -> None:
    assert status_text(check) == text


def test_check_outcome_of_every_ending() -> None:
    good = {"services": {}, "update_available": False, "checked_at": "t", "job_id": "j"}
    assert check_outcome("j", True, good) is good
    refused = {"status": "failed", "error": {"step": "validation", "message": "job refused: x"}}
    assert check_outcome("j", True, refused)["error"] == "job refused: x"
    assert "time limit" in check_outcome("j", False, TimeoutError())["error"]
    assert check_outcome("j", False, RuntimeError("boom"))["error"] == "the worker failed: boom"
    assert check_outcome("j", False, RuntimeError())["services"] == {}


@pytest.mark.parametrize(
    ("services", "allowed", "expected"),
    [
        (None, ["api", "worker"], ("api", "worker")),
        (["worker"], ["api", "worker"], ("worker",)),
        (["worker", "api", "worker"], ["api", "worker"], ("worker", "api")),
    ],
)
def test_check_services_subset(
    services: list[str] | None, allowed: list[str], expected: tuple[str, ...]
) -> None:
    assert validate_check_services(allowed, services) == expected


@pytest.mark.parametrize(
    ("services", "allowed", "message"),
    [
        (["db"], ["api"], "services not allowed for update: db (allowed: api)"),
        ([], ["api"], "non-empty list"),
        ("api", ["api"], "non-empty list"),
        (["a;b"], ["api"], "invalid service name at services[0]"),
        (None, [], "no update services"),
    ],
)
def test_check_services_refused(services: object, allowed: list[str], message: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        validate_check_services(allowed, services)


def test_pending_check_key_depends_on_the_services() -> None:
    assert pending_check_key("q", None) == "q:check-pending:*"
    assert pending_check_key("q", ["b", "a", "b"]) == "q:check-pending:a,b"


@pytest.mark.parametrize("secret", ["", "s" * 40])
def test_the_cached_check_round_trips_and_a_forged_one_is_ignored(secret: str) -> None:
    settings = Settings(job_secret=Secret(secret))
    data = {"services": {}, "update_available": False, "checked_at": "t", "job_id": "j"}
    sealed = seal_last_check(settings, data)
    assert open_last_check(settings, sealed) == data
    assert open_last_check(settings, sealed.encode()) == data
    assert open_last_check(settings, None) is None
    assert open_last_check(settings, json.dumps({"typ": "result", **data})) is None
    if secret:
        forged = json.dumps({"typ": "last-check", **data, "update_available": True})
        assert open_last_check(settings, forged) is None
        other = seal_last_check(Settings(job_secret=Secret("o" * 40)), data)
        assert open_last_check(settings, other) is None


# ------------------------------------------------------------------------------ HTTP fallback
class _NoDigestRegistry(BaseHTTPRequestHandler):
    """Answers manifests without Docker-Content-Digest; counts requests; 404 for `missing`."""

    body = json.dumps({"schemaVersion": 2, "manifests": [{"digest": D1}]}).encode()
    seen: list[tuple[str, str, str]] = []  # noqa: RUF012 - per-class record for the test

    def _answer(self, with_body: bool) -> None:
        self.seen.append((self.command, self.path, self.headers.get("Accept", "")))
        if "missing" in self.path:
            self.send_response(404)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", OCI_INDEX)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        if with_body:
            self.wfile.write(self.body)

    def do_HEAD(self) -> None:
        self._answer(False)

    def do_GET(self) -> None:
        self._answer(True)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def no_digest_registry() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _NoDigestRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _NoDigestRegistry.seen = []
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_without_a_digest_header_the_body_is_hashed(no_digest_registry: str) -> None:
    with RegistryClient() as client:
        manifest = client.remote_manifest(parse_reference(f"{no_digest_registry}/t/app:1"))
        assert manifest.digest == sha256_digest(_NoDigestRegistry.body)
        assert manifest.media_type == OCI_INDEX and manifest.is_index
        assert manifest.children == (D1,)
        methods = [(m, p) for m, p, _ in _NoDigestRegistry.seen]
        assert methods == [("HEAD", "/v2/t/app/manifests/1"), ("GET", "/v2/t/app/manifests/1")]
        assert all(accept == ACCEPT for _, _, accept in _NoDigestRegistry.seen)
        with pytest.raises(RegistryError, match=r"tag 'missing' not found in 127\.0\.0\.1:"):
            client.remote_manifest(parse_reference(f"{no_digest_registry}/t/app:missing"))


def test_a_closed_port_is_an_unreachable_registry() -> None:
    from testbed.procs import free_port

    ref = parse_reference(f"127.0.0.1:{free_port()}/t/app")
    with (
        RegistryClient(timeout=(1.0, 1.0)) as client,
        pytest.raises(RegistryError, match=r"unreachable \(Connection refused\)"),
    ):
        client.remote_manifest(ref)


# ------------------------------------------------------------------------------ CLI output
@pytest.mark.parametrize(
    ("digest", "short"),
    [(D1, "sha256:111111111111"), (None, "-"), ("", "-"), ("odd", "odd")],
)
def test_short_digest(digest: str | None, short: str) -> None:
    assert short_digest(digest) == short


def _service(local: str | None, remote: str | None, available: bool, error: str | None) -> Any:
    return {
        "image": "x",
        "local_digest": local,
        "remote_digest": remote,
        "update_available": available,
        "error": error,
    }


@pytest.mark.parametrize(
    ("services", "error", "status"),
    [
        ({"api": _service(D1, D1, False, None)}, None, 0),
        ({"api": _service(D1, D2, True, None), "web": _service(D1, D1, False, None)}, None, 10),
        ({"api": _service(D1, D2, True, None), "web": _service(D1, None, False, "x")}, None, 1),
        ({}, "services not allowed for update: db", 1),
    ],
)
def test_check_exit_status(services: dict[str, Any], error: str | None, status: int) -> None:
    result = {
        "services": services,
        "update_available": any(s["update_available"] for s in services.values()),
        "checked_at": "2026-01-01T00:00:00+00:00",
        "job_id": "j",
        "error": error,
    }
    assert check_exit_status(result) == status


def test_the_check_table() -> None:
    result = {
        "services": {
            "api": _service(D1, D2, True, None),
            "frontend": _service(D3, D3, False, None),
            "worker": _service(D1, None, False, "registry r is unreachable (timed out)"),
        },
        "update_available": True,
        "checked_at": "2026-01-01T00:00:00+00:00",
        "job_id": "j1",
        "error": None,
    }
    assert format_check_table(result).splitlines() == [
        "SERVICE   RUNNING              AVAILABLE            STATUS",
        "api       sha256:111111111111  sha256:222222222222  update available",
        "frontend  sha256:333333333333  sha256:333333333333  up to date",
        "worker    sha256:111111111111  -                    error: registry r is unreachable "
        "(timed out)",
        "checked at 2026-01-01T00:00:00+00:00 (job j1)",
    ]
    assert format_check_table({"error": "bad"}) == "the check did not run: bad"
