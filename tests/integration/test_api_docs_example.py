"""docs/api.md's "Mounting the router" example, run as written (issue 25: it answered 422 when
`requested_by` was the app's `current_user`, which returns a user object).

The block is read out of docs/api.md and executed with a stand-in `myapp.auth` (a user object
with an email, a superuser check that lets the request through), then a UI's trigger is sent
to it. The job it queues in the bed's Redis records the user's email as `requested_by`.
"""

from __future__ import annotations

import re
import secrets
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from testbed import Stack
from tests.integration.conftest import SESSION_TAG
from worker.shared.signing import JobCodec

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"
MARKER = "<!-- docs-example: tests/integration/test_api_docs_example.py"


def docs_example() -> str:
    text = DOCS.read_text()
    after = text[text.index(MARKER) :]
    match = re.search(r"```python\n(.*?)```", after, re.DOTALL)
    assert match is not None, "the marked example has no python block"
    return match.group(1)


@dataclass
class User:
    email: str
    is_superuser: bool = True


def stand_in_auth() -> types.ModuleType:
    """`myapp.auth` as an application has it: dependencies returning a user object."""
    module = types.ModuleType("myapp.auth")

    def current_user() -> User:
        return User(email="ops@example.org")

    def require_superuser() -> User:
        return current_user()

    module.User = User  # type: ignore[attr-defined]
    module.current_user = current_user  # type: ignore[attr-defined]
    module.require_superuser = require_superuser  # type: ignore[attr-defined]
    return module


async def test_the_docs_example_queues_an_update_recording_the_user(
    stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "job_secret"
    secret.write_text(secrets.token_hex(32))
    queue = f"update-executor:docs{SESSION_TAG}:{secrets.token_hex(3)}"
    for name, value in {
        "REDIS_QUEUE_HOST": stack.redis_host,
        "REDIS_QUEUE_PORT": str(stack.redis_port),
        "UPDATE_QUEUE_NAME": queue,
        "UPDATE_JOB_SECRET_FILE": str(secret),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setitem(sys.modules, "myapp", types.ModuleType("myapp"))
    monkeypatch.setitem(sys.modules, "myapp.auth", stand_in_auth())
    namespace: dict[str, Any] = {"__name__": "docs_example"}

    exec(compile(docs_example(), str(DOCS), "exec"), namespace)  # noqa: S102 (our own docs)

    transport = httpx.ASGITransport(app=namespace["app"])
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            answer = await http.post(
                "/api/system/update/trigger", json={"dry_run": True, "services": ["api"]}
            )
    finally:
        await namespace["updates"].aclose()

    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    raw = redis.Redis(host=stack.redis_host, port=stack.redis_port).get(f"arq:job:{job_id}")
    assert isinstance(raw, bytes)
    job = JobCodec(secret.read_text().encode()).open(raw)
    assert job["k"]["requested_by"] == "ops@example.org"
    assert job["k"]["dry_run"] is True
