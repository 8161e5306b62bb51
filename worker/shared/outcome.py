"""What an update's summary means for the people and systems around it: one outcome word
(successful, failed, rolled_back, canceled, timeout, refused) and, for a refused job, a short
reason. Pure functions, shared by notifications, the history and the metrics.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    successful = "successful"
    failed = "failed"
    rolled_back = "rolled_back"
    canceled = "canceled"
    timeout = "timeout"
    refused = "refused"


# Steps of a summary that says the job was refused before anything ran (no playbook steps).
REFUSAL_STEPS = frozenset({"validation", "cooldown"})

# Words in a refused job's message (worker/shared/signing.py) -> the `reason` label of the metric;
# a fixed, short set so that a Redis writer cannot grow the metric's label space.
REFUSAL_REASONS = (
    ("signature", "signature"),
    ("not signed", "unsigned"),
    ("no job secret", "unsigned"),
    ("expired", "expired"),
    ("replay", "replay"),
    ("already accepted", "replay"),
    ("pickle", "malformed"),
    ("malformed", "malformed"),
    ("not json", "malformed"),
    ("unknown function", "malformed"),
)


def _error(summary: Mapping[str, Any]) -> Mapping[str, Any]:
    error = summary.get("error")
    return error if isinstance(error, Mapping) else {}


def outcome_of(summary: Mapping[str, Any]) -> Outcome:
    """The outcome an operator cares about: a refusal and a rollback are told apart from a
    plain failure."""
    if not summary.get("steps") and _error(summary).get("step") in REFUSAL_STEPS:
        return Outcome.refused
    if summary.get("rolled_back"):
        return Outcome.rolled_back
    try:
        return Outcome(str(summary.get("status")))
    except ValueError:
        return Outcome.failed


def refusal_reason(summary: Mapping[str, Any]) -> str:
    """cooldown, validation, or for a job the worker would not run (bad signature, expired,
    replayed, malformed): that word; `other` when none fits."""
    error = _error(summary)
    message = str(error.get("message") or "").lower()
    if error.get("step") == "cooldown":
        return "cooldown"
    if not message.startswith("job refused"):
        return "validation"
    for words, reason in REFUSAL_REASONS:
        if words in message:
            return reason
    return "other"


def is_failure(outcome: Outcome) -> bool:
    return outcome is not Outcome.successful
