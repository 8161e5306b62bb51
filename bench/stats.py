"""Small statistics for the report: median, quartiles, percentiles (no numpy needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear-interpolated percentile (`pct` in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Spread:
    """Median, quartiles and range of one series of measurements."""

    n: int
    median: float
    q1: float
    q3: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(
            n=len(values),
            median=percentile(values, 50),
            q1=percentile(values, 25),
            q3=percentile(values, 75),
            min=min(values),
            max=max(values),
        )

    def as_dict(self) -> dict[str, float | int]:
        return {
            "n": self.n,
            "median": round(self.median, 4),
            "q1": round(self.q1, 4),
            "q3": round(self.q3, 4),
            "min": round(self.min, 4),
            "max": round(self.max, 4),
        }
