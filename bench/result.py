"""What one measured run of one way produced."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class WayResult:
    way: str
    case: int
    round: int
    wall_s: float
    steps: dict[str, float] = field(default_factory=dict)  # step -> seconds (A, B)
    breakdown: dict[str, float | None] = field(default_factory=dict)  # C, D: segments
    tasks: dict[str, float | int] = field(default_factory=dict)  # C, D: task summary
    task_durations: list[tuple[str, str, float]] = field(default_factory=list)
    # C, P, D: (task, action, module processes) of each task that started one (bench.timing)
    process_tasks: list[tuple[str, str, int]] = field(default_factory=list)
    memory: dict[str, float | int] = field(default_factory=dict)
    cpu_s: float = 0.0  # CPU of the way's own processes (not dockerd/containerd/registry)
    load1: float = 0.0  # 1-minute load average when the run started (other tenants)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "way": self.way,
            "case": self.case,
            "round": self.round,
            "wall_s": round(self.wall_s, 4),
            "steps": {k: round(v, 4) for k, v in self.steps.items()},
            "breakdown": self.breakdown,
            "tasks": self.tasks,
            "process_tasks": [list(item) for item in self.process_tasks],
            "memory": self.memory,
            "cpu_s": round(self.cpu_s, 3),
            "load1": round(self.load1, 2),
            "extra": self.extra,
        }
