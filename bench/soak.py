"""Queue latency and worker memory over many consecutive jobs.

A separate worker (same deployment and settings) runs `bench/variants/noop.yml` instead of
the update playbook, so each job goes through ARQ, validation (`docker compose config`),
ansible-runner, ansible-playbook and the summary exactly as an update does, without the
minute of docker work: 50 of them fit in the time budget.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.deployment import Deployment
from bench.queue import QueueDriver, WorkerProcess
from bench.stats import Spread, percentile
from bench.timing import TimingFile

logger = logging.getLogger("bench.soak")

NOOP_PLAYBOOK = Path(__file__).resolve().parent / "variants" / "noop.yml"
SETTLE_S = 0.5  # after a job, before reading RSS: let the runner thread's garbage go
IDLE_SETTLE_S = 2.0
MAX_JITTER_S = 0.2  # random pause before each enqueue: the worker polls every 0.1 s


@dataclass
class SoakResult:
    jobs: int
    latencies_s: list[float] = field(default_factory=list)
    job_wall_s: list[float] = field(default_factory=list)
    idle_rss_mb: float = 0.0
    rss_after_mb: dict[int, float] = field(default_factory=dict)  # jobs done -> worker RSS

    def as_dict(self) -> dict[str, Any]:
        lat = self.latencies_s
        return {
            "jobs": self.jobs,
            "playbook": str(NOOP_PLAYBOOK.relative_to(NOOP_PLAYBOOK.parents[2])),
            "latency_ms": {
                "p50": round(percentile(lat, 50) * 1000, 1) if lat else None,
                "p95": round(percentile(lat, 95) * 1000, 1) if lat else None,
                "max": round(max(lat) * 1000, 1) if lat else None,
                "samples": [round(v * 1000, 1) for v in lat],
            },
            "job_wall_s": Spread.of(self.job_wall_s).as_dict() if self.job_wall_s else None,
            "idle_rss_mb": round(self.idle_rss_mb, 1),
            "rss_after_mb": {str(k): round(v, 1) for k, v in self.rss_after_mb.items()},
        }


def run_soak(
    dep: Deployment, work_dir: Path, jobs: int, *, seed: int = 6, poll_delay: float | None = None
) -> SoakResult:
    """`jobs` consecutive no-op jobs, one at a time, each enqueued at a random moment."""
    rng = random.Random(seed)  # noqa: S311 - jitter, not cryptography
    timing = TimingFile(work_dir / "timing-soak.jsonl")
    worker = WorkerProcess(
        dep,
        f"update-executor:bench:soak:{dep.project}",
        work_dir / "worker-soak.log",
        timing,
        playbook=NOOP_PLAYBOOK,
        poll_delay=poll_delay,
    )
    result = SoakResult(jobs=jobs)
    worker.start()
    driver: QueueDriver | None = None
    try:
        time.sleep(IDLE_SETTLE_S)
        result.idle_rss_mb = worker.rss_mb()
        driver = QueueDriver(worker.settings)
        for index in range(1, jobs + 1):
            time.sleep(rng.uniform(0.0, MAX_JITTER_S))
            began = time.perf_counter()
            job = driver.update(run_migrations=False, requested_by="bench-soak")
            result.job_wall_s.append(time.perf_counter() - began)
            if job.summary.get("status") != "successful":
                raise RuntimeError(f"soak job {job.job_id} ended {job.summary.get('status')}")
            result.latencies_s.append(job.queue_latency_s)
            timing.read_new()
            if index in (1, 10, 25, jobs):
                time.sleep(SETTLE_S)
                result.rss_after_mb[index] = worker.rss_mb()
                logger.info("soak: %d jobs, worker RSS %.1f MB", index, result.rss_after_mb[index])
    finally:
        if driver is not None:
            driver.close()
        worker.stop()
    return result
