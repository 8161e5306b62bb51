"""Every grammar a string from outside is checked against refuses a trailing newline (issue 21):
`re.match(r"^...$", "api\\n")` accepts it, since `$` also matches before a final newline. So
checks use `fullmatch`, and this table feeds each of them a valid value, then the same value
with a newline at the end. (Settings and the role's COMPOSE_ENV_PASSTHROUGH strip each name
before checking it, as does the registry's image reference parser; the source scan at the
end covers their patterns.)"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from tests.unit.test_api import TOKEN, Factory, superuser
from worker.api.router import Cursor, build_router, service_group
from worker.shared import signing
from worker.shared.progress import check_stream_id
from worker.shared.request import InvalidRequest, check_check_fields, check_request_fields
from worker.shared.untrusted import InvalidJobId, check_job_id, job_id_from

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "playbooks" / "roles" / "compose_update"


def _nonce(value: str) -> None:
    if not signing.NONCE.fullmatch(value):
        raise ValueError(value)


def _unexpected_argument(value: str) -> None:
    # An unknown argument's name is shown only when it matches the argument-name grammar.
    try:
        check_request_fields({value: 1})
    except InvalidRequest as exc:
        if "(invalid name)" in str(exc):
            raise ValueError(value) from None


# (what is checked, a valid value, the check: raises for an invalid value)
GRAMMARS: list[tuple[str, str, Callable[[str], object]]] = [
    ("job id", "9f0c1d2e", check_job_id),
    ("job id read from Redis", "9f0c1d2e", lambda v: job_id_from(v.encode())),
    ("stream entry id", "1700000000000-0", check_stream_id),
    ("SSE cursor, job part", "job/1-0", lambda v: Cursor.parse(v.replace("/", "\n/", 1))),
    ("service name", "api", lambda v: check_request_fields({"services": [v]})),
    ("check's service name", "api", lambda v: check_check_fields({"services": [v]})),
    ("argument name", "compose_file", _unexpected_argument),
    ("nonce", "a1b2c3", _nonce),
]


@pytest.mark.parametrize(
    ("valid", "check"), [(v, c) for _, v, c in GRAMMARS], ids=[n for n, _, _ in GRAMMARS]
)
def test_every_grammar_refuses_a_trailing_newline(
    valid: str, check: Callable[[str], object]
) -> None:
    if valid == "job/1-0":  # the cursor: valid as sent, split by a newline in its job id
        Cursor.parse(valid)
        with pytest.raises(RequestValidationError):
            check(valid)
        return
    check(valid)  # accepted
    with pytest.raises((ValueError, InvalidJobId, InvalidRequest)):
        check(valid + "\n")


def test_the_frontend_rule_ignores_a_trailing_newline() -> None:
    assert service_group("ghcr.io/org/app-frontend") == "frontend"
    assert service_group("ghcr.io/org/app-frontend\n") == "backend"


async def test_a_job_id_query_with_a_trailing_newline_is_a_422() -> None:
    factory = Factory()
    app = FastAPI()
    app.include_router(build_router(factory, superuser))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        for path in ("status", "events"):
            response = await http.get(
                f"/system/update/{path}", params={"job_id": "abc\n"}, headers=TOKEN
            )
            assert response.status_code == 422, (path, response.text)
        cursor = {**TOKEN, "Last-Event-ID": "job%0A/1-0"}
        response = await http.get(
            "/system/update/events", params={"since": "job\n/1-0"}, headers=cursor
        )
        assert response.status_code == 422, response.text
    await factory.client.close()


# Regular expressions that check a whole string must use fullmatch; `match` is left only where
# a pattern reads a prefix on purpose (a parser at a position, a version number's start).
PREFIX_READERS = {
    ("worker/host/references.py", "scheme_re.match(text, position)"),
    ("worker/host/references.py", "_AUTH_PARAM.match(text, position)"),
    # The same WWW-Authenticate tokenizer in the role's registry check (issue 20).
    (
        "playbooks/roles/compose_update/module_utils/update_executor_registry.py",
        "_SCHEME.match(text, position)",
    ),
    (
        "playbooks/roles/compose_update/module_utils/update_executor_registry.py",
        "_AUTH_PARAM.match(text, position)",
    ),
    # A failure message's leading words, cut off before it is shown.
    ("worker/host/failures.py", "_COMPOSE_PREFIX.match(message.strip())"),
    ("worker/host/failures.py", "_UNKNOWN_ERROR.match(message)"),
    (
        "playbooks/roles/compose_update/library/compose_snapshot.py",
        're.match(re.escape(repo) + "@", short)',
    ),
    (  # a docker host's scheme
        "playbooks/roles/compose_update/library/update_preflight.py",
        're.match(r"(unix|tcp)://", host or "")',
    ),
    (
        "playbooks/roles/compose_update/library/update_preflight.py",
        're.match(r"v?([0-9]+)[.]([0-9]+)(?:[.]([0-9]+))?", text)',
    ),
}


def test_no_grammar_is_checked_with_match() -> None:
    found = set()
    for path in [*ROOT.joinpath("worker").rglob("*.py"), *ROLE.rglob("*.py")]:
        if path.is_symlink():
            continue  # the role's module_utils that are links to its modules: checked as those
        source = path.read_text()
        for node in ast.walk(ast.parse(source)):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "match"
            ):
                found.add((str(path.relative_to(ROOT)), ast.get_source_segment(source, node)))
    assert found <= PREFIX_READERS, found - PREFIX_READERS
