"""The fields the application's own UI reads (issue 12), as pure functions of the router's
answers: `has_updates` & co. from a check, `status`/`message`/`error` from a job's status."""

from __future__ import annotations

from typing import Any

import pytest

from worker.api.router import (
    image_repository,
    legacy_check_fields,
    legacy_status_fields,
    service_group,
)

BACKEND = "ghcr.io/xzeggaedu/fica-academic-backend:latest"
FRONTEND = "ghcr.io/xzeggaedu/fica-academic-frontend:latest"


def svc(image: str, local: str | None, remote: str | None, error: str | None = None) -> Any:
    return {
        "image": image,
        "local_digest": local,
        "remote_digest": remote,
        "update_available": bool(local and remote and local != remote and not error),
        "error": error,
    }


@pytest.mark.parametrize(
    ("image", "frontend_images", "group"),
    [
        (BACKEND, None, "backend"),
        (FRONTEND, None, "frontend"),
        ("127.0.0.1:5000/t1/frontend:latest", None, "frontend"),
        ("registry:5000/org/web@sha256:" + "a" * 64, None, "frontend"),
        ("ghcr.io/org/frontend-tools:1", None, "backend"),
        (None, None, "backend"),
        ("ghcr.io/org/site:1", ["ghcr.io/org/site"], "frontend"),
        ("ghcr.io/org/site:1", ["org/site:2"], "frontend"),
        (FRONTEND, ["ghcr.io/org/site"], "backend"),
    ],
)
def test_service_group(image: str | None, frontend_images: list[str] | None, group: str) -> None:
    assert service_group(image, frontend_images) == group


def test_image_repository() -> None:
    assert image_repository("127.0.0.1:5000/a/b:latest") == "127.0.0.1:5000/a/b"
    assert image_repository("127.0.0.1:5000/a/b") == "127.0.0.1:5000/a/b"
    assert image_repository("a/b@sha256:" + "0" * 64) == "a/b"


CHECK = {
    "services": {
        "api": svc(BACKEND, "sha256:b1", "sha256:b2"),
        "worker": svc(BACKEND, "sha256:b1", "sha256:b2"),
        "frontend": svc(FRONTEND, "sha256:f1", "sha256:f1"),
    },
    "update_available": True,
    "checked_at": "2026-11-30T10:00:00+00:00",
    "job_id": "c1",
    "error": None,
}


@pytest.mark.parametrize(
    ("check", "expected", "message"),
    [
        pytest.param(
            CHECK,
            {
                "has_updates": True,
                "backend_update_available": True,
                "frontend_update_available": False,
                "backend_current_digest": "sha256:b1",
                "backend_remote_digest": "sha256:b2",
                "frontend_current_digest": "sha256:f1",
                "frontend_remote_digest": "sha256:f1",
            },
            "Updates available: backend.",
            id="backend news",
        ),
        pytest.param(
            {
                **CHECK,
                "services": {"frontend": svc(FRONTEND, "sha256:f1", "sha256:f1")},
                "update_available": False,
            },
            {
                "has_updates": False,
                "backend_update_available": False,
                "frontend_update_available": False,
                "backend_current_digest": None,
                "backend_remote_digest": None,
                "frontend_current_digest": "sha256:f1",
            },
            "The system is up to date.",
            id="up to date",
        ),
        pytest.param(
            {
                "services": {},
                "update_available": None,
                "checked_at": None,
                "job_id": None,
                "error": None,
                "cached": True,
                "pending": True,
            },
            {"has_updates": False, "backend_current_digest": None},
            "No check has finished yet",
            id="no check yet, the worker is slow",
        ),
        pytest.param(
            {**CHECK, "cached": True, "pending": True},
            {"has_updates": True},
            "a new one is still running",
            id="the last check, flagged as cached",
        ),
        pytest.param(
            {
                **CHECK,
                "services": {"api": svc(BACKEND, "sha256:b1", None, "registry down")},
                "update_available": False,
            },
            {"has_updates": False, "backend_update_available": False},
            "Not checked: api: registry down",
            id="a service not checked",
        ),
        pytest.param(
            {"services": {}, "update_available": None, "checked_at": None, "error": "Redis down"},
            {"has_updates": False},
            "The check could not run: Redis down",
            id="the check could not run",
        ),
    ],
)
def test_legacy_check_fields(check: Any, expected: dict[str, Any], message: str) -> None:
    fields = legacy_check_fields(check)
    assert {k: fields[k] for k in expected} == expected
    assert message in fields["message"]
    for group in ("backend", "frontend"):
        assert isinstance(fields[f"{group}_update_available"], bool)


def step(name: str, status: str, planned: bool = True) -> dict[str, Any]:
    return {"name": name, "status": status, "planned": planned}


PLANNED = ["preflight", "lock", "login", "snapshot", "pull", "recreate", "migrations", "report"]


def running(current: str | None, done: int, extra: list[dict[str, Any]] | None = None) -> Any:
    steps = [step(n, "ok" if i < done else "pending") for i, n in enumerate(PLANNED)]
    return {
        "job_id": "j",
        "state": "running",
        "current_step": current,
        "progress": {"done": done, "planned": len(PLANNED), "steps": steps + (extra or [])},
        "summary": None,
    }


def finished(summary: dict[str, Any]) -> Any:
    return {"job_id": "j", "state": "finished", "current_step": None, "summary": summary}


@pytest.mark.parametrize(
    ("answer", "status", "message", "error"),
    [
        pytest.param(None, "idle", "No update", None, id="no update"),
        pytest.param(
            {"job_id": "j", "state": "queued", "current_step": None, "progress": {}},
            "updating",
            "queued",
            None,
            id="queued",
        ),
        pytest.param(running(None, 0), "updating", "starting", None, id="worker took it"),
        pytest.param(running("recreate", 5), "updating", "step 6/8: recreate", None, id="step"),
        pytest.param(
            running("rollback", 5, [step("rollback", "running", planned=False)]),
            "updating",
            "step rollback",
            None,
            id="rolling back",
        ),
        pytest.param(
            finished(
                {
                    "status": "successful",
                    "error": None,
                    "services": {"api": {"updated": True}, "worker": {"updated": True}},
                }
            ),
            "completed",
            "Update completed: api, worker updated.",
            None,
            id="completed",
        ),
        pytest.param(
            finished(
                {
                    "status": "failed",
                    "rolled_back": True,
                    "rollback_error": None,
                    "error": {"step": "recreate", "message": "Recreate failed: api unhealthy."},
                }
            ),
            "failed",
            "Update failed at recreate.",
            "Recreate failed: api unhealthy. The previous version was restored (rolled back).",
            id="failed and rolled back",
        ),
        pytest.param(
            finished(
                {
                    "status": "failed",
                    "rolled_back": False,
                    "rollback_error": "tag failed",
                    "error": {"step": "recreate", "message": "Recreate failed."},
                }
            ),
            "failed",
            "Update failed at recreate.",
            "Recreate failed. THE ROLLBACK FAILED: tag failed",
            id="rollback failed",
        ),
        pytest.param(
            finished(
                {
                    "status": "timeout",
                    "rolled_back": False,
                    "rollback_error": None,
                    "error": {"step": "pull", "message": "Timed out."},
                }
            ),
            "failed",
            "Update timeout at pull.",
            "Timed out. Not rolled back.",
            id="timeout",
        ),
        pytest.param(
            finished(
                {
                    "status": "rolled_back",
                    "rolled_back": True,
                    "rollback_error": None,
                    "error": {"step": "migrations", "message": "Migrations failed: exit 1."},
                    "database": {"action": "downgraded", "revision_before": "a1"},
                }
            ),
            "failed",
            "Update rolled_back at migrations.",
            "Migrations failed: exit 1. The previous version was restored (rolled back). "
            "The database was put back at revision a1 (downgraded).",
            id="database downgraded",
        ),
        pytest.param(
            finished(
                {
                    "status": "rolled_back",
                    "rolled_back": True,
                    "error": {
                        "step": "post-update",
                        "message": "Post-update failed. Rolled back: api restored. The database "
                        "was put back at revision a1 (downgraded).",
                    },
                    "database": {"action": "downgraded", "revision_before": "a1"},
                }
            ),
            "failed",
            "Update rolled_back at post-update.",
            "Post-update failed. Rolled back: api restored. The database was put back at "
            "revision a1 (downgraded). The previous version was restored (rolled back).",
            id="database sentence said once",
        ),
        pytest.param(
            finished(
                {
                    "status": "rolled_back",
                    "rolled_back": True,
                    "error": {"step": "migrations", "message": "Migrations failed."},
                    "database": {
                        "action": "restored",
                        "revision_before": "a1",
                        "message": "Restored from the backup b: writes after it are lost.",
                    },
                }
            ),
            "failed",
            "Update rolled_back at migrations.",
            "Migrations failed. The previous version was restored (rolled back). The database "
            "was put back at revision a1 (restored). Restored from the backup b: writes after "
            "it are lost.",
            id="database restored",
        ),
        pytest.param(
            finished(
                {
                    "status": "failed",
                    "rolled_back": False,
                    "rollback_error": None,
                    "error": {"step": "interrupted", "message": "Interrupted."},
                    "database": {
                        "action": "failed",
                        "revision_before": "a1",
                        "revision_after": "b2",
                    },
                }
            ),
            "failed",
            "Update failed at interrupted.",
            "Interrupted. Not rolled back. THE DATABASE WAS NOT PUT BACK: it is at revision b2, "
            "not a1.",
            id="database not put back",
        ),
        pytest.param(
            finished(
                {
                    "status": "failed",
                    "rolled_back": False,
                    "rollback_error": "THE DATABASE WAS NOT PUT BACK: it is at revision b2, not "
                    "a1 (the downgrade failed). Finish by hand: x",
                    "error": {"step": "post-update", "message": "Post-update failed."},
                    "database": {
                        "action": "failed",
                        "revision_before": "a1",
                        "revision_after": "b2",
                    },
                }
            ),
            "failed",
            "Update failed at post-update.",
            "Post-update failed. THE ROLLBACK FAILED: THE DATABASE WAS NOT PUT BACK: it is at "
            "revision b2, not a1 (the downgrade failed). Finish by hand: x",
            id="database not put back said once",
        ),
        pytest.param(
            finished(
                {
                    "status": "rolled_back",
                    "rolled_back": True,
                    "error": {"step": "post-update", "message": "Post-update failed."},
                    "migrations": {"ran": True, "rc": 0},
                    "database": {"mode": "off", "action": "none", "message": "no revision command"},
                }
            ),
            "failed",
            "Update rolled_back at post-update.",
            "Post-update failed. The previous version was restored (rolled back). The database "
            "was not put back (no revision command): it is as the update left it.",
            id="database off",
        ),
        pytest.param(
            finished(
                {
                    "status": "rolled_back",
                    "rolled_back": True,
                    "error": {"step": "recreate", "message": "Recreate failed."},
                    "migrations": {"ran": False},
                    "database": {"mode": "downgrade", "action": "none", "revision_before": "a1"},
                }
            ),
            "failed",
            "Update rolled_back at recreate.",
            "Recreate failed. The previous version was restored (rolled back).",
            id="database untouched",
        ),
        pytest.param(
            finished(None),  # type: ignore[arg-type]
            "failed",
            "Update failed at the queue.",
            "The update ended without a result. Not rolled back.",
            id="no summary",
        ),
    ],
)
def test_legacy_status_fields(answer: Any, status: str, message: str, error: str | None) -> None:
    fields = legacy_status_fields(answer)
    assert fields["status"] == status
    assert message in fields["message"]
    assert fields["error"] == error
