"""`format_summary`: what `update-executor enqueue --wait` and `status` print at a terminal."""

from __future__ import annotations

from typing import Any

from worker.api.tables import format_summary

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64


def summary(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "job_id": "9f0c",
        "status": "successful",
        "duration_s": 12.34,
        "request": {"requested_by": "admin", "dry_run": False},
        "services": {
            "api": {
                "updated": True,
                "before": {"image_id": A, "digest": None},
                "after": {"image_id": B, "digest": B},
                "health": "healthy",
            },
            "frontend": {
                "updated": False,
                "before": {"image_id": A, "digest": A},
                "after": {"image_id": A, "digest": A},
                "health": "running",
            },
        },
        "migrations": {"ran": True, "rc": 0, "output_tail": "ok"},
        "error": None,
        "rolled_back": False,
        "rollback": {"api": None, "frontend": None},
        "rollback_error": None,
    }
    return {**base, **changes}


def test_a_successful_update_is_one_line_per_service() -> None:
    assert format_summary(summary()).splitlines() == [
        "update 9f0c: successful in 12.3 s (requested by admin)",
        "  api       sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb  healthy",
        "  frontend  unchanged (sha256:aaaaaaaaaaaa)  running",
        "  migrations: exit status 0",
    ]


def test_a_rolled_back_update_says_where_it_failed_and_what_came_back() -> None:
    text = format_summary(
        summary(
            status="failed",
            error={"step": "recreate", "message": "container shop-api-1 is unhealthy"},
            rolled_back=True,
            rollback={"api": {"image_id": A}, "frontend": None},
            migrations={"ran": False, "rc": None},
        )
    )
    assert text.splitlines()[0].startswith("update 9f0c: failed in 12.3 s")
    assert "failed in recreate: container shop-api-1 is unhealthy" in text
    assert text.splitlines()[-1] == "rolled back: api"
    assert "migrations" not in text


def test_a_failed_rollback_is_said_plainly() -> None:
    text = format_summary(
        summary(status="failed", rolled_back=False, rollback_error="the daemon is down")
    )
    assert text.splitlines()[-1] == "THE ROLLBACK FAILED: the daemon is down"


def test_a_dry_run_and_a_summary_without_services() -> None:
    text = format_summary(
        summary(request={"dry_run": True}, services={}, migrations={}, duration_s=None)
    )
    assert text == "update 9f0c: successful (dry run: nothing changed)"


def test_a_revert_says_so() -> None:
    text = format_summary(
        summary(request={"requested_by": "oncall", "revert": True}, migrations={"ran": False})
    )
    assert text.splitlines()[0] == "revert 9f0c: successful in 12.3 s (requested by oncall)"
    assert "  api       sha256:aaaaaaaaaaaa -> sha256:bbbbbbbbbbbb  healthy" in text
