"""Nothing new, decided before the login and the pull (issue 20): update_start compares each
target's tag's manifest digest in the registry with the repo digests of the image its container
runs. Only when every target is current does the update skip the login, the pull and everything
after it; a tag that moved (even back to an image the host has), a new image or a registry that
refuses the credentials runs the normal path. Through the queue and the real worker, on the real
registry (htpasswd auth); the daemon's image events show whether anything was pulled."""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from testbed import Stack
from testbed.images import image_id_of, registry_digest
from testbed.token_auth import TokenRegistry
from tests.integration.conftest import Deployment, Outcome, record_update
from tests.integration.test_check import push_to, token_registry  # noqa: F401 - a fixture
from tests.integration.test_noop import NOOP_REASON, assert_released, marker_path, steps
from tests.unit.playbook_code import load

registry = load("module_utils/update_executor_registry")

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"


class ImageEvents:
    """The daemon's image events (`docker events`) while the block runs: `pulled()` lists the
    references pulled. The block's end waits until a marker event (a tag of its own) came
    through, so that every event before it was read."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.lines: list[str] = []
        self.marker = f"ue-events-marker:{secrets.token_hex(4)}"

    @contextlib.contextmanager
    def watching(self) -> Iterator[ImageEvents]:
        process = subprocess.Popen(
            ["docker", "events", "--filter", "type=image", "--format", "{{json .}}"],
            env=self.stack.env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        reader = threading.Thread(target=self._read, args=(process,), daemon=True)
        reader.start()
        try:
            yield self
            # The marker: the events before it have been read once it shows.
            base = self.stack.docker("image", "ls", "-q").stdout.split()[0]
            deadline = time.monotonic() + 30
            while not any(self.marker in line for line in list(self.lines)):
                self.stack.docker("tag", base, self.marker)
                assert time.monotonic() < deadline, "the marker event never came"
                reader.join(0.2)  # waits on the reader, not a fixed sleep: it returns on EOF
        finally:
            process.terminate()
            process.wait(10)
            reader.join(10)
            if process.stdout is not None:
                process.stdout.close()
            self.stack.docker("image", "rm", self.marker, check=False)

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.append(line)

    def pulled(self) -> list[str]:
        found = []
        for line in list(self.lines):
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if event.get("Action") == "pull":
                    found.append(str(event.get("Actor", {}).get("ID") or event.get("id")))
        return found


def retag_in_registry(stack: Stack, repo: str, digest: str, tag: str = "latest") -> None:
    """Point `repo:tag` in the registry at the manifest `digest` (pushed before), as a CI that
    re-pushes an older release does: the registry only, the host is not touched."""
    auth = base64.b64encode(f"{stack.registry_username}:{stack.registry_password}".encode())
    headers = {"Authorization": f"Basic {auth.decode()}", "Accept": MANIFEST_V2}
    base = f"http://{stack.registry}/v2/{repo}/manifests"  # the bed: http://127.0.0.1:PORT
    get = urllib.request.Request(f"{base}/{digest}", headers=headers)  # noqa: S310
    with urllib.request.urlopen(get, timeout=10) as response:  # noqa: S310
        body, media = response.read(), response.headers["Content-Type"]
    put = urllib.request.Request(  # noqa: S310
        f"{base}/{tag}", data=body, method="PUT", headers={**headers, "Content-Type": media}
    )
    with urllib.request.urlopen(put, timeout=10) as response:  # noqa: S310
        assert response.status == 201


async def watched_update(
    site: Deployment, published: dict[str, str], version: str = "", **kwargs: Any
) -> tuple[Outcome, list[str]]:
    """record_update, with the references the daemon pulled meanwhile."""
    events = ImageEvents(site.stack)
    with events.watching():
        outcome = await record_update(site, published, version, **kwargs)
    return outcome, events.pulled()


def app_pulls(site: Deployment, pulled: list[str]) -> list[str]:
    return [ref for ref in pulled if site.app_repo in ref or site.frontend_repo in ref]


def test_the_sessions_noop_is_decided_by_the_registry(updated_again: Outcome) -> None:
    """The session's no-op (the same update again right after `updated_once`): no login, no
    pull, the summary of a no-op as before (test_noop.py), the step list saying why."""
    summary = updated_again.summary
    assert summary["status"] == "successful", summary["error"]
    listed = steps(summary)
    assert listed["login"]["status"] == "skipped"
    assert listed["login"]["message"] == "not needed: nothing new in the registry"
    assert listed["pull"]["status"] == "ok"
    assert listed["pull"]["message"].startswith("nothing new in the registry (api sha256:")
    assert listed["recreate"]["message"] == "no image changed"
    assert listed["migrations"]["message"] == NOOP_REASON
    assert summary["database"]["message"] == "nothing new to migrate"
    assert updated_again.after_images == updated_again.before_images
    assert updated_again.after_containers == updated_again.before_containers
    assert_released(updated_again.deployment)


async def test_nothing_new_pulls_nothing(shared_deployment: Deployment) -> None:
    site = shared_deployment  # version 1, as deployed: the registry has nothing newer
    outcome, pulled = await watched_update(site, {})
    summary = outcome.summary
    assert summary["status"] == "successful", summary["error"]
    assert app_pulls(site, pulled) == []
    assert steps(summary)["login"]["status"] == "skipped"
    assert steps(summary)["pull"]["message"].startswith("nothing new in the registry")
    assert not any(service["updated"] for service in summary["services"].values())
    assert summary["migrations"] == {"ran": False, "rc": None, "output_tail": ""}
    assert outcome.after_images == outcome.before_images
    assert outcome.after_containers == outcome.before_containers
    assert_released(site)
    assert not marker_path(site).exists()


async def test_a_new_image_is_pulled_and_deployed(shared_deployment: Deployment) -> None:
    site, version = shared_deployment, shared_deployment.next_version()
    new = site.publish(site.app_repo, version)
    outcome, pulled = await watched_update(
        site, {site.app_repo: new}, version, services=["api", "worker"]
    )
    summary = outcome.summary
    assert summary["status"] == "successful", summary["error"]
    assert app_pulls(site, pulled) != []  # the watch sees pulls: the no-op tests rely on it
    assert steps(summary)["login"]["status"] == "changed"
    assert steps(summary)["pull"]["status"] == "changed"
    assert outcome.after_images["api"] == outcome.after_images["worker"] == new
    assert f"migrated {version}" in outcome.migrations_log
    assert_released(site)


async def test_a_tag_moved_back_to_an_image_on_the_host_is_deployed(
    shared_deployment: Deployment,
) -> None:
    """v(n) runs; the registry's tag goes back to v(n-1)'s manifest, whose image the host still
    has: the registry's digest is not the one of the image running, so the update runs and
    the services end on v(n-1)."""
    site = shared_deployment
    ref = f"{site.stack.registry}/{site.app_repo}:latest"
    older_digest = registry_digest(site.stack, site.app_repo)
    older = image_id_of(site.stack, ref)
    assert older_digest is not None and older is not None
    version = site.next_version()
    newer = site.publish(site.app_repo, version)
    first = await record_update(site, {site.app_repo: newer}, version, services=["api", "worker"])
    assert first.summary["status"] == "successful", first.summary["error"]
    assert first.after_images["api"] == newer != older
    assert image_id_of(site.stack, f"{site.stack.registry}/{site.app_repo}@{older_digest}")

    retag_in_registry(site.stack, site.app_repo, older_digest)
    outcome, _pulled = await watched_update(
        site, {site.app_repo: older}, services=["api", "worker"]
    )
    summary = outcome.summary
    assert summary["status"] == "successful", summary["error"]
    assert outcome.after_images["api"] == outcome.after_images["worker"] == older
    assert summary["services"]["api"]["updated"] is True
    assert steps(summary)["pull"]["status"] == "changed"
    assert steps(summary)["recreate"]["status"] == "changed"
    assert_released(site)


async def test_a_refused_password_is_not_decided_and_fails_at_login(
    shared_deployment: Deployment, tmp_path: Path
) -> None:
    """Nothing new in the registry, but it refuses the credentials: the check cannot tell, so
    the normal path runs and fails at the login, as it always did (no silent success)."""
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-password")
    site = replace(
        shared_deployment,
        settings=shared_deployment.settings.model_copy(update=dict(registry_token_file=wrong)),
    )
    outcome = await record_update(site, {})
    summary = outcome.summary
    assert summary["status"] == "failed"
    assert summary["error"]["step"] == "login", summary["error"]
    assert "not-the-password" not in json.dumps(summary)
    assert outcome.after_images == outcome.before_images
    assert outcome.after_containers == outcome.before_containers
    assert_released(site)


def test_the_role_asks_a_token_auth_registry_as_ghcr_is_asked(
    shared_deployment: Deployment, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """The Bearer token flow (testbed/token_auth.py stands in for GHCR) of the role's registry
    client: the pushed image is current with the right credentials; wrong or no credentials
    are not decided (the normal path then logs in and fails there)."""
    tokens: TokenRegistry = request.getfixturevalue("token_registry")
    stack, issuer = shared_deployment.stack, tokens.issuer
    config = tmp_path / "docker-token"
    config.mkdir(mode=0o700)
    (config / "config.json").write_text("{}\n")
    stack.docker(
        "login", tokens.address, "--username", issuer.username, "--password-stdin",
        input=issuer.password, env={"DOCKER_CONFIG": str(config)}, timeout=60,
    )  # fmt: skip
    image = f"{tokens.address}/t/app:latest"
    push_to(stack, f"{stack.registry}/{shared_deployment.app_repo}:latest", image, config)
    digests = json.loads(
        stack.docker("image", "inspect", "--format", "{{json .RepoDigests}}", image).stdout
    )
    host = registry.registry_host(tokens.address)
    client = registry.RegistryClient((host, issuer.username, issuer.password), timeout=5)
    answer = registry.nothing_new(
        ["app"],
        {"app": image},
        {"app": "always"},
        {"app": {"image_id": "sha256:x"}},
        {"app": {"status": "running", "health": ""}},
        {"app": digests},
        client,
    )
    assert answer["nothing_new"] is True, answer
    assert [(r.scopes, r.account, r.status) for r in issuer.requests][-1:] == [
        (("repository:t/app:pull",), "bot", 200)
    ]
    for credentials in [(host, issuer.username, "ghp_wrong"), None]:
        with pytest.raises(registry.NotDecided) as refused:
            registry.RegistryClient(credentials, timeout=5).manifest(host, "t/app", "latest")
        assert issuer.password not in str(refused.value)
