"""One sentence for a failed task (issue 20), over output captured from real runs: compose's
errors (the test bed's crash and unhealthy versions; the issue's report with compose's JSON
events) and a failed migration through docker_compose_v2_exec."""

from __future__ import annotations

from typing import Any

import pytest

from worker.host.failures import describe
from worker.host.summary import failure_message

RECREATE = "Recreate | Recreate the long-running target services and wait until they are healthy"
MIGRATE = "Migrations | Run the migration command in the migration service"
# From the issue: what the UI showed for a failed recreate on the seed application's host.
EVENTS = (
    'General error: container fica_api_prod is unhealthy: {"id":"Container fica_worker_prod",'
    '"status":"Recreate"}\n{"id":"Container fica_worker_prod","status":"Recreated"}\n'
    '{"id":"Container fica_api_prod","status":"Recreate"}\n'
    '{"id":"Container fica_api_prod","status":"Recreated"}\n'
    '{"id":"Container fica_api_prod","status":"Starting"}\n'
    '{"id":"Container fica_api_prod","status":"Started"}\n'
    '{"id":"Container fica_api_prod","status":"Waiting"}\n'
    '{"id":"Container fica_api_prod","status":"Error"}'
)
MIGRATION_RESULT: dict[str, Any] = {  # docker_compose_v2_exec, captured (rc 3)
    "msg": "Task failed: Action failed: Unknown error.",
    "rc": 3,
    "stdout": "",
    "stderr": 'migration to 4 failed: relation "users" already exists\n',
    "invocation": {"module_args": {"service": "api", "command": "/app/migrate"}},
}


@pytest.mark.parametrize(
    ("task", "result", "expected"),
    [
        (
            RECREATE,
            {"msg": "General error: container uerr-worker-1 exited (1)"},
            "Container uerr-worker-1 exited with code 1 right after it started.",
        ),
        (
            RECREATE,
            {"msg": "General error: container uerr-api-1 is unhealthy"},
            "Container uerr-api-1 is unhealthy: its healthcheck failed after the recreate.",
        ),
        (
            RECREATE,
            {"msg": EVENTS},
            "Container fica_api_prod is unhealthy: its healthcheck failed after the recreate.",
        ),
        (
            RECREATE,
            {"msg": 'General error: service "init_db" didn\'t complete successfully: exit 2'},
            "Service init_db did not complete successfully: it exited with code 2.",
        ),
        (
            RECREATE,
            {"msg": 'General error: no such image: x:1\n{"id":"Container a","status":"Error"}'},
            "no such image: x:1.",
        ),
        (
            MIGRATE,
            MIGRATION_RESULT,
            "The migration command in service api exited with code 3: migration to 4 failed: "
            'relation "users" already exists',
        ),
        (
            MIGRATE,
            {**MIGRATION_RESULT, "stderr": "", "stdout": "step 1\nstep 2 failed\n"},
            "The migration command in service api exited with code 3: step 2 failed",
        ),
        (
            "Post-update | Run the hook",
            {"msg": "Unknown error.", "rc": 1, "stdout": "", "stderr": ""},
            "The command exited with code 1.",
        ),
        # Messages that say it already are kept (None: the caller uses msg).
        (
            "Login | Log in",
            {"msg": "Error connecting: Error while fetching server API version"},
            None,
        ),
        ("Pre-update | Fail", {"msg": "The pre-update hook of api exited with status 3: x"}, None),
        ("Recreate | Wait", {"msg": ""}, None),
    ],
)
def test_describe(task: str, result: dict[str, Any], expected: str | None) -> None:
    assert describe(task, result) == expected


def test_failure_message_uses_the_sentence_and_keeps_other_messages() -> None:
    assert failure_message({"msg": EVENTS}, RECREATE).startswith(
        "Container fica_api_prod is unhealthy"
    )
    assert failure_message({"msg": "boom", "stderr": "why"}, "Pull | Pull") == "boom: why"
