"""The role's registry check (issue 20: the role's
module_utils/update_executor_registry.py): "nothing new" decided in update_start before the login
and the pull. Its rules are the worker's check's (worker/host/references.py, worker/host/check.py
`compare`): the tables here are checked against both. One loopback HTTP server stands in for a
registry with Basic or Bearer auth."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from tests.summary_schema import assert_valid_summary
from worker.host import references
from worker.host.check import compare
from worker.host.summary import RunOutcome, build_summary
from worker.shared.check import ServiceCheck
from worker.shared.request import UpdateRequest
from worker.shared.result import UpdateStatus

from .playbook_code import load

registry = load("module_utils/update_executor_registry")
start = load("library/update_start")

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64
REG = "127.0.0.1:5000"


# -------------------- the same rules as the worker's
@pytest.mark.parametrize(
    "text",
    [
        "ghcr.io/org/app:1.2",
        "ghcr.io/org/app",
        "redis",
        "redis:7",
        "library/redis:7",
        "docker.io/library/redis:7",
        "index.docker.io/org/app:1",
        "127.0.0.1:5000/acme/app:latest",
        "localhost/app",
        "[::1]:5000/app:v2",
        f"ghcr.io/org/app@{D1}",
        f"ghcr.io/org/app:1@{D1}",
        "ghcr.io/Org/App:1",  # upper case repository: refused
        "ghcr.io/org/app:-bad",
        "",
        "has space",
    ],
)
def test_references_are_parsed_as_the_worker_parses_them(text: str) -> None:
    try:
        ref = references.parse_reference(text)
    except ValueError:
        with pytest.raises(ValueError):
            registry.parse_reference(text)
        return
    assert registry.parse_reference(text) == (ref.registry, ref.repository, ref.tag, ref.digest)


@pytest.mark.parametrize(
    "header",
    [
        'Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:o/a:pull"',
        'Basic realm="Registry Realm"',
        'Basic realm="x", Bearer realm="y",service="s"',
        'Bearer realm="http://127.0.0.1:9/token",service="ue-token-registry"',
        'Bearer realm="a\\"b"',
        "garbage ,,, =",
        "",
    ],
)
def test_challenges_are_parsed_as_the_worker_parses_them(header: str) -> None:
    expected = [(c.scheme, dict(c.params)) for c in references.parse_www_authenticate(header)]
    assert registry.parse_www_authenticate(header) == expected


@pytest.mark.parametrize(
    "name",
    ["127.0.0.1:5000", "localhost:5000", "[::1]:5000", "ghcr.io", "docker.io", "10.0.0.1:5000"],
)
def test_base_urls_follow_dockers_rules_as_the_worker_does(name: str) -> None:
    assert registry.base_url(name) == references.registry_base_url(name)


@pytest.mark.parametrize(
    "url", ["ghcr.io", "https://ghcr.io/org", "127.0.0.1:5000/", "index.docker.io", "GHCR.IO"]
)
def test_the_credentials_host_is_the_workers(url: str) -> None:
    assert registry.registry_host(url) == references.registry_host(url)


@pytest.mark.parametrize(
    ("local", "remote", "children", "current"),
    [
        ([D1], D1, (), D1),  # the tag points at what the container runs
        ([D2, D1], D1, (), D1),  # pushed as one tag, pulled as another
        ([D2], D1, (), None),  # the tag moved (a new image, or back to an older one)
        ([D2], D1, (D3, D2), D2),  # an index listing the manifest the container was pulled by
        ([D2], D1, (D3,), None),  # an index without it
        ([], D1, (), None),
    ],
)
def test_a_target_is_current_exactly_when_the_workers_check_finds_no_update(
    local: list[str], remote: str, children: tuple[str, ...], current: str | None
) -> None:
    assert registry.current_digest(local, remote, children) == current
    check = ServiceCheck(image="x")
    compare(check, local, remote, children)
    assert (current is not None) == (not check.update_available and bool(local))


def test_repo_digests_of_other_repositories_do_not_count() -> None:
    digests = [f"{REG}/acme/other@{D1}", f"{REG}/acme/app@{D2}", "redis@" + D3, "garbage"]
    assert registry.repo_digests_for(REG, "acme/app", digests) == [D2]
    assert registry.repo_digests_for("docker.io", "library/redis", digests) == [D3]


# -------------------- the decision
class FakeClient:
    """`manifest` answers from a table {(repository, with_children): answer or exception}."""

    def __init__(self, answers: dict[tuple[str, bool], Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, str, str, bool]] = []

    def manifest(
        self, reg: str, repository: str, tag: str, with_children: bool = False
    ) -> tuple[str, str | None, tuple[str, ...]]:
        self.calls.append((reg, repository, tag, with_children))
        answer = self.answers[(repository, with_children)]
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[no-any-return]


APP = f"{REG}/acme/app:latest"
FRONT = f"{REG}/acme/frontend:latest"
TARGETS = ["api", "worker", "init"]
IMAGES = {"api": APP, "worker": APP, "init": APP}
RESTART = {"api": "always", "worker": "always", "init": "no"}
BEFORE = {name: {"image_id": "sha256:" + "a" * 64, "digest": D1} for name in TARGETS}
STATES = {
    "api": {"status": "running", "health": "healthy"},
    "worker": {"status": "running", "health": ""},
    "init": {"status": "exited", "exit_code": 0},
}
DIGESTS = {name: [f"{REG}/acme/app@{D1}"] for name in TARGETS}
CURRENT = {("acme/app", False): (D1, references.DOCKER_MANIFEST, ())}


def decide(**changes: Any) -> tuple[dict[str, Any], FakeClient]:
    args: dict[str, Any] = dict(
        targets=TARGETS,
        service_image=IMAGES,
        service_restart=RESTART,
        before=BEFORE,
        states=STATES,
        repo_digests=DIGESTS,
        answers=CURRENT,
    )
    args.update(changes)
    client = FakeClient(args.pop("answers"))
    return registry.nothing_new(client=client, **args), client


def test_nothing_new_when_every_target_runs_what_its_tag_points_at() -> None:
    answer, client = decide()
    assert answer["nothing_new"] is True
    assert answer["services"]["api"] == {"reference": APP, "remote_digest": D1, "local_digest": D1}
    assert set(answer["services"]) == set(TARGETS)
    assert len(client.calls) == 1  # one question per reference, whatever the number of services


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (dict(answers={("acme/app", False): (D2, references.DOCKER_MANIFEST, ())}), "new image"),
        # The tag moved back to an image the host already has (D2 runs, the tag is at D1 again).
        (dict(repo_digests={n: [f"{REG}/acme/app@{D2}"] for n in TARGETS}), "new image"),
        (
            dict(answers={("acme/app", False): registry.NotDecided("registry x is unreachable")}),
            "unreachable",
        ),
        (dict(answers={("acme/app", False): (D1, "application/json", ())}), "media type"),
        (dict(answers={("acme/app", False): (D1, None, ())}), "media type"),
        (
            dict(answers={("acme/app", False): ("md5:abc", references.DOCKER_MANIFEST, ())}),
            "sha256",
        ),
        (dict(service_image=dict(IMAGES, api=f"{REG}/acme/app@{D1}")), "pinned by digest"),
        (dict(service_image=dict(IMAGES, api="")), "build-only"),
        (dict(service_image=dict(IMAGES, api="Bad Ref")), "api"),
        (dict(before=dict(BEFORE, api=None)), "no container"),
        (dict(states=dict(STATES, api={"status": "exited", "exit_code": 0})), "not running"),
        (
            dict(states=dict(STATES, api={"status": "running", "health": "unhealthy"})),
            "not running",
        ),
        (dict(states=dict(STATES, api={"status": "running", "health": "starting"})), "not running"),
        (dict(states=dict(STATES, init={"status": "exited", "exit_code": 1})), "exit 0"),
        (dict(states=dict(STATES, init={"status": "created", "exit_code": 0})), "exit 0"),
        (dict(repo_digests=dict(DIGESTS, worker=[])), "no repo digest"),
        (dict(repo_digests=dict(DIGESTS, worker=[f"{REG}/acme/other@{D1}"])), "no repo digest"),
        (dict(targets=[]), "no target"),
    ],
)
def test_any_doubt_or_anything_new_is_not_nothing_new(changes: dict[str, Any], reason: str) -> None:
    answer, _client = decide(**changes)
    assert answer["nothing_new"] is False
    assert reason in answer["reason"]


def test_an_index_counts_when_it_lists_the_manifest_the_container_runs() -> None:
    answers = {
        ("acme/app", False): (D3, references.OCI_INDEX, ()),
        ("acme/app", True): (D3, references.OCI_INDEX, (D2, D1)),
    }
    answer, _client = decide(answers=answers)
    assert answer["nothing_new"] is True
    assert answer["services"]["api"]["local_digest"] == D1
    answers[("acme/app", True)] = (D3, references.OCI_INDEX, (D2,))
    answer, _client = decide(answers=answers)
    assert answer["nothing_new"] is False


def test_each_reference_is_looked_up_and_a_new_one_stops_the_check() -> None:
    answers = {
        ("acme/app", False): (D1, references.DOCKER_MANIFEST, ()),
        ("acme/frontend", False): (D2, references.DOCKER_MANIFEST, ()),
    }
    answer, client = decide(
        targets=["api", "frontend"],
        service_image={"api": APP, "frontend": FRONT},
        service_restart={"api": "always", "frontend": "always"},
        before={"api": BEFORE["api"], "frontend": BEFORE["api"]},
        states={"api": STATES["api"], "frontend": STATES["api"]},
        repo_digests={"api": DIGESTS["api"], "frontend": [f"{REG}/acme/frontend@{D1}"]},
        answers=answers,
    )
    assert answer["nothing_new"] is False
    assert answer["reason"] == "the registry has a new image for frontend"
    assert [call[1] for call in client.calls] == ["acme/app", "acme/frontend"]


# -------------------- update_start's part
FOUND: dict[str, Any] = {
    "targets": ["api"],
    "service_image": {"api": APP},
    "service_restart": {"api": "always"},
    "lock": {"acquired": True, "migration_pending": False},
    "before": {
        "snapshot": {"api": BEFORE["api"]},
        "states": {"api": STATES["api"]},
        "repo_digests": {"api": DIGESTS["api"]},
    },
}


@pytest.mark.parametrize(
    ("params", "found", "check_mode", "reason"),
    [
        ({}, FOUND, False, "not asked"),
        ({"registry_check": True}, FOUND, True, "check mode"),
        (
            {"registry_check": True},
            dict(FOUND, lock={"acquired": True, "migration_pending": True}),
            False,
            "an earlier migration is pending",
        ),
    ],
)
def test_update_start_does_not_ask_when_it_could_not_decide(
    params: dict[str, Any], found: dict[str, Any], check_mode: bool, reason: str
) -> None:
    client = FakeClient({})
    answer = start.registry_answer(params, found, check_mode, client=client)
    assert answer == {"nothing_new": False, "reason": reason, "services": {}}
    assert client.calls == []


def test_update_start_asks_with_the_state_before() -> None:
    client = FakeClient(CURRENT)
    answer = start.registry_answer({"registry_check": True}, FOUND, False, client=client)
    assert answer["nothing_new"] is True


@pytest.mark.parametrize(
    ("token", "result", "shown_registry"),
    [
        # A short token inside an image ID: the ID stays as it is (the rollback relies on it).
        ("abc1", {"before": {"snapshot": {"api": {"image_id": "sha256:abc1abc1"}}}}, None),
        ("s3cret-token", {"before": {"snapshot": {"api": {"image_id": "sha256:abc1"}}}}, None),
        # The registry's answer is the only part made with the token: masked there.
        (
            "s3cret-token",
            {"registry": {"nothing_new": False, "reason": "refused s3cret-token"}},
            {"nothing_new": False, "reason": "refused ********"},
        ),
        ("", {}, None),
    ],
)
def test_the_token_is_hidden_and_never_changes_an_image_id(
    token: str, result: dict[str, Any], shown_registry: dict[str, Any] | None
) -> None:
    module = SimpleNamespace(
        params={"registry_token": token, "registry_username": "u"},
        no_log_values={token} if token else set(),
    )
    before = json.loads(json.dumps(result))
    shown = start.without_token(module, dict(result))
    assert shown["invocation"]["module_args"]["registry_token"] in (
        "",
        "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER",
    )
    assert token == "" or token not in json.dumps(shown["invocation"])
    assert shown.get("before") == before.get("before")
    assert shown.get("registry") == (shown_registry or before.get("registry"))
    # Ansible's own masking would reach the image IDs: the token is left out of it.
    assert token not in module.no_log_values


# -------------------- HTTP against a stand-in
USER, TOKEN = "ci", "s3cret-token"
BODY = json.dumps({"schemaVersion": 2, "config": {"digest": D3}}).encode()
INDEX_BODY = json.dumps({"schemaVersion": 2, "manifests": [{"digest": D2}]}).encode()


class StandIn(BaseHTTPRequestHandler):
    """A registry: `auth` basic | bearer | none; `/v2/acme/redirect/...` redirects; `nodigest`
    answers without Docker-Content-Digest; `/token` issues bearer tokens for USER/TOKEN."""

    auth: ClassVar[str] = "basic"
    seen: ClassVar[list[tuple[str, str, str]]] = []

    def _manifest(self, with_body: bool) -> None:
        self.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        if self.path.startswith("/token"):
            ok = self.headers.get("Authorization") == _basic(USER, TOKEN)
            data = json.dumps({"token": "jwt-1"} if ok else {}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        wanted = {"basic": _basic(USER, TOKEN), "bearer": "Bearer jwt-1", "none": ""}[self.auth]
        if wanted and self.headers.get("Authorization") != wanted:
            self.send_response(401)
            port = self.server.server_address[1]  # type: ignore[index]
            challenge = (
                'Basic realm="r"'
                if self.auth == "basic"
                else f'Bearer realm="http://127.0.0.1:{port}/token",service="reg"'
            )
            self.send_header("WWW-Authenticate", challenge)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if "redirect" in self.path:
            self.send_response(307)
            self.send_header("Location", "http://127.0.0.2:1/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = INDEX_BODY if "index" in self.path else BODY
        media = references.OCI_INDEX if "index" in self.path else references.DOCKER_MANIFEST
        self.send_response(200)
        self.send_header("Content-Type", media)
        if "nodigest" not in self.path:
            self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(body).hexdigest())
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if with_body:
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._manifest(False)

    def do_GET(self) -> None:
        self._manifest(True)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _basic(user: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


@pytest.fixture
def stand_in() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    StandIn.seen = []
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


DIGEST = "sha256:" + hashlib.sha256(BODY).hexdigest()


@pytest.mark.parametrize("auth", ["basic", "bearer", "none"])
def test_the_client_answers_the_registrys_challenge(stand_in: str, auth: str) -> None:
    StandIn.auth = auth
    client = registry.RegistryClient((stand_in, USER, TOKEN), timeout=5)
    assert client.manifest(stand_in, "acme/app", "latest") == (
        DIGEST,
        references.DOCKER_MANIFEST,
        (),
    )
    # The second question reuses the authorization that worked: no new 401 round trip.
    StandIn.seen = []
    client.manifest(stand_in, "acme/app", "latest")
    assert len(StandIn.seen) == 1


@pytest.mark.parametrize("auth", ["basic", "bearer"])
@pytest.mark.parametrize("token", ["wrong", None, "for another registry"])
def test_wrong_or_missing_credentials_are_not_decided(
    stand_in: str, auth: str, token: str | None
) -> None:
    StandIn.auth = auth
    credentials = {
        "wrong": (stand_in, USER, "wrong"),
        None: None,
        "for another registry": ("other.example:5000", USER, TOKEN),
    }[token]
    client = registry.RegistryClient(credentials, timeout=5)
    with pytest.raises(registry.NotDecided) as raised:
        client.manifest(stand_in, "acme/app", "latest")
    assert TOKEN not in str(raised.value) and "wrong" not in str(raised.value)
    # Credentials for another registry never reach this one (nor its token service).
    assert all(authorization != _basic(USER, TOKEN) for _m, _p, authorization in StandIn.seen)


def test_a_redirect_is_not_followed(stand_in: str) -> None:
    StandIn.auth = "basic"
    client = registry.RegistryClient((stand_in, USER, TOKEN), timeout=5)
    with pytest.raises(registry.NotDecided, match="redirected"):
        client.manifest(stand_in, "acme/redirect", "latest")


def test_no_digest_header_means_the_bodys_sha256_and_an_index_lists_its_children(
    stand_in: str,
) -> None:
    StandIn.auth = "none"
    client = registry.RegistryClient(None, timeout=5)
    assert client.manifest(stand_in, "acme/nodigest", "latest")[0] == DIGEST
    digest, media, children = client.manifest(stand_in, "acme/index", "1", with_children=True)
    assert media == references.OCI_INDEX and children == (D2,)
    assert digest == "sha256:" + hashlib.sha256(INDEX_BODY).hexdigest()


def test_an_unreachable_registry_is_not_decided() -> None:
    client = registry.RegistryClient(None, timeout=1)
    with pytest.raises(registry.NotDecided, match="unreachable"):
        client.manifest("127.0.0.1:9", "acme/app", "latest")


# -------------------- the worker's summary of it
T0 = datetime(2026, 12, 7, 21, 0, 0, tzinfo=UTC)
NOOP_REASON = "skipped: no container was recreated and no earlier migration is pending"


def event(task: str, kind: str = "runner_on_ok", **res: Any) -> dict[str, Any]:
    return {
        "event": kind,
        "event_data": {
            "task": task,
            "start": T0.isoformat(),
            "end": (T0 + timedelta(seconds=1)).isoformat(),
            "duration": 1.0,
            "res": {"changed": False, **res},
        },
    }


def test_the_summary_says_the_registry_had_nothing_new_under_login_and_pull() -> None:
    snapshot = {"container_id": "c1", "image_id": "sha256:" + "a" * 64, "digest": D1}
    report = {
        "compose_project": "app",
        "targets": ["api"],
        "services": {
            "api": {"image": APP, "before": snapshot, "after": snapshot, "health": "healthy"}
        },
        "migrations": {"ran": False, "rc": None, "output_tail": "", "skip_reason": NOOP_REASON},
        "registry": {
            "nothing_new": True,
            "reason": "every target runs what its tag points at in the registry",
            "services": {"api": {"reference": APP, "remote_digest": D1, "local_digest": D1}},
        },
    }
    skipped = "runner_on_skipped"
    events = [
        event("Preflight | Check"),
        event("Lock | Take", acquired=True),
        event("Login | Log in to the registry with the private Docker config", skipped),
        event("Snapshot | Record"),
        event("Pull | Show that the registry has nothing new for the targets"),
        event("Pull | Pull the images of the target services", skipped),
        event("Recreate | Recreate the long-running target services", skipped),
        event("Migrations | Run", skipped, skip_reason="Conditional result was False"),
        event("Report | Release", released=True),
        {
            "event": "playbook_on_stats",
            "event_data": {"ok": {"h": 7}, "artifact_data": {"update_executor": report}},
        },
    ]
    summary = build_summary(
        job_id="j1",
        request=UpdateRequest(services=("api",)),
        outcome=RunOutcome(status=UpdateStatus.successful, events=events, rc=0),
        started_at=T0,
        finished_at=T0 + timedelta(seconds=3),
    ).as_dict()
    assert_valid_summary(summary)
    steps = {step["name"]: step for step in summary["steps"]}
    assert steps["login"] == dict(
        steps["login"], status="skipped", message="not needed: nothing new in the registry"
    )
    assert steps["pull"]["status"] == "ok"
    assert steps["pull"]["message"] == f"nothing new in the registry (api {D1[:19]})"
    assert steps["recreate"]["message"] == "no image changed"
    assert steps["migrations"]["message"] == NOOP_REASON
    assert summary["services"]["api"]["updated"] is False
