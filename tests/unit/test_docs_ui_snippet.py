"""The React page in docs/api.md ("A minimal page for that UI") calls only routes the router
has, with the methods, query parameters and body fields it takes, and reads only fields its
answers have (issue 25). The answers come from the router itself, over a stub client."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from tests.unit.stub_client import FINISHED, StubClient, call
from tests.unit.test_api import TOKEN, superuser
from worker.api.router import TriggerBody, build_router

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
PREFIX = "/system/update"
CALL = re.compile(r'call\("(GET|POST)", [`"]([^`"?]+)(\?[^`"]*)?[`"](?:, \{([^}]*)\})?')


def snippet() -> str:
    text = DOC.read_text()
    start = text.index("```tsx\n", text.index("### A minimal page for that UI"))
    return text[start + len("```tsx\n") : text.index("\n```", start)]


def routes() -> dict[tuple[str, str], APIRoute]:
    router = build_router(StubClient().factory, superuser)
    return {
        (method, route.path): route
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }


def query_params(dependant: Dependant) -> set[str]:
    """The route's query parameters, its dependencies' (e.g. /check's `wait`) included."""
    own = {param.alias for param in dependant.query_params}
    return own.union(*(query_params(sub) for sub in dependant.dependencies))


def test_the_snippet_calls_routes_the_router_has() -> None:
    calls = CALL.findall(snippet())
    known = routes()

    assert {(method, path) for method, path, _, _ in calls} == {
        ("POST", "/check"),
        ("POST", "/trigger"),
        ("POST", "/cancel"),
        ("GET", "/status"),
    }
    for method, path, query, body in calls:
        route = known[(method, PREFIX + path)]
        params = query_params(route.dependant)
        assert set(re.findall(r"[?&](\w+)=", query)) <= params, (path, query)
        fields = set(re.findall(r"(\w+):", body))
        assert fields <= set(TriggerBody.model_fields), (path, fields)


async def test_the_snippet_reads_fields_the_answers_have() -> None:
    app = FastAPI()
    app.include_router(build_router(StubClient().factory, superuser))
    answers: list[dict[str, Any]] = []
    for method, path in (
        ("POST", "/check?wait=0"),
        ("POST", "/trigger"),
        ("POST", "/cancel"),
        ("POST", f"/cancel?job_id={FINISHED}"),  # the 409
        ("GET", f"/status?job_id={FINISHED}"),
        ("GET", "/status?job_id=gone"),  # the 404
    ):
        response = await call(app, method, PREFIX + path, headers=TOKEN, json={})
        assert response.status_code < 500, (path, response.text)
        answers.append(response.json())
    fields = {name for answer in answers for name in answer}

    read = set(re.findall(r"\bdata\.(\w+)", snippet()))

    assert read, "the snippet reads no field: the pattern is out of date"
    assert read <= fields, f"read by the snippet, in no answer: {read - fields}"
