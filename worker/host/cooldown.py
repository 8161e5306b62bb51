"""A minimum interval between updates (UPDATE_MIN_INTERVAL, default 60 s).

Every update restarts services. A caller that is buggy or compromised (it holds the job
secret, so its jobs verify) could otherwise restart the site in a loop. The worker records
when an update finished, per compose project, and refuses to start the next one too soon.

The time is kept in Redis (it survives a worker restart) and in this process (a Redis writer
cannot erase it by deleting the key). A time in the future, which only a Redis writer can
put there, is ignored rather than blocking updates forever.

Call `check_cooldown` before running an update, `record_update` after every real (not dry
run) playbook run, whatever its outcome: a failing update restarts services too.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from redis.exceptions import ResponseError

from ..shared import keys
from .settings import Settings

logger = logging.getLogger("update_executor.cooldown")

# Allowed disagreement between this process' clock and a time read back from Redis.
CLOCK_SLACK_S = 5.0

_last_finished: dict[str, float] = {}


def cooldown_key(settings: Settings) -> str:
    """One key per compose project (or compose file, when no project name is configured)."""
    return keys.cooldown_key(settings.compose_project_name or str(settings.compose_file))


async def last_update(redis: Any, settings: Settings, now: float) -> float | None:
    key = cooldown_key(settings)
    last = _last_finished.get(key)
    try:
        raw = await redis.get(key)
        stored = float(raw) if raw is not None else None
    except (ValueError, ResponseError):  # garbage, or a key of another type: a Redis writer's
        logger.warning("ignoring %s: not a time", key)
        stored = None
    if stored is not None and stored <= now + CLOCK_SLACK_S:
        last = stored if last is None else max(last, stored)
    return last


async def check_cooldown(redis: Any, settings: Settings) -> str | None:
    """None when an update may start now, else the message that refuses it."""
    interval = settings.min_interval
    if interval <= 0:
        return None
    now = time.time()
    last = await last_update(redis, settings, now)
    if last is None:
        return None
    elapsed = max(now - last, 0.0)
    if elapsed >= interval:
        return None
    wait = max(math.ceil(interval - elapsed), 1)
    return (
        f"too soon: the last update finished {elapsed:.0f} s ago and updates must be at least "
        f"{interval} s apart (UPDATE_MIN_INTERVAL); try again in {wait} s"
    )


async def record_update(redis: Any, settings: Settings) -> None:
    """Note that an update finished now."""
    now = time.time()
    key = cooldown_key(settings)
    _last_finished[key] = now
    if settings.min_interval > 0:
        await redis.set(key, f"{now:.3f}", ex=settings.min_interval)
