"""Run a command for a measured way: its process tree is handed to the memory sampler."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from bench.procmon import PeakSampler


class WayFailed(RuntimeError):
    """A measured way did not do the update; the run stops (figures would be meaningless)."""


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    sampler: PeakSampler | None = None,
    cwd: Path | None = None,
    input: str | None = None,  # same name as subprocess.run's
    timeout: float = 600.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` without a shell, capture its output, track its tree in `sampler`."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env),
        cwd=cwd,
    )
    if sampler is not None:
        sampler.track(proc.pid)
    try:
        stdout, stderr = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    done = subprocess.CompletedProcess(list(argv), proc.returncode, stdout, stderr)
    if check and done.returncode != 0:
        tail = "\n".join((stderr or stdout).strip().splitlines()[-15:])
        raise WayFailed(f"{' '.join(argv[:4])} ... exited {done.returncode}:\n{tail}")
    return done
