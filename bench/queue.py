"""Way D, the product path: `UpdateClient.submit_update` -> Redis -> a real
`update-executor worker` process (started once per deployment and kept running, as systemd
would) -> ansible-runner -> the summary read back with `client.result`."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from arq.jobs import Job

from bench.commands import WayFailed
from bench.deployment import Deployment, bench_path_env
from bench.procmon import MB, PeakSampler, load1, process_cpu_s, rss_bytes, tree_memory
from bench.result import WayResult
from bench.timing import TimingFile, callback_env, rel
from bench.ways import REPO_ROOT
from worker.host.settings import Settings
from worker.shared.client import UpdateClient

logger = logging.getLogger("bench.queue")

READY_LINE = "worker ready"
RESULT_TIMEOUT_S = 600.0


class WorkerProcess:
    """`update-executor worker` in its own process, configured through its environment."""

    def __init__(
        self,
        dep: Deployment,
        queue: str,
        log_path: Path,
        timing: TimingFile,
        *,
        playbook: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        poll_delay: float | None = None,
    ) -> None:
        self.env = {**dep.env(), **bench_path_env(), **dep.worker_env(queue)}
        self.env.update(callback_env(timing.path))
        self.env.update(extra_env or {})
        if playbook is not None:
            self.env["UPDATE_PLAYBOOK"] = str(playbook)
        self.poll_delay = poll_delay
        self.settings = Settings.from_env(self.env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the worker is not started")
        return self.proc.pid

    def start(self, timeout: float = 180.0) -> float:
        """Start the worker and wait for its "worker ready" line; return the start-up time."""
        argv = [str(Path(sys.executable).parent / "update-executor"), "worker"]
        if self.poll_delay is not None:  # a lever experiment: same worker, other poll_delay
            argv = [sys.executable, "-m", "bench.worker_launch", "--poll-delay"]
            argv.append(str(self.poll_delay))
        began = time.perf_counter()
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT
            )
        deadline = began + timeout
        while READY_LINE not in self.log_path.read_text(errors="replace"):
            if self.proc.poll() is not None:
                raise WayFailed(f"the worker exited ({self.proc.returncode}); see {self.log_path}")
            if time.perf_counter() > deadline:
                raise WayFailed(f"the worker was not ready after {timeout:.0f}s")
            time.sleep(0.05)
        return time.perf_counter() - began

    def rss_mb(self) -> float:
        return rss_bytes(self.pid) / MB

    def tree_mb(self) -> dict[str, float | int]:
        mem = tree_memory(self.pid)
        return {"processes": mem.processes, "rss_mb": mem.rss / MB, "pss_mb": mem.pss / MB}

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass(frozen=True)
class JobRecord:
    """One job seen from the client, with ARQ's own timestamps (milliseconds)."""

    job_id: str
    summary: dict[str, Any]
    t_enqueue: float  # time.time() just before submit_update
    t_result: float  # time.time() when client.result returned
    enqueue_time: datetime
    start_time: datetime
    finish_time: datetime

    @property
    def queue_latency_s(self) -> float:
        """Enqueue -> the worker starts the job (both ARQ timestamps, ms resolution)."""
        return (self.start_time - self.enqueue_time).total_seconds()


class QueueDriver:
    """The API's side: one client connection, kept open, on a private event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.client = self.loop.run_until_complete(UpdateClient.connect(settings))

    def update(self, **kwargs: Any) -> JobRecord:
        return self.loop.run_until_complete(self._update(kwargs))

    async def _update(self, kwargs: dict[str, Any]) -> JobRecord:
        t_enqueue = time.time()
        job_id = (await self.client.submit_update(**kwargs)).job_id
        summary = await self.client.result(job_id, timeout=RESULT_TIMEOUT_S)
        t_result = time.time()
        job = Job(
            job_id,
            self.client.redis,
            _queue_name=self.settings.queue_name,
            _deserializer=self.client.redis.job_deserializer,
        )
        info = await job.result_info()
        if info is None:
            raise WayFailed(f"no ARQ result info for job {job_id}")
        return JobRecord(
            job_id=job_id,
            summary=summary,
            t_enqueue=t_enqueue,
            t_result=t_result,
            enqueue_time=info.enqueue_time,
            start_time=info.start_time,
            finish_time=info.finish_time,
        )

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()


def summary_content(summary: dict[str, Any]) -> dict[str, Any]:
    """What a lever must not change in the summary: status, error, per service the image and
    digest before and after, `updated` and health, the migration, each step's status. (Not
    job ids, times, container ids or ansible's task counts.)"""

    def image(state: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if state is None else {k: state.get(k) for k in ("image_id", "digest")}

    return {
        "status": summary.get("status"),
        "error": summary.get("error"),
        "services": {
            name: {
                "image": s.get("image"),
                "before": image(s.get("before")),
                "after": image(s.get("after")),
                "updated": s.get("updated"),
                "health": s.get("health"),
            }
            for name, s in summary.get("services", {}).items()
        },
        "migrations": summary.get("migrations"),
        "steps": {s["name"]: s["status"] for s in summary.get("steps", [])},
    }


def way_d(
    driver: QueueDriver,
    worker: WorkerProcess,
    dep: Deployment,
    *,
    case: int,
    rnd: int,
    timing: TimingFile,
    changed: bool,
    way: str = "D",
) -> WayResult:
    """One update through the queue, timed from enqueue to the summary in the client's hands."""
    load, cpu0 = load1(), process_cpu_s(worker.pid)
    with PeakSampler() as sampler:
        sampler.track(worker.pid)
        t0 = time.perf_counter()
        job = driver.update(requested_by="bench")
        wall = time.perf_counter() - t0
    cpu = process_cpu_s(worker.pid) - cpu0
    summary = job.summary
    if summary.get("status") != "successful":
        raise WayFailed(
            f"D: job {job.job_id} ended {summary.get('status')}: {summary.get('error')}"
        )
    updated = sorted(name for name, s in summary["services"].items() if s["updated"])
    expected = sorted(dep.targets) if changed else []
    if updated != expected:
        raise WayFailed(f"D: updated {updated}, expected {expected}")
    times = timing.read_new()
    origin = job.t_enqueue
    breakdown = {
        "arq_enqueue": rel(job.enqueue_time.timestamp(), origin),
        "job_start": rel(job.start_time.timestamp(), origin),
        "ansible_process_start": rel(times.process_start, origin),
        "playbook_start": rel(times.playbook_start, origin),
        "first_task_start": rel(times.first_task_start, origin),
        "stats": rel(times.stats, origin),
        "job_finish": rel(job.finish_time.timestamp(), origin),
        "end": rel(job.t_result, origin),
    }
    return WayResult(
        way,
        case,
        rnd,
        wall,
        breakdown=breakdown,
        tasks=times.task_summary(),
        task_durations=times.task_durations(),
        process_tasks=times.process_tasks(),
        memory=sampler.as_dict(),
        cpu_s=cpu,
        load1=load,
        extra={
            "job_id": job.job_id,
            "summary_duration_s": summary.get("duration_s"),
            "steps": {s["name"]: s["duration_s"] for s in summary.get("steps", [])},
            "worker_rss_mb_after": round(worker.rss_mb(), 1),
            "content": summary_content(summary),
        },
    )
