"""A backup asked for with no BACKUP_COMMAND configured (the application's UI always asks):
the update runs without one and says so, instead of being refused (issue 12)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from worker.host.jobs import NO_BACKUP_CONFIGURED, backup_not_configured, playbook_vars
from worker.host.settings import Settings
from worker.host.summary import RunOutcome, build_summary
from worker.shared.request import UpdateRequest
from worker.shared.result import UpdateStatus

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)
SETTINGS = Settings(backup_command="")


def summary_for(request: UpdateRequest, settings: Settings) -> dict[str, object]:
    summary = build_summary(
        job_id="j",
        request=request,
        outcome=RunOutcome(status=UpdateStatus.successful, events=[]),
        started_at=T0,
        finished_at=T0,
        notes=backup_not_configured(settings, request, "j"),
    )
    steps = {step.name: step.message for step in summary.steps}
    return {"backup_message": steps.get("backup"), "create_backup": request.create_backup}


@pytest.mark.parametrize(
    ("asked", "command", "playbook_backup", "message"),
    [
        (True, "", False, NO_BACKUP_CONFIGURED),
        (True, "pg_dump app", True, ""),
        (False, "", False, ""),
        (False, "pg_dump app", False, ""),
    ],
)
def test_backup_without_a_command(
    asked: bool, command: str, playbook_backup: bool, message: str, tmp_path: Path
) -> None:
    settings = SETTINGS.model_copy(update=dict(backup_command=command))
    request = UpdateRequest(services=("api",), create_backup=asked)
    variables = playbook_vars(settings, request, "j", tmp_path, None)
    assert variables["compose_update_create_backup"] is playbook_backup
    result = summary_for(request, settings)
    assert result["backup_message"] == message
    assert result["create_backup"] is asked  # the request as asked stays in the summary
