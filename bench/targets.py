"""The issue's targets, checked against a run's aggregated figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# D / A on the median wall time, per case: issue 13's budget for cases 1, 2 and 4 (the
# community.docker role); case 3 keeps issue 6's target.
RATIO_TARGETS = {1: 2.0, 2: 3.0, 3: 1.3, 4: 2.0}
LATENCY_P50_MS = 50.0
IDLE_RSS_MB = 80.0
# "No growth over 50 consecutive updates": allocator noise aside. Our tolerance.
RSS_GROWTH_MB = 5.0
# "The slope is close to A's": our reading, D's cost per extra updated service at most this
# many times A's (the same bound as the case-1 ratio).
SLOPE_FACTOR = 1.5


@dataclass(frozen=True)
class Check:
    name: str
    target: str
    value: float | None
    shown: str
    passed: bool | None  # None: not measured in this run

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "value": self.value,
            "shown": self.shown,
            "passed": self.passed,
        }


def check(name: str, target: str, value: float | None, limit: float, fmt: str) -> Check:
    if value is None:
        return Check(name, target, None, "not measured", None)
    return Check(name, target, value, fmt.format(value), value <= limit)


def evaluate(summary: dict[str, Any]) -> list[Check]:
    """`summary` is report.aggregate()'s output."""
    checks = []
    for case, limit in RATIO_TARGETS.items():
        ratio = summary["cases"].get(str(case), {}).get("D", {}).get("ratio_to_a")
        checks.append(check(f"case {case}: D / A", f"≤ {limit}", ratio, limit, "{:.2f}"))
    soak = summary.get("soak") or {}
    p50 = (soak.get("latency_ms") or {}).get("p50")
    checks.append(
        check(
            "enqueue → job start p50",
            f"≤ {LATENCY_P50_MS:.0f} ms",
            p50,
            LATENCY_P50_MS,
            "{:.0f} ms",
        )
    )
    idle = summary.get("worker_idle_rss_mb")
    checks.append(
        check("worker idle RSS", f"≤ {IDLE_RSS_MB:.0f} MB", idle, IDLE_RSS_MB, "{:.1f} MB")
    )
    growth = soak.get("rss_growth_mb")
    checks.append(
        check(
            "worker RSS growth, job 1 → last",
            f"≤ {RSS_GROWTH_MB:.0f} MB (no growth)",
            growth,
            RSS_GROWTH_MB,
            "{:+.1f} MB",
        )
    )
    slope = summary.get("slope", {}).get("D", {}).get("ratio_to_a")
    checks.append(
        check(
            "cost per extra service: D slope / A slope",
            f"≤ {SLOPE_FACTOR} (close to A's)",
            slope,
            SLOPE_FACTOR,
            "{:.2f}",
        )
    )
    return checks
