"""`python -m bench` / `make bench`: options, logging, and where the results go."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from bench.cases import CASES
from bench.levers import load_levers, render_levers
from bench.markdown import render
from bench.report import aggregate, stored, write_json
from bench.runner import Options, Variant, run_bench
from bench.ways import PLAYBOOK, REPO_ROOT

logger = logging.getLogger("bench")

RESULTS_DIR = REPO_ROOT / "bench" / "results"
LEVERS_DIR = RESULTS_DIR / "levers"
# Every run's raw measurements and per-lever page (not committed: .gitignore).
RAW_DIR = RESULTS_DIR / "raw"
DOCS_PAGE = REPO_ROOT / "docs" / "performance.md"
BUDGET_S = 15 * 60
QUICK_ROUNDS = 2
QUICK_SOAK_JOBS = 10
RESERVED_LABELS = ("latest", "quick")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Time the same update done as plain compose commands (A), the old script "
        "(B), ansible-playbook (C) and through the queue and worker (D).",
    )
    parser.add_argument("--rounds", type=int, help="rounds per case (default 5; --quick: 2)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"development run: {QUICK_ROUNDS} rounds, {QUICK_SOAK_JOBS} soak jobs; writes "
        "bench/results/quick.json (raw: bench/results/raw/), leaves docs/performance.md alone",
    )
    parser.add_argument("--cases", default="1,2,3,4", help="comma list of cases (default 1,2,3,4)")
    parser.add_argument(
        "--soak-jobs", type=int, help="consecutive jobs for latency and RSS growth (default 50)"
    )
    lever = parser.add_argument_group(
        "levers",
        "measure a change without touching the product; needs --label, results in "
        "bench/results/levers/LABEL.json (summarised on docs/performance.md)",
    )
    lever.add_argument(
        "--variant-playbook",
        type=Path,
        help="also run C* and D* with this playbook (a copy in bench/variants/), alternating "
        "with C and D in every round",
    )
    lever.add_argument(
        "--variant-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="also run C* and D* with this extra environment (e.g. ANSIBLE_STRATEGY=...)",
    )
    lever.add_argument(
        "--poll-delay", type=float, help="run every worker with this ARQ poll_delay (seconds)"
    )
    lever.add_argument("--label", help="name of the lever's result files")
    lever.add_argument("--note", default="", help="what the lever changes, for the report")
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="rewrite docs/performance.md from bench/results/latest.json and the lever results",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.case_list = tuple(sorted({int(c) for c in args.cases.split(",") if c.strip()}))
    except ValueError:
        parser.error("--cases takes numbers, e.g. 1,3")
    unknown = [c for c in args.case_list if c not in CASES]
    if unknown or not args.case_list:
        parser.error(f"unknown case(s) {unknown}; known: {sorted(CASES)}")
    if args.rounds is not None and args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if any("=" not in item for item in args.variant_env):
        parser.error("--variant-env takes KEY=VALUE")
    is_lever = bool(args.variant_playbook or args.variant_env or args.poll_delay is not None)
    if is_lever != bool(args.label):
        parser.error("--label goes with a lever (--variant-playbook, --variant-env, --poll-delay)")
    if args.label in RESERVED_LABELS:
        parser.error(f"--label {args.label} is reserved")
    return args


def variant_of(args: argparse.Namespace) -> Variant | None:
    if not (args.variant_playbook or args.variant_env):
        return None
    env = tuple((k, v) for k, v in (item.split("=", 1) for item in args.variant_env))
    return Variant(playbook=(args.variant_playbook or PLAYBOOK).resolve(), env=env)


def render_page() -> int:
    """docs/performance.md from the latest full run, plus the lever experiments."""
    latest = RESULTS_DIR / "latest.json"
    if not latest.is_file():
        logger.error("no %s: run `make bench` first", latest)
        return 1
    summary = json.loads(latest.read_text())
    # Hand-written: what was applied to the product, with before/after figures (kept across runs).
    notes = RESULTS_DIR / "applied.md"
    extra = [*notes.read_text().rstrip("\n").splitlines(), ""] if notes.is_file() else []
    extra += render_levers(summary, load_levers(LEVERS_DIR))
    DOCS_PAGE.write_text(render(summary, extra) + "\n")
    logger.info("wrote %s", DOCS_PAGE)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    if args.render_only:
        return render_page()
    # The client logs every enqueue at INFO; the bench logs each run itself.
    logging.getLogger("update_executor").setLevel(logging.WARNING)
    options = Options(
        rounds=args.rounds or (QUICK_ROUNDS if args.quick else 5),
        cases=args.case_list,
        soak_jobs=args.soak_jobs
        if args.soak_jobs is not None
        else (QUICK_SOAK_JOBS if args.quick else 50),
        variant=variant_of(args),
        poll_delay=args.poll_delay,
    )
    label = args.label or ("quick" if args.quick else "latest")
    out_dir = LEVERS_DIR if args.label else RESULTS_DIR
    logger.info("bench: %s", options)
    began = time.perf_counter()
    results = run_bench(options)
    summary = aggregate(results)
    summary["options"].update(label=label, note=args.note)
    json_path = out_dir / f"{label}.json"
    write_json(summary, RAW_DIR / f"{label}.json")
    write_json(stored(summary, full_cases=not args.label), json_path)
    if label == "latest":
        render_page()
        md_path: Path = DOCS_PAGE
    else:
        md_path = RAW_DIR / f"{label}.md"
        md_path.write_text(render(summary) + "\n")
    elapsed = time.perf_counter() - began
    logger.info("wrote %s and %s in %.1f min", json_path, md_path, elapsed / 60)
    for item in summary["targets"]:
        logger.info(
            "target %-45s %-22s %-14s %s",
            item["name"],
            item["target"],
            item["shown"],
            {True: "pass", False: "FAIL", None: "-"}[item["passed"]],
        )
    if label == "latest" and elapsed > BUDGET_S:
        logger.warning(
            "the run took %.1f min, over the %d min budget", elapsed / 60, BUDGET_S // 60
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
