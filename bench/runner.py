"""The whole benchmark run: a bed, the cases (A B C D alternating per round), the soak."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.cases import CASES, VARIANT_WAYS, WAYS, Case
from bench.deployment import Deployment
from bench.machine import code_fingerprint, machine_info
from bench.queue import QueueDriver, WorkerProcess, way_d
from bench.result import WayResult
from bench.soak import SoakResult, run_soak
from bench.timing import TimingFile
from bench.ways import PLAYBOOK, way_a, way_b, way_c, way_p
from testbed import TestBed
from testbed.stack import Stack

logger = logging.getLogger("bench.runner")

BETWEEN_WAYS_S = 0.5  # let the daemon settle after a roll-back before the next measured run
IDLE_SETTLE_S = 2.0


@dataclass(frozen=True)
class Variant:
    """A lever under test: C* and D* run with it, alternating with C and D in every round."""

    playbook: Path = PLAYBOOK  # a copy in bench/variants/, never the product's
    env: tuple[tuple[str, str], ...] = ()  # extra environment for ansible (C*) and the worker (D*)


@dataclass(frozen=True)
class Options:
    rounds: int = 5
    cases: tuple[int, ...] = (1, 2, 3)
    soak_jobs: int = 50
    variant: Variant | None = None
    poll_delay: float | None = None  # ARQ poll_delay of every worker (None: the product's)

    @property
    def ways(self) -> tuple[str, ...]:
        return (*WAYS, *VARIANT_WAYS) if self.variant else WAYS


@dataclass
class WorkerInfo:
    project: str
    start_s: float
    idle_rss_mb: float
    idle_tree: dict[str, float | int]
    rss_after_updates_mb: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "start_s": round(self.start_s, 2),
            "idle_rss_mb": round(self.idle_rss_mb, 1),
            "idle_tree": {k: round(v, 1) for k, v in self.idle_tree.items()},
            "rss_after_updates_mb": [round(v, 1) for v in self.rss_after_updates_mb],
        }


@dataclass
class BenchResults:
    options: Options
    machine: dict[str, str | int | float] = field(default_factory=dict)
    runs: list[WayResult] = field(default_factory=list)
    workers: list[WorkerInfo] = field(default_factory=list)
    soak: SoakResult | None = None
    phases_s: dict[str, float] = field(default_factory=dict)
    total_s: float = 0.0
    code: dict[str, str] = field(default_factory=dict)  # fingerprint at the start
    code_changed: list[str] = field(default_factory=list)  # areas changed during the run


@dataclass
class QueueSide:
    """The worker of one deployment and the client talking to it."""

    worker: WorkerProcess
    driver: QueueDriver
    timing: TimingFile
    info: WorkerInfo

    def close(self) -> None:
        self.driver.close()
        self.worker.stop()


class BenchRun:
    def __init__(self, stack: Stack, options: Options, results: BenchResults) -> None:
        self.stack = stack
        self.options = options
        self.results = results
        # Outside the bed's directory, so the logs survive a failed run.
        self.work = Path(tempfile.mkdtemp(prefix="ue-bench-work-"))
        logger.info("work directory (worker logs, timing files): %s", self.work)
        self.c_timing = TimingFile(self.work / "timing-c.jsonl")
        self.deployments: dict[str, Deployment] = {}
        self.queues: dict[str, QueueSide] = {}
        self._created = 0  # deployments so far: project names b1, b2, ... are never reused

    # ------------------------------------------------------------------ set-up
    def deployment(self, case: Case) -> Deployment:
        dep = self.deployments.get(case.stack_key)
        if dep is None:
            self.retire_others(case.stack_key)
            self._created += 1
            project = f"b{self._created}"
            dep = Deployment(self.stack, project, case.shape, self.work / project)
            with self.phase("deploy"):
                dep.deploy()
            self.deployments[case.stack_key] = dep
        return dep

    def retire_others(self, keep: str) -> None:
        """Only one stack runs at a time: idle healthchecks of another would add noise."""
        for key in [k for k in self.deployments if k != keep]:
            for side_key in (key, key + "*"):
                side = self.queues.pop(side_key, None)
                if side is not None:
                    side.close()
            self.deployments.pop(key).down()

    def queue(self, case: Case, dep: Deployment, variant: Variant | None = None) -> QueueSide:
        key = case.stack_key + ("*" if variant else "")
        side = self.queues.get(key)
        if side is None:
            name = dep.project + ("-variant" if variant else "")
            timing = TimingFile(self.work / f"timing-d-{name}.jsonl")
            worker = WorkerProcess(
                dep,
                f"update-executor:bench:{name}",
                self.work / f"worker-{name}.log",
                timing,
                playbook=variant.playbook if variant and variant.playbook != PLAYBOOK else None,
                extra_env=dict(variant.env) if variant else None,
                poll_delay=self.options.poll_delay,
            )
            with self.phase("worker start"):
                start_s = worker.start()
                time.sleep(IDLE_SETTLE_S)
            info = WorkerInfo(name, start_s, worker.rss_mb(), worker.tree_mb())
            logger.info(
                "worker for %s ready in %.1fs, idle RSS %.1f MB",
                dep.project,
                start_s,
                info.idle_rss_mb,
            )
            side = QueueSide(worker, QueueDriver(worker.settings), timing, info)
            self.queues[key] = side
            self.results.workers.append(info)
        return side

    def phase(self, name: str) -> _Phase:
        return _Phase(self.results.phases_s, name)

    # ------------------------------------------------------------------ measuring
    def run_case(self, case: Case) -> None:
        dep = self.deployment(case)
        side = self.queue(case, dep)
        if not case.changes and not dep.registry_is_current():
            dep.push_running()
        ways: dict[str, Callable[[int], WayResult]] = {
            "A": lambda rnd: way_a(dep, case.number, rnd),
            "B": lambda rnd: way_b(dep, case.number, rnd),
            "C": lambda rnd: way_c(dep, case.number, rnd, self.c_timing),
            "P": lambda rnd: way_p(dep, case.number, rnd, self.c_timing),
            "D": lambda rnd: way_d(
                side.driver,
                side.worker,
                dep,
                case=case.number,
                rnd=rnd,
                timing=side.timing,
                changed=case.changes,
            ),
        }
        variant = self.options.variant
        if variant is not None:
            lever = self.queue(case, dep, variant)
            ways["C*"] = lambda rnd: way_c(
                dep,
                case.number,
                rnd,
                self.c_timing,
                variant.playbook,
                extra_env=dict(variant.env),
                way="C*",
            )
            ways["D*"] = lambda rnd: way_d(
                lever.driver,
                lever.worker,
                dep,
                case=case.number,
                rnd=rnd,
                timing=lever.timing,
                changed=case.changes,
                way="D*",
            )
        order = self.options.ways
        for rnd in range(1, self.options.rounds + 1):
            with self.phase("untimed chores"):
                baseline = dep.running()
                if case.changes:
                    dep.publish()
            for index, way in enumerate(order):
                with self.phase("untimed chores"):
                    images_before = dep.image_ids()
                    time.sleep(BETWEEN_WAYS_S)
                with self.phase(f"measured {way}"):
                    result = ways[way](rnd)
                self.results.runs.append(result)
                if way == "D":
                    side.info.rss_after_updates_mb.append(result.extra["worker_rss_mb_after"])
                if way == "D*":
                    lever.info.rss_after_updates_mb.append(result.extra["worker_rss_mb_after"])
                logger.info("case %d round %d %s: %.2fs", case.number, rnd, way, result.wall_s)
                with self.phase("untimed chores"):
                    dep.expect_updated(baseline, changed=case.changes)
                    # After the last way the new version stays: the next round's baseline.
                    if case.changes and index < len(order) - 1:
                        dep.roll_back(baseline, images_before)

    def run_soak(self) -> None:
        dep = self.deployment(CASES[1])
        with self.phase("soak"):
            self.results.soak = run_soak(
                dep, self.work, self.options.soak_jobs, poll_delay=self.options.poll_delay
            )

    def close(self) -> None:
        for side in self.queues.values():
            side.close()
        for dep in self.deployments.values():
            dep.down()


class _Phase:
    """Adds the time spent in a `with` block to `phases[name]`."""

    def __init__(self, phases: dict[str, float], name: str) -> None:
        self.phases = phases
        self.name = name
        self.began = 0.0

    def __enter__(self) -> None:
        self.began = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        spent = time.perf_counter() - self.began
        self.phases[self.name] = self.phases.get(self.name, 0.0) + spent


def run_bench(options: Options) -> BenchResults:
    """Start a bed, run the selected cases and the soak, stop everything (also on failure)."""
    began = time.perf_counter()
    results = BenchResults(options=options)
    with TestBed() as stack:
        os.environ["DOCKER_HOST"] = stack.docker_host
        results.phases_s["bed start"] = time.perf_counter() - began
        results.machine = machine_info(stack)
        root = Path(__file__).resolve().parent.parent
        results.code = code_fingerprint(root)
        bench = BenchRun(stack, options, results)
        ok = False
        try:
            # Cases on the 5-service stack, then the soak on it, then the 20-service stack.
            for number in [n for n in options.cases if CASES[n].shape.total == 5]:
                bench.run_case(CASES[number])
            if options.soak_jobs:
                bench.run_soak()
            for number in [n for n in options.cases if CASES[n].shape.total != 5]:
                bench.run_case(CASES[number])
            ok = True
        finally:
            bench.close()
            if ok:
                shutil.rmtree(bench.work, ignore_errors=True)
    after = code_fingerprint(root)
    results.code_changed = [
        key.removesuffix("_sha256")
        for key in after
        if key.endswith("_sha256") and after[key] != results.code.get(key)
    ]
    if results.code_changed:
        logger.warning("changed during the run: %s", ", ".join(results.code_changed))
    results.total_s = time.perf_counter() - began
    return results
