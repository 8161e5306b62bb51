"""Aggregate a run into the JSON document and the Markdown page (docs/performance.md)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from statistics import median
from typing import Any

from bench.cases import CASES, VARIANT_WAYS, WAYS
from bench.result import WayResult
from bench.runner import BenchResults
from bench.stats import Spread
from bench.targets import evaluate

D_SEGMENTS = (
    ("queue", "enqueue → worker starts the job (ARQ start_time)", "job_start", None),
    (
        "job set-up",
        "validation (`compose config`), runner set-up, spawn",
        "ansible_process_start",
        "job_start",
    ),
    (
        "ansible start-up",
        "interpreter, imports, inventory, playbook parse",
        "playbook_start",
        "ansible_process_start",
    ),
    ("play set-up", "play start → first task starts", "first_task_start", "playbook_start"),
    ("tasks", "first task start → last task done (stats)", "stats", "first_task_start"),
    ("wrap-up", "runner ends, summary built, result stored", "job_finish", "stats"),
    ("result pickup", "result stored → client.result returns (0.05 s polls)", "end", "job_finish"),
)
C_SEGMENTS = (
    ("ansible start-up", "spawn → playbook start", "playbook_start", None),
    ("play set-up", "play start → first task starts", "first_task_start", "playbook_start"),
    ("tasks", "first task start → last task done", "stats", "first_task_start"),
    ("exit", "stats → process exit", "end", "stats"),
)


def _segment(run: WayResult, end_key: str, start_key: str | None) -> float | None:
    end = run.breakdown.get(end_key)
    start = 0.0 if start_key is None else run.breakdown.get(start_key)
    if end is None or start is None:
        return None
    return end - start


def _median_or_none(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(median(present), 3) if present else None


def _segments(
    runs: list[WayResult], table: tuple[tuple[str, str, str, str | None], ...]
) -> dict[str, float | None]:
    out = {name: _median_or_none([_segment(r, e, s) for r in runs]) for name, _, e, s in table}
    before = [r.breakdown.get("first_task_start") for r in runs]
    shares = [b / r.wall_s for r, b in zip(runs, before, strict=True) if b is not None and r.wall_s]
    out["before_first_task"] = _median_or_none(before)
    out["before_first_task_share"] = round(median(shares), 3) if shares else None
    return out


def _top_tasks(runs: list[WayResult], limit: int = 10) -> list[dict[str, Any]]:
    by_name: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run in runs:
        for name, action, seconds in run.task_durations:
            by_name[(name, action)].append(seconds)
    rows = [
        {"task": name, "action": action, "median_s": round(median(values), 3), "count": len(values)}
        for (name, action), values in by_name.items()
    ]
    rows.sort(key=lambda row: -float(str(row["median_s"])))
    return rows[:limit]


def process_listing(runs: list[list[tuple[str, str, int]]]) -> list[dict[str, Any]]:
    """The module processes of a typical run, by task: the listing of the (first) run whose
    total is the median total (the lower middle one for an even number of runs)."""
    if not runs:
        return []
    totals = [sum(n for _, _, n in tasks) for tasks in runs]
    middle = sorted(totals)[(len(totals) - 1) // 2]
    chosen = runs[totals.index(middle)]
    return [{"task": name, "action": action, "processes": n} for name, action, n in chosen]


def ratio(value: float | None, reference: float | None, digits: int = 3) -> float | None:
    """value / reference, rounded; None when either is missing or the reference is 0."""
    if value is None or not reference:
        return None
    return round(value / reference, digits)


def _way_entry(runs: list[WayResult]) -> dict[str, Any]:
    entry: dict[str, Any] = {"wall_s": Spread.of([r.wall_s for r in runs]).as_dict()}
    entry["cpu_s"] = Spread.of([r.cpu_s for r in runs]).as_dict()
    entry["load1"] = _median_or_none([r.load1 for r in runs])
    entry["peak_rss_mb"] = _median_or_none([float(r.memory.get("peak_rss_mb", 0)) for r in runs])
    entry["peak_pss_mb"] = _median_or_none([float(r.memory.get("peak_pss_mb", 0)) for r in runs])
    if runs[0].steps:
        entry["steps_s"] = {
            k: _median_or_none([r.steps.get(k) for r in runs]) for k in runs[0].steps
        }
    if runs[0].tasks:
        entry["tasks"] = {
            k: _median_or_none([float(r.tasks.get(k, 0)) for r in runs]) for k in runs[0].tasks
        }
        entry["top_tasks"] = _top_tasks(runs)
        if "module_processes" in runs[0].tasks:
            entry["module_processes"] = Spread.of(
                [float(r.tasks.get("module_processes", 0)) for r in runs]
            ).as_dict()
            entry["process_tasks"] = process_listing([r.process_tasks for r in runs])
    if runs[0].way in ("D", "D*"):
        entry["segments_s"] = _segments(runs, D_SEGMENTS)
    elif runs[0].way in ("C", "C*", "P"):
        entry["segments_s"] = _segments(runs, C_SEGMENTS)
    return entry


def aggregate(results: BenchResults) -> dict[str, Any]:
    cases: dict[str, dict[str, Any]] = {}
    for number in results.options.cases:
        entries: dict[str, Any] = {}
        for way in (*WAYS, *VARIANT_WAYS):
            runs = [r for r in results.runs if r.case == number and r.way == way]
            if runs:
                entries[way] = _way_entry(runs)
        a = entries.get("A", {}).get("wall_s", {}).get("median")
        a_cpu = entries.get("A", {}).get("cpu_s", {}).get("median")
        peer = entries.get("P", {}).get("wall_s", {}).get("median")
        for entry in entries.values():
            entry["ratio_to_a"] = ratio(entry["wall_s"]["median"], a)
            entry["cpu_ratio_to_a"] = ratio(entry["cpu_s"]["median"], a_cpu, 2)
            entry["ratio_to_peer"] = ratio(entry["wall_s"]["median"], peer)
        cases[str(number)] = entries
    slope: dict[str, Any] = {}
    if "1" in cases and "3" in cases:
        extra = CASES[3].shape.targets - CASES[1].shape.targets
        for way in (*WAYS, *VARIANT_WAYS):
            if way in cases["1"] and way in cases["3"]:
                per = cases["3"][way]["wall_s"]["median"] - cases["1"][way]["wall_s"]["median"]
                slope[way] = {"s_per_service": round(per / extra, 3)}
        a_slope = slope.get("A", {}).get("s_per_service")
        for entry in slope.values():
            entry["ratio_to_a"] = round(entry["s_per_service"] / a_slope, 2) if a_slope else None
    soak = results.soak.as_dict() if results.soak else None
    if soak and soak["rss_after_mb"]:
        after = results.soak.rss_after_mb if results.soak else {}
        soak["rss_growth_mb"] = round(after[max(after)] - after[min(after)], 1)
    summary: dict[str, Any] = {
        "machine": results.machine,
        "options": {
            "rounds": results.options.rounds,
            "cases": list(results.options.cases),
            "soak_jobs": results.options.soak_jobs,
            "variant": {
                "playbook": str(results.options.variant.playbook),
                "env": [list(kv) for kv in results.options.variant.env],
            }
            if results.options.variant
            else None,
            "poll_delay": results.options.poll_delay,
        },
        "code": {**results.code, "changed_during_run": results.code_changed},
        "total_s": round(results.total_s, 1),
        "phases_s": {k: round(v, 1) for k, v in results.phases_s.items()},
        "cases": cases,
        "slope": slope,
        "workers": [w.as_dict() for w in results.workers],
        "worker_idle_rss_mb": round(results.workers[0].idle_rss_mb, 1) if results.workers else None,
        "soak": soak,
    }
    summary["targets"] = [c.as_dict() for c in evaluate(summary)]
    if results.options.variant:
        summary["summary_differences"] = summary_differences(results.runs)
    summary["runs"] = [r.as_dict() for r in results.runs]
    return summary


def summary_differences(runs: list[WayResult]) -> list[dict[str, Any]]:
    """Per case and round, where D*'s summary differs from D's (same start, same new version):
    a lever must leave the summary identical in content."""
    out = []
    by_key = {(r.case, r.round, r.way): r for r in runs}
    for (case, rnd, way), run in sorted(by_key.items()):
        base = by_key.get((case, rnd, "D"))
        if way != "D*" or base is None:
            continue
        mine, ref = run.extra.get("content", {}), base.extra.get("content", {})
        diffs = sorted(_diff(ref, mine))
        out.append({"case": case, "round": rnd, "identical": not diffs, "differences": diffs})
    return out


def _diff(a: object, b: object, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        return [d for k in keys for d in _diff(a.get(k), b.get(k), f"{path}.{k}" if path else k)]
    return [] if a == b else [f"{path}: {a!r} vs {b!r}"[:300]]


# What bench/results keeps of each way in a lever's or an old run's cases: the figures
# docs/performance.md compares (the raw runs and the per-task detail stay in results/raw/).
KEPT_PER_WAY = (
    "wall_s",
    "cpu_s",
    "ratio_to_a",
    "ratio_to_peer",
    "cpu_ratio_to_a",
    "load1",
    "peak_pss_mb",
    "module_processes",
)


def stored(summary: dict[str, Any], *, full_cases: bool = True) -> dict[str, Any]:
    """What bench/results keeps (committed, a few KB): the aggregate without the raw runs;
    for a lever (`full_cases=False`) only the figures per way that the page compares."""
    kept = {key: item for key, item in summary.items() if key != "runs"}
    if not full_cases:
        kept["cases"] = {
            number: {
                way: {key: entry[key] for key in KEPT_PER_WAY if key in entry}
                for way, entry in entries.items()
            }
            for number, entries in summary["cases"].items()
        }
    return kept


def write_json(summary: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1) + "\n")
