"""GET and POST /check without Redis (issue 21): the POST is guarded like /trigger before the
client is asked for; which requests count as a browser's cross-site one. The flows against a
real Redis are in tests/integration/test_security_api.py."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from starlette.requests import Request

from tests.unit.test_api import TOKEN, Factory, superuser
from worker.api.router import build_router, same_site


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, True),  # not a browser (curl, httpx, the CLI)
        ("same-origin", True),
        ("none", True),  # typed in the address bar, a bookmark
        ("same-site", False),  # another origin of the same site
        ("cross-site", False),
        ("CROSS-SITE", False),
    ],
)
def test_same_site(header: str | None, expected: bool) -> None:
    headers = [] if header is None else [(b"sec-fetch-site", header.encode())]
    assert same_site(Request({"type": "http", "headers": headers})) is expected


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {},
    ],
)
async def test_a_post_check_a_browser_may_send_cross_site_is_refused(
    headers: dict[str, str],
) -> None:
    factory = Factory()
    app = FastAPI()
    app.include_router(build_router(factory, superuser))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        response = await http.post(
            "/system/update/check", content=b"", headers={**TOKEN, **headers}
        )
    assert response.status_code == 415, response.text
    assert factory.calls == 0
    await factory.client.close()
