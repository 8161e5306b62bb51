"""Lever experiments: `--variant-playbook`/`--variant-env` runs (C* and D* alternate with C and
D in the same rounds, so both see the same load) and `--poll-delay` runs, kept in
bench/results/levers/<label>.json and summarised on docs/performance.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.markdown import table, value


def load_levers(directory: Path) -> list[dict[str, Any]]:
    if not directory.is_dir():
        return []
    return [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]


def describe(lever: dict[str, Any]) -> str:
    opts = lever["options"]
    parts = [str(opts["note"])] if opts.get("note") else []
    variant = opts.get("variant") or {}
    if variant and not variant["playbook"].endswith("playbooks/update.yml"):
        parts.append("playbook `" + "/".join(variant["playbook"].rsplit("/", 4)[-4:]) + "`")
    parts += [f"`{k}={v}`" for k, v in variant.get("env", [])]
    if opts.get("poll_delay") is not None:
        parts.append(f"every worker with ARQ poll_delay {opts['poll_delay']} s")
    return "; ".join(parts)


def _change(before: float, after: float) -> str:
    return f"{value(before)} → {value(after)} ({100 * (after / before - 1):+.0f} %)"


def _pair_rows(label: str, lever: dict[str, Any]) -> list[list[str]]:
    rows = []
    for number, entries in lever["cases"].items():
        for base, mine in (("C", "C*"), ("D", "D*")):
            if base not in entries or mine not in entries:
                continue
            ref, new = entries[base], entries[mine]
            ref_wall, new_wall = ref["wall_s"]["median"], new["wall_s"]["median"]
            ref_cpu, new_cpu = ref["cpu_s"]["median"], new["cpu_s"]["median"]
            rows.append(
                [
                    label,
                    number,
                    f"{base} → {mine}",
                    _change(ref_wall, new_wall),
                    _change(ref_cpu, new_cpu),
                    f"{value(ref.get('ratio_to_a'))} → {value(new.get('ratio_to_a'))}",
                    f"{value(ref.get('ratio_to_peer'))} → {value(new.get('ratio_to_peer'))}"
                    if "P" in entries
                    else "-",
                    str(new["wall_s"]["n"]),
                ]
            )
            label = ""
    return rows


def render_levers(latest: dict[str, Any], levers: list[dict[str, Any]]) -> list[str]:
    if not levers:
        return []
    rows: list[list[str]] = []
    notes = []
    for lever in levers:
        label = str(lever["options"].get("label", "?"))
        notes.append(f"- **{label}** ({lever['machine'].get('date', '?')}): {describe(lever)}")
        compared = lever.get("summary_differences") or []
        if compared:
            same = sum(1 for c in compared if c["identical"])
            notes.append(
                f"  D* summaries identical in content to D's: {same} of {len(compared)}"
                + "".join(
                    f"; case {c['case']} round {c['round']}: {', '.join(c['differences'][:3])}"
                    for c in compared
                    if not c["identical"]
                )[:600]
            )
        rows += _pair_rows(label, lever)
        soak, ref = lever.get("soak"), latest.get("soak")
        if soak and ref and lever["options"].get("poll_delay") is not None:
            rows.append(
                [
                    label,
                    "soak",
                    "enqueue → start",
                    f"p50 {value(ref['latency_ms']['p50'], 0)} → "
                    f"{value(soak['latency_ms']['p50'], 0)} ms, p95 "
                    f"{value(ref['latency_ms']['p95'], 0)} → "
                    f"{value(soak['latency_ms']['p95'], 0)} ms",
                    "",
                    "",
                    "",
                    str(soak["jobs"]),
                ]
            )
    lines = ["## Lever experiments (bench/results/levers/)", "", *notes, ""]
    lines += [
        "Medians. C and D run without, C* and D* with the lever, alternating in the same rounds "
        "(same load on the machine). The poll_delay row compares with the full run above.",
        "",
    ]
    header = ["lever", "case", "ways", "wall s", "CPU s", "x A", "x peer", "rounds"]
    lines += table(header, rows)
    return [*lines, ""]
