"""worker/host/check.py before it needs Docker or a registry: a check that cannot run says why
(moved from tests/integration/test_check.py: it needs no deployment)."""

from __future__ import annotations

from pathlib import Path

from worker.host.check import check_for_updates
from worker.host.settings import Settings


async def test_a_check_that_cannot_run_says_why(tmp_path: Path) -> None:
    missing = Settings(compose_file=tmp_path / "nope.yml", update_services=())
    result = await check_for_updates({"settings": missing, "job_id": "test", "redis": None})
    assert result["error"] == f"compose file {tmp_path / 'nope.yml'} does not exist"
    assert result["services"] == {} and result["update_available"] is False
