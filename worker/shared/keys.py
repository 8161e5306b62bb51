"""Every Redis key update-executor uses besides ARQ's own, and how long each lives.

The API side (client) and the host side (worker) both read and write these keys; they are
named here once so that the two sides cannot drift apart. All but the cool-down key are
under the queue name (UPDATE_QUEUE_NAME), so two deployments sharing a Redis never meet.
"""

from __future__ import annotations

from collections.abc import Sequence

# A finished job's result (ARQ's keep_result), its progress stream, `latest-update` and the
# start-up rollback's record stay this long (s); a signed result's `exp` says so too.
RESULT_TTL_S = 7 * 24 * 3600
# The cached last check (`last-check`) stays readable this long (s).
LAST_CHECK_TTL_S = 24 * 3600
# ARQ's timeout of one check job; lookups use short timeouts, so it is ample.
CHECK_TIMEOUT_S = 120
# A check job's own result (ARQ) stays this long (s).
CHECK_RESULT_TTL_S = 3600
# The longest JOB_TIMEOUT a worker accepts (worker/host/settings.py). The client's safety
# TTLs (the in-flight claim, a cancel request) are derived from it, not from a JOB_TIMEOUT of
# the API's own, so the API needs no copy of the worker's setting: the claim is released by
# the worker when a job ends (or found stale once ARQ says the job ended), and a cancel
# request is bound to one job, so a longer life costs nothing.
MAX_JOB_TIMEOUT_S = 86400
# About this many entries are kept per progress stream (a run has about 25).
STREAM_MAXLEN = 500
# The history stream keeps the last this many records.
HISTORY_MAXLEN = 500

# Not under the queue name: one per compose project, shared by every queue updating it.
COOLDOWN_KEY_PREFIX = "update-executor:last-update:"


def inflight_key(queue_name: str) -> str:
    """The update queued or running now (worker/shared/inflight.py)."""
    return f"{queue_name}:in-flight"


def cancel_key(queue_name: str, job_id: str) -> str:
    """A signed cancel request for a job (worker/shared/cancel.py)."""
    return f"{queue_name}:cancel:{job_id}"


def progress_key(queue_name: str, job_id: str) -> str:
    """A job's progress stream (worker/host/progress.py writes, worker/shared/progress.py reads)."""
    return f"{queue_name}:progress:{job_id}"


def latest_update_key(queue_name: str) -> str:
    """The id of the last update queued or started."""
    return f"{queue_name}:latest-update"


def history_key(queue_name: str) -> str:
    """The history stream (worker/host/history.py writes, worker/shared/history.py reads)."""
    return f"{queue_name}:history"


def last_check_key(queue_name: str) -> str:
    """The last finished check's result, sealed (worker/shared/check.py)."""
    return f"{queue_name}:last-check"


def pending_check_key(queue_name: str, services: Sequence[str] | None) -> str:
    """The queued or running check of this set of services (the client's dedupe)."""
    chosen = ",".join(sorted(set(services))) if services else "*"
    return f"{queue_name}:check-pending:{chosen}"


def check_started_key(queue_name: str) -> str:
    """Set for the API's minimum interval between two checks it starts (worker/shared/check.py)."""
    return f"{queue_name}:check-started"


def recovery_key(queue_name: str, job_id: str) -> str:
    """What the worker's start-up rollback did for an interrupted job (worker/shared/cutoff.py)."""
    return f"{queue_name}:recovery:{job_id}"


def nonce_key(queue_name: str, nonce: str) -> str:
    """A signed job's nonce, once accepted (worker/host/arq_worker.py: replays)."""
    return f"{queue_name}:nonce:{nonce}"


def cooldown_key(project: str) -> str:
    """When the last update of this compose project finished (worker/host/cooldown.py)."""
    return COOLDOWN_KEY_PREFIX + project
