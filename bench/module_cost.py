"""What one module task costs ansible-core on this machine, apart from the module's own work.

`python -m bench.module_cost [--runs N]` times three small plays on localhost (connection
local, pipelining on, as the role runs), N runs each, and prints the medians:

- `start`: one `debug` task: ansible-playbook's start-up, parse and exit;
- `same`: one `debug` task plus the same trivial module (`ping`) 8 times: ansible builds the
  module's AnsiballZ payload once per run and starts 8 module processes;
- `distinct`: one `debug` task plus 8 different trivial, read-only builtin modules: 8 builds
  and 8 processes.

(same - start) / 8 is what running a module task costs; (distinct - same) / 8 what building a
module's payload adds the first time a run uses that module (ansible caches it only inside
one ansible-playbook process). community.docker's modules cost more than these (their
payloads carry about 100 module_utils files, and they run `docker version` and `docker compose
version` before their work); the figures are a lower bound for a task of the role.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ANSIBLE_PLAYBOOK = Path(sys.executable).parent / "ansible-playbook"
TRIVIAL_MODULES = [
    "ansible.builtin.ping: {}",
    "ansible.builtin.stat: {path: /}",
    "ansible.builtin.slurp: {src: /etc/hostname}",
    "ansible.builtin.find: {paths: /nonexistent-update-executor}",
    "ansible.builtin.command: {argv: [/bin/true]}",
    "ansible.builtin.wait_for: {path: /, timeout: 1}",
    "ansible.builtin.getent: {database: passwd, key: root}",
    "ansible.builtin.file: {path: /, state: directory}",
]
MODULE_TASKS = len(TRIVIAL_MODULES)


def play(tasks: list[str]) -> str:
    lines = [
        "- hosts: localhost",
        "  gather_facts: false",
        "  tasks:",
        "    - ansible.builtin.debug: {msg: start}",
    ]
    lines += [f"    - {task}" for task in tasks]
    return "\n".join(lines) + "\n"


PLAYS = {
    "start": play([]),
    "same": play([TRIVIAL_MODULES[0]] * MODULE_TASKS),
    "distinct": play(TRIVIAL_MODULES),
}


def time_play(path: Path) -> float:
    argv = [str(ANSIBLE_PLAYBOOK), "-i", "localhost,", "-c", "local", str(path)]
    argv += ["-e", f"ansible_python_interpreter={sys.executable}"]
    env = {"ANSIBLE_PIPELINING": "1", "ANSIBLE_NOCOLOR": "1", "PATH": "/usr/bin:/bin"}
    began = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise SystemExit(f"{path.name} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.module_cost", description=__doc__)
    parser.add_argument("--runs", type=int, default=5, help="runs of each play (default 5)")
    args = parser.parse_args(argv)
    times: dict[str, list[float]] = {name: [] for name in PLAYS}
    with tempfile.TemporaryDirectory(prefix="ue-module-cost-") as tmp:
        paths = {name: Path(tmp) / f"{name}.yml" for name in PLAYS}
        for name, text in PLAYS.items():
            paths[name].write_text(text)
        for _ in range(args.runs):  # alternate, so that the plays see the same load
            for name, path in paths.items():
                times[name].append(time_play(path))
    median = {name: statistics.median(values) for name, values in times.items()}
    run = (median["same"] - median["start"]) / MODULE_TASKS
    build = (median["distinct"] - median["same"]) / MODULE_TASKS
    print(f"ansible-playbook with one debug task: {median['start']:.2f} s")
    print(f"a module task (process, trivial module): {run:.3f} s")
    print(f"building a module's payload, once per run and module: {build:.3f} s")
    print(f"a module task of a module new to the run: {run + build:.3f} s")
    print(f"(medians of {args.runs} runs each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
