"""The application's own UI against the drop-in router (issue 12): its exact calls (see the
page `/configuration/system-update` of fica-academic), with its Bearer header, against the
router mounted under `/api/v1` in a real uvicorn, a real worker and the real-shaped stack:
check -> trigger {"create_backup": true, "run_migrations": true} -> poll status until
`completed` or `failed`, asserting every field the page reads. Then the same while the api
container being updated is recreated, with the API process restarting with it."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from testbed.stack import CommandError
from tests.integration.conftest import HOST_ONLY
from tests.integration.real_site import RealSite, real_site
from tests.integration.test_api import ApiServer
from tests.integration.ui_app import ADMIN_TOKEN_ENV
from tests.summary_schema import assert_valid_summary

__all__ = ["real_site"]  # the fixture

TOKEN = "ui-admin-token-0123456789"
UI_HEADERS = {"Authorization": f"Bearer {TOKEN}"}
BASE = "/api/v1/system/update"
CHECK_TIMEOUT_S = 10.0  # the page gives up on /check after 10 s
POLL_S = 1.0  # the page polls every 5 s; faster here, same calls
BACKUP = "sh -c 'echo \"-- dump of $POSTGRES_DB for $POSTGRES_USER\"'"


@contextlib.contextmanager
def ui_api(site: RealSite, tmp_path: Path) -> Iterator[ApiServer]:
    env = {k: v for k, v in site.env.items() if k not in HOST_ONLY}
    server = ApiServer({**env, ADMIN_TOKEN_ENV: TOKEN}, tmp_path / "ui-api.log")
    server.app = "tests.integration.ui_app:app"
    server.start()
    try:
        yield server
    finally:
        server.stop()
        output = server.output()
        print(f"--- api output ---\n{output[-4000:]}")
        assert site.stack.registry_password not in output


def assert_check_shape(body: dict[str, Any]) -> None:
    """Every field the page reads, with the type it expects."""
    for name in ("has_updates", "backend_update_available", "frontend_update_available"):
        assert isinstance(body[name], bool), (name, body)
    for name in (
        "backend_current_digest",
        "frontend_current_digest",
        "backend_remote_digest",
        "frontend_remote_digest",
    ):
        assert body[name] is None or body[name].startswith("sha256:"), (name, body)
    assert isinstance(body["message"], str) and body["message"]


async def check(http: httpx.AsyncClient, want_updates: bool) -> dict[str, Any]:
    """The page's "check for updates" button, pressed until the answer is a fresh one (a
    click while the worker is busy answers at once with the last check, flagged cached)."""
    deadline = time.monotonic() + 90
    while True:
        started = time.monotonic()
        response = await http.get(f"{BASE}/check", timeout=CHECK_TIMEOUT_S)
        assert time.monotonic() - started < CHECK_TIMEOUT_S
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        assert_check_shape(body)
        if not body["cached"] and body["has_updates"] is want_updates:
            return body
        assert time.monotonic() < deadline, body
        await asyncio.sleep(1)


async def trigger(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.post(
        f"{BASE}/trigger", json={"create_backup": True, "run_migrations": True}
    )
    assert response.is_success, response.text  # axios: any 2xx
    body: dict[str, Any] = response.json()
    assert body["status"] == "updating" and body["status"].upper() == "UPDATING"
    assert isinstance(body["message"], str) and body["message"]
    assert body["error"] is None and body["progress"] is None
    # Another click while it runs: a 409 whose detail the page shows as a string.
    again = await http.post(f"{BASE}/trigger", json={"create_backup": True, "run_migrations": True})
    assert again.status_code == 409, again.text
    assert isinstance(again.json()["detail"], str)
    return body


async def poll(http: httpx.AsyncClient, seen: list[dict[str, Any]], retry: bool) -> None:
    """The page's status poll until `completed` or `failed`. `retry`: what docs/migrating.md
    asks the page to do, go on after a network error or a 5xx (the original page stops)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            response = await http.get(f"{BASE}/status", timeout=10)
        except httpx.TransportError as exc:
            assert retry, exc
            seen.append({"network_error": type(exc).__name__})
            await asyncio.sleep(POLL_S)
            continue
        if response.status_code >= 500 and retry:
            seen.append({"http_error": response.status_code})
            await asyncio.sleep(POLL_S)
            continue
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()
        assert data["status"] in ("idle", "updating", "completed", "failed"), data
        assert isinstance(data["message"], str) and data["message"]
        assert data["error"] is None or isinstance(data["error"], str)
        seen.append(data)
        if data["status"] in ("completed", "failed"):
            return
        await asyncio.sleep(POLL_S)
    raise AssertionError(f"no end after 300 s: {seen[-3:]}")


def statuses(seen: list[dict[str, Any]]) -> list[str]:
    return [s["status"] for s in seen if "status" in s]


async def test_the_ui_sequence_check_trigger_poll(real_site: RealSite, tmp_path: Path) -> None:
    site = real_site
    before = site.container_ids()
    new_backend = site.publish(site.backend_repo, "2")
    with (
        site.worker(BACKUP_COMMAND=BACKUP, BACKUP_SERVICE="db"),
        ui_api(site, tmp_path) as api,
    ):
        async with httpx.AsyncClient(base_url=api.url, headers=UI_HEADERS) as http:
            # Before any update: idle (a 404 before issue 12).
            idle = (await http.get(f"{BASE}/status")).json()
            assert idle["status"] == "idle" and idle["error"] is None
            found = await check(http, want_updates=True)
            assert found["backend_update_available"] is True
            assert found["frontend_update_available"] is False
            assert found["backend_current_digest"] != found["backend_remote_digest"]
            assert found["frontend_current_digest"] == found["frontend_remote_digest"]
            assert "backend" in found["message"]

            await trigger(http)
            # A click on "check" while the worker is busy with the update: within the page's
            # 10 s, the last check's answer, flagged as cached.
            started = time.monotonic()
            busy = await http.get(f"{BASE}/check", timeout=CHECK_TIMEOUT_S)
            assert time.monotonic() - started < CHECK_TIMEOUT_S
            assert busy.status_code == 200
            assert_check_shape(busy.json())
            assert busy.json()["cached"] is True and busy.json()["has_updates"] is True
            assert "last check" in busy.json()["message"]
            seen: list[dict[str, Any]] = []
            await poll(http, seen, retry=False)
            final = seen[-1]
            assert final["status"] == "completed", final
            assert final["error"] is None
            assert "api" in final["message"] and "worker" in final["message"]
            states = statuses(seen)
            assert states[0] == "updating" and states[-1] == "completed"
            assert any(re.fullmatch(r"step \d+/\d+: \w+", s["message"]) for s in seen), seen
            summary = assert_valid_summary(final["summary"])
            assert summary["backup"]["ran"] is True
            dump = await asyncio.to_thread(Path(summary["backup"]["path"]).read_text)
            assert dump.startswith("-- dump of fica")
            assert summary["request"]["requested_by"] == "admin"

            # The page checks again 2 s after `completed`: nothing new.
            after = await check(http, want_updates=False)
            assert after["backend_current_digest"] == found["backend_remote_digest"]
    assert site.image_ids()["api"] == new_backend
    ids = site.container_ids()
    assert {s: ids[s] for s in ("db", "redis", "init-permissions", "frontend")} == {
        s: before[s] for s in ("db", "redis", "init-permissions", "frontend")
    }


def api_container(site: RealSite) -> str | None:
    """The api container's id; None while compose swaps it (a container listed, then gone
    before docker inspects it)."""
    with contextlib.suppress(CommandError):
        return site.container_ids().get("api")
    return None


def api_state(site: RealSite) -> str | None:
    """The api container's state; None while compose swaps it."""
    with contextlib.suppress(CommandError, KeyError):
        return str(site.inspect("api")["State"]["Status"])
    return None


async def test_the_poll_sees_the_update_through_the_api_restart(
    real_site: RealSite, tmp_path: Path
) -> None:
    """The API runs in the api container this update recreates: its process goes away with
    the old container and comes back with the new one. A page that retries its poll on
    network errors and 5xx sees `updating`, then `completed`. No BACKUP_COMMAND here: the
    page's create_backup=true runs the update without one, and says so."""
    site = real_site
    old_api = site.container_ids()["api"]
    site.publish(site.backend_repo, "2")
    with site.worker(), ui_api(site, tmp_path) as api:
        async with httpx.AsyncClient(base_url=api.url, headers=UI_HEADERS) as http:
            await check(http, want_updates=True)
            await trigger(http)
            seen: list[dict[str, Any]] = []
            poller = asyncio.create_task(poll(http, seen, retry=True))
            # The api container is recreated: the API process goes with it ...
            deadline = time.monotonic() + 240
            while api_container(site) in (old_api, None):
                assert time.monotonic() < deadline and not poller.done(), seen
                await asyncio.sleep(0.2)
            api.kill()
            # ... and comes back once the new container runs.
            while api_state(site) != "running":
                assert time.monotonic() < deadline, seen
                await asyncio.sleep(0.2)
            await asyncio.sleep(2 * POLL_S)  # at least one poll meets the closed port
            api.start()
            await asyncio.wait_for(poller, 240)
    errors = [s for s in seen if "status" not in s]
    assert errors, "no poll met the restart"
    first_error = seen.index(errors[0])
    assert "updating" in statuses(seen[:first_error])
    assert statuses(seen)[-1] == "completed", seen[-1]
    summary = assert_valid_summary(seen[-1]["summary"])
    assert summary["request"]["create_backup"] is True
    assert summary["backup"] is None  # none made
    backup_step = next(s for s in summary["steps"] if s["name"] == "backup")
    assert "not configured" in backup_step["message"]
