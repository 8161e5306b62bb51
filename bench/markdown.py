"""Render the aggregated run as docs/performance.md."""

from __future__ import annotations

from typing import Any

from bench.cases import CASES, VARIANT_WAYS, WAY_TITLES, WAYS
from bench.report import C_SEGMENTS, D_SEGMENTS
from bench.targets import PEER_TARGETS, PROCESS_TARGETS


def value(number: float | None, digits: int = 2) -> str:
    return "-" if number is None else f"{number:.{digits}f}"


def cell(text: str) -> str:
    """A table cell: a `|` in it (the role's task names, "Step | What") would end the cell."""
    return text.replace("|", "\\|")


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(item) for item in row) + " |" for row in rows]
    return lines


def _verdict(passed: bool | None) -> str:
    return {True: "**pass**", False: "**FAIL**", None: "-"}[passed]


def _machine(summary: dict[str, Any]) -> list[str]:
    m = summary["machine"]
    rows = [
        ["date", str(m.get("date"))],
        ["CPU", f"{m.get('cpu')}, {m.get('cores')} cores"],
        ["memory", f"{m.get('memory_gib')} GiB"],
        ["OS / kernel", f"{m.get('os')} / {m.get('kernel')}"],
        [
            "Docker",
            f"engine {m.get('docker_engine')}, CLI {m.get('docker_client')}, "
            f"compose {m.get('compose')}",
        ],
        [
            "Ansible",
            f"ansible-core {m.get('ansible_core')}, community.docker "
            f"{m.get('community_docker')}, ansible-runner {m.get('ansible_runner')}",
        ],
        ["queue", f"arq {m.get('arq')}, redis-py {m.get('redis_py')}, Python {m.get('python')}"],
    ]
    return table(["", ""], rows)


def _wall_times(summary: dict[str, Any]) -> list[str]:
    rows = []
    for number, entries in summary["cases"].items():
        case = CASES[int(number)]
        for way in (*WAYS, *VARIANT_WAYS):
            if way not in entries:
                continue
            e = entries[way]
            w = e["wall_s"]
            target = ""
            limit = PEER_TARGETS.get(case.number)
            if way in ("D", "D*") and limit is not None:
                ratio = e.get("ratio_to_peer")
                verdict = _verdict(None if ratio is None else ratio <= limit)
                target = f"≤ {limit:.2f} {verdict}"
            rows.append(
                [
                    f"{case.number}. {case.title}" if way == "A" else "",
                    f"{way}: {WAY_TITLES[way]}",
                    value(w["median"]),
                    f"{value(w['q1'])}-{value(w['q3'])}",
                    f"{value(w['min'])}-{value(w['max'])}",
                    value(e["ratio_to_a"]),
                    value(e.get("ratio_to_peer")),
                    target,
                    value(e["cpu_s"]["median"]),
                    value(e.get("cpu_ratio_to_a"), 1),
                    f"{value(e.get('peak_rss_mb'), 0)} / {value(e.get('peak_pss_mb'), 0)}",
                    value(e.get("load1"), 1),
                ]
            )
    header = ["case", "way", "median s", "IQR s", "min-max s", "x A", "x peer", "target (D/peer)"]
    header += ["CPU s", "CPU x A", "peak RSS / PSS MB", "load"]
    return table(header, rows)


def _targets(summary: dict[str, Any]) -> list[str]:
    rows = [[c["name"], c["target"], c["shown"], _verdict(c["passed"])] for c in summary["targets"]]
    return table(["target", "wanted", "measured", ""], rows)


def _segments(summary: dict[str, Any], way: str) -> list[str]:
    segments = D_SEGMENTS if way == "D" else C_SEGMENTS
    numbers = [n for n, e in summary["cases"].items() if way in e and "segments_s" in e[way]]
    if not numbers:
        return ["Not measured in this run."]
    header = ["segment", "what", *[f"case {n} s" for n in numbers]]
    rows = []
    for name, what, _, _ in segments:
        rows.append(
            [
                name,
                what,
                *[value(summary["cases"][n][way]["segments_s"].get(name)) for n in numbers],
            ]
        )
    rows.append(
        [
            "**before the first task**",
            "sum of the rows above `tasks`",
            *[
                value(summary["cases"][n][way]["segments_s"].get("before_first_task"))
                for n in numbers
            ],
        ]
    )
    rows.append(
        [
            "share of the wall time",
            "",
            *[f"{100 * _share(summary, n, way):.0f} %" for n in numbers],
        ]
    )
    return table(header, rows)


def _share(summary: dict[str, Any], number: str, way: str) -> float:
    share = summary["cases"][number][way]["segments_s"].get("before_first_task_share")
    return float(share or 0.0)


def _tasks(summary: dict[str, Any]) -> list[str]:
    rows = []
    for number, entries in summary["cases"].items():
        for way in ("C", "P", "D", "C*", "D*"):
            t = entries.get(way, {}).get("tasks")
            if not t:
                continue
            a = entries.get("A", {}).get("wall_s", {}).get("median")
            rows.append(
                [
                    number,
                    way,
                    value(t.get("tasks"), 0),
                    value(t.get("controller_tasks"), 0),
                    value(t.get("controller_s")),
                    value(t.get("module_tasks"), 0),
                    value(t.get("module_processes"), 0),
                    value(t.get("module_s")),
                    value(t.get("work_tasks"), 0),
                    value(t.get("work_s")),
                    value(a),
                ]
            )
    return table(
        [
            "case",
            "way",
            "tasks run",
            "controller-side tasks",
            "their s",
            "module tasks",
            "module processes",
            "their s",
            "of which update work (login, pull, up, exec)",
            "their s",
            "A total s",
        ],
        rows,
    )


def _top_case(summary: dict[str, Any]) -> str:
    """Case 1 when it was measured, else the first case measured."""
    numbers = list(summary["cases"])
    return "1" if "1" in numbers or not numbers else numbers[0]


def _top_tasks(summary: dict[str, Any], number: str) -> list[str]:
    entry = summary["cases"].get(number, {}).get("D")
    if not entry:
        return []
    rows = [
        [
            r["task"],
            r["action"].replace("community.docker.", "c.d.").replace("ansible.builtin.", ""),
            value(r["median_s"]),
            str(r["count"]),
        ]
        for r in entry.get("top_tasks", [])
    ]
    return table(["task", "action", "median s", "runs"], rows)


def _short_action(action: str) -> str:
    return action.replace("community.docker.", "c.d.").replace("ansible.builtin.", "")


def _processes(summary: dict[str, Any]) -> list[str]:
    """Module processes of D per update, listed by task, the no-op case first; the peer's in
    one line per case."""
    numbers = sorted(summary["cases"], key=lambda n: (n != "2", int(n)))
    out: list[str] = []
    for number in numbers:
        entries = summary["cases"][number]
        for way in ("D", "D*"):
            entry = entries.get(way, {})
            if "process_tasks" not in entry:
                continue
            count = entry["module_processes"]["median"]
            limit = PROCESS_TARGETS.get(int(number))
            wanted = "" if limit is None else f" (target ≤ {limit}: {_verdict(count <= limit)})"
            out += [
                f"Case {number} ({CASES[int(number)].title}), {way}: {value(count, 0)} module "
                f"processes per update (median of {entry['module_processes']['n']} runs)"
                f"{wanted}; a typical run:",
                "",
            ]
            rows = [
                [r["task"], _short_action(r["action"]), str(r["processes"])]
                for r in entry["process_tasks"]
            ]
            out += [*table(["task", "action", "processes"], rows), ""]
        peer = entries.get("P", {})
        if "process_tasks" in peer:
            tasks = "; ".join(
                f"{r['task']}" + (f" x{r['processes']}" if r["processes"] != 1 else "")
                for r in peer["process_tasks"]
            )
            out += [
                f"Case {number}, peer: {value(peer['module_processes']['median'], 0)}: {tasks}.",
                "",
            ]
    return out or ["Not measured in this run (module processes are counted since issue 20).", ""]


def _memory(summary: dict[str, Any]) -> list[str]:
    lines = []
    soak = summary.get("soak")
    for worker in summary["workers"]:
        after = ", ".join(f"{v:.0f}" for v in worker["rss_after_updates_mb"]) or "-"
        lines.append(
            f"- worker of `{worker['project']}`: ready {worker['start_s']:.1f} s after start, "
            f"idle RSS {worker['idle_rss_mb']:.1f} MB; RSS after each real update (MB): {after}"
        )
    if soak:
        lat = soak["latency_ms"]
        after = ", ".join(f"after {k}: {v:.1f} MB" for k, v in soak["rss_after_mb"].items())
        lines.append(
            f"- {soak['jobs']} consecutive no-op jobs (`{soak['playbook']}` through the same "
            f"worker code): enqueue → job start p50 {value(lat['p50'], 0)} ms, p95 "
            f"{value(lat['p95'], 0)} ms, max {value(lat['max'], 0)} ms; worker idle RSS "
            f"{soak['idle_rss_mb']:.1f} MB, {after}; job wall time median "
            f"{value((soak['job_wall_s'] or {}).get('median'))} s"
        )
    return lines


METHOD = """\
## How it is measured

`make bench` (`python -m bench`; `--rounds N`, `--quick`, `--cases 1,3`, `--soak-jobs N`; levers
with `--variant-playbook`/`--variant-env`/`--poll-delay`, see bench/README.md) starts its own
test bed (private dockerd 20.10,
registry with htpasswd auth, Redis), deploys the stacks written by `bench/project.py`
(healthchecks every 1 s, `init: true`; each registry image runs a web service with a
healthcheck and a worker without one), and per round:

1. publishes a new version of every registry image to the registry only (untimed);
2. runs A, B, C, P, D in that order, each from the same state: after A, B, C and P the stack is
   rolled back to the round's image IDs and the pulled images are deleted (untimed), so every
   way downloads and recreates the same thing; D's result is the next round's starting point.

- **A**: `docker login` into a fresh `DOCKER_CONFIG`, `docker compose pull S`,
  `docker compose up -d --wait --no-deps S`, `docker compose exec -T api /app/migrate`.
- **B**: the replaced script's sequence in this Python process (`subprocess.run`): login,
  `pull` (of the targets: the local images here cannot be pulled; the original pulled every
  image), `up -d` (every service, no wait), `ps --format json` polls (5 s apart) until `db`
  and `api` *run*, exec of the migration. It does not wait for health.
- **C**: `ansible-playbook -i inventory/localhost playbooks/update.yml -e ...` from the repository
  root, as an operator runs it.
- **P** (the peer, issue 20): `ansible-playbook -i inventory/localhost bench/variants/peer.yml
  -e ...` from the repository root (same `ansible.cfg` as C): the playbook an operator writes with
  community.docker and nothing else, one play of `docker_login` (token read from the token file
  on the controller, into a fresh Docker config like A's) → `docker_compose_v2_pull` →
  `docker_compose_v2` (the targets, `dependencies: false`, `pull: never`, `wait: true`; case 4's
  one-shot `init`, which `api` and `worker` wait for, runs first inside that same `up --wait`, as
  in A) → `docker_compose_v2_run` of the one-shot services nothing waits for (none in these
  stacks: skipped) → `docker_compose_v2_exec` of the migration. No lock, snapshots, rollback or
  report; it runs all of it also when nothing is new (case 2). "x peer" is a way's median over
  P's.
- **D**: `UpdateClient.submit_update()` → Redis → `update-executor worker` (one process per
  deployment, started before the first round and kept running) → ansible-runner → summary read
  with `client.result()` (which polls every 0.2 s). Timed from just before the enqueue to the
  summary in hand; the summary must say `successful` and name the expected services as updated.

Wall times are `time.perf_counter()` around the whole way. D's segments come from ARQ's own
`enqueue_time`/`start_time`/`finish_time` (ms) and from a callback plugin
(`bench/ansible_plugins/callback/bench_timing.py`, enabled by environment variables for C, P
and D only) that records the ansible-playbook process's kernel start time, the playbook start,
every task's start/end and the final stats; it writes a few lines per task and adds no
measurable time. Module processes: per task that is not a controller-side action and not
skipped, one per loop item and `until` attempt (from the task's result; an action plugin that
runs several modules, such as `template`, would count as one). CPU seconds of D: user+sys of the
worker process and of every child it waited for (ansible-playbook, its forks, the module
processes and the commands they ran), read from `/proc/PID/stat` before and after the job.
Memory: a thread samples `/proc` every 50 ms and sums RSS (and PSS, which splits shared pages)
over the way's process tree: the commands it started (A, B, C, P) or the worker and all its
children (D). Queue latency and RSS growth come from a separate worker running
`bench/variants/noop.yml` (one `set_stats` task, no docker work) for consecutive jobs, each
enqueued after a random 0-0.2 s pause; enqueue → start is ARQ's `start_time - enqueue_time`.

The worker runs with `UPDATE_MIN_INTERVAL=0` (the product refuses updates less than 60 s apart)
and a job secret shared with the client, as configured in production. This machine is shared
with other work: the load column shows how busy it was; CPU seconds are the figure to compare
across runs, wall times within a run (the ways alternate, so they see the same conditions).
"""


def _code_line(summary: dict[str, Any]) -> list[str]:
    code = summary.get("code")
    if not code:
        return []
    line = (
        f"Code: HEAD {code.get('head')}, worker/ and playbooks/ "
        f"{'with' if code.get('dirty') == 'yes' else 'without'} uncommitted changes, "
        f"hashes: worker {code.get('worker_sha256')}, playbooks {code.get('playbooks_sha256')}."
    )
    changed = code.get("changed_during_run")
    if changed:
        areas = ", ".join(changed) if isinstance(changed, list) else "worker/ or playbooks/"
        line += (
            f" **Changed while the run went on: {areas}** (a worker uses the code it loaded at "
            "its start; C reads the playbook at every run)."
        )
    return [line, ""]


def render(summary: dict[str, Any], extra: list[str] | None = None) -> str:
    """The page; `extra` (e.g. the lever table) goes before the method section."""
    opts = summary["options"]
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in summary["phases_s"].items())
    out = [
        "# Performance",
        "",
        "Written by `make bench` (`python -m bench`, code in `bench/`); the raw figures are in "
        "`bench/results/latest.json`. Regenerate after any change to the playbook or the worker.",
        "",
        f"Run: {opts['rounds']} rounds per case, cases {', '.join(map(str, opts['cases']))}, "
        f"{opts['soak_jobs']} soak jobs; total {summary['total_s'] / 60:.1f} min ({phases}).",
        "",
        *_code_line(summary),
        "## Machine",
        "",
        *_machine(summary),
        "",
        "## Wall time of one update, per case and way",
        "",
        *_wall_times(summary),
        "",
        "Wall time: median over the rounds, IQR and range. CPU s: CPU time of the way's own "
        "processes (commands, ansible, modules, the worker), without dockerd, containerd and the "
        "registry, so it is hardly affected by other load on the machine. Peak RSS / PSS: summed "
        "over the way's process tree (RSS counts shared pages in each process, PSS splits them). "
        "Load: "
        "1-minute load average when the run started (other jobs on the machine).",
        "",
        "## Targets (issues 6 and 20)",
        "",
        *_targets(summary),
        "",
        "## Where D's time goes (medians)",
        "",
        *_segments(summary, "D"),
        "",
        "C (`ansible-playbook` by hand), for comparison:",
        "",
        *_segments(summary, "C"),
        "",
        "P (the peer, `bench/variants/peer.yml`):",
        "",
        *_segments(summary, "P"),
        "",
        "## Inside the playbook (medians per run)",
        "",
        "Controller-side tasks (`set_fact`, `assert`, `fail`, `debug`, `set_stats`, includes) run "
        "inside ansible-playbook, and so does the role's argument check (`validate_argument_spec`, "
        "counted with the module tasks before issue 20); every other task starts a module "
        "process (a loop: one per item, `until`: one per attempt, the module processes column; "
        "since issue 13 the role's own modules too). Runs of issue 6's playbooks had "
        "action plugins (`update_preflight`, `update_lock`, `registry_login`, "
        "`compose_snapshot`, `docker_command`) that ran inside ansible-playbook: they are "
        "counted with the module tasks, so that runs compare. Update work: login, pull, up, "
        "exec.",
        "",
        *_tasks(summary),
        "",
        f"Slowest tasks of D, case {_top_case(summary)}:",
        "",
        *_top_tasks(summary, _top_case(summary)),
        "",
        "## Module processes per update (issue 20)",
        "",
        *_processes(summary),
    ]
    if summary.get("slope"):
        rows = [
            [way, value(v["s_per_service"]), value(v.get("ratio_to_a"))]
            for way, v in summary["slope"].items()
        ]
        out += [
            "## Cost of an extra updated service (case 3 - case 1) / 7",
            "",
            *table(["way", "s per service", "x A's slope"], rows),
            "",
            "Two stack sizes give a slope, not a proof of linearity.",
            "",
        ]
    out += ["## Queue latency and worker memory", "", *_memory(summary), ""]
    out += [*(extra or []), METHOD]
    return "\n".join(out)
