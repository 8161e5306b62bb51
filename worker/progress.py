"""Live progress of an update: each step's start and end, appended to a Redis stream per job
so that a UI can show progress before the job finishes.

STUB: the interface jobs.py calls; the implementation is being written (issue 5).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from .request import UpdateRequest
from .settings import Settings

logger = logging.getLogger("update_executor.progress")


class ProgressReporter:
    """Progress of one job. `on_event` is called from the runner's thread; the async methods
    from the job's task. Never raises: progress is best effort, the update goes on."""

    def __init__(
        self, redis: Any | None, settings: Settings, job_id: str, request: UpdateRequest | None
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.job_id = job_id
        self.request = request

    async def start(self) -> None:
        """The job started: record the planned steps."""

    def on_event(self, event: Mapping[str, Any]) -> None:
        """An ansible-runner event (runner thread): step starts and ends are derived from it."""

    async def step(self, name: str, status: str, message: str = "") -> None:
        """A step the worker runs itself (e.g. the rollback after a cancel)."""

    async def finish(self, summary: Mapping[str, Any]) -> None:
        """The job ended with this summary: flush pending entries, write the final one."""
