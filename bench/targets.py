"""The issue's targets, checked against a run's aggregated figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Issue 20: D / P (the peer, bench/variants/peer.yml) on the median wall time, per case. In
# case 2 (nothing new) the role finds out nothing changed and stops; the peer does not. D / A
# is reported without a budget since issue 20 (issue 13's D / A budget was below what any
# community.docker playbook reaches).
PEER_TARGETS = {1: 1.10, 2: 0.80, 4: 1.10}
# CPU seconds of D per update (user+sys of the worker and its children), per case.
CPU_TARGETS_S = {1: 4.0}
# Module processes of D per update, per case: a no-op (case 2) and case 1.
PROCESS_TARGETS = {2: 4, 1: 6}
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


def _d(summary: dict[str, Any], case: int) -> dict[str, Any]:
    """Way D's aggregated figures in `case` ({} when not measured)."""
    entry: dict[str, Any] = summary["cases"].get(str(case), {}).get("D", {})
    return entry


def evaluate(summary: dict[str, Any]) -> list[Check]:
    """`summary` is report.aggregate()'s output."""
    checks = []
    for case, limit in PEER_TARGETS.items():
        ratio = _d(summary, case).get("ratio_to_peer")
        checks.append(check(f"case {case}: D / peer", f"≤ {limit:.2f}", ratio, limit, "{:.2f}"))
    for case, seconds in CPU_TARGETS_S.items():
        cpu = _d(summary, case).get("cpu_s", {}).get("median")
        name = f"case {case}: CPU s of D per update"
        checks.append(check(name, f"≤ {seconds:.1f} s", cpu, seconds, "{:.2f} s"))
    for case, count in PROCESS_TARGETS.items():
        processes = _d(summary, case).get("module_processes", {}).get("median")
        name = f"case {case}: module processes of D per update"
        checks.append(check(name, f"≤ {count}", processes, count, "{:.0f}"))
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
