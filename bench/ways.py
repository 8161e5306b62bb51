"""Ways A, B, C and P: the same update as plain commands, as the replaced script, as
`ansible-playbook` of the role run by hand, and as the playbook an operator writes with
community.docker alone (the peer). Way D (the queue) is in bench.queue."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path

from bench.commands import WayFailed, run
from bench.deployment import Deployment, bench_path_env
from bench.procmon import PeakSampler, children_cpu_s, load1
from bench.result import WayResult
from bench.timing import TimingFile, callback_env, rel

logger = logging.getLogger("bench.ways")

REPO_ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = REPO_ROOT / "playbooks" / "update.yml"
PEER_PLAYBOOK = REPO_ROOT / "bench" / "variants" / "peer.yml"
INVENTORY = REPO_ROOT / "inventory" / "localhost"

# The replaced script waited with `ps` polls 5 s apart (30 tries) for db and api to run.
OLD_POLL_DELAY_S = 5.0
OLD_POLL_TRIES = 30


class Steps:
    """Times consecutive steps of one run."""

    def __init__(self) -> None:
        self.began = time.perf_counter()
        self._last = self.began
        self.times: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = now - self._last
        self._last = now

    @property
    def total(self) -> float:
        return self._last - self.began


def way_a(dep: Deployment, case: int, rnd: int) -> WayResult:
    """Plain commands: login into a temp DOCKER_CONFIG, pull, up --wait --no-deps, exec."""
    compose = ["docker", "compose", "-f", str(dep.compose_file), "-p", dep.project]
    load, cpu0 = load1(), children_cpu_s()
    with PeakSampler() as sampler:
        steps = Steps()
        config = dep.temp_docker_config("a")
        env = {**dep.env(), "DOCKER_CONFIG": str(config)}
        login = ["docker", "login", dep.stack.registry, "--username"]
        login += [dep.stack.registry_username, "--password-stdin"]
        run(login, env=env, input=dep.stack.registry_password, sampler=sampler)
        steps.mark("login")
        run([*compose, "pull", *dep.targets], env=env, sampler=sampler)
        steps.mark("pull")
        up = [*compose, "up", "-d", "--wait", "--no-deps", *dep.targets]
        run(up, env=env, sampler=sampler)
        steps.mark("up")
        migrate = [*compose, "exec", "-T", dep.migration_service, dep.migration_command]
        run(migrate, env=env, sampler=sampler)
        steps.mark("migrate")
        shutil.rmtree(config, ignore_errors=True)
        steps.mark("cleanup")
    return WayResult(
        "A",
        case,
        rnd,
        steps.total,
        steps=steps.times,
        memory=sampler.as_dict(),
        cpu_s=children_cpu_s() - cpu0,
        load1=load,
    )


def _old_containers_ready(dep: Deployment, env: dict[str, str], sampler: PeakSampler) -> bool:
    """The replaced script's check: `db` and `api` are "running" (not healthy)."""
    done = run(
        ["docker", "compose", "-f", str(dep.compose_file), "ps", "--format", "json"],
        env=env,
        sampler=sampler,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        return False
    states = {}
    for line in done.stdout.splitlines():
        if line.strip():
            item = json.loads(line)
            states[item.get("Service")] = str(item.get("State", "")).lower()
    services = [s.name for s in dep.shape.services(dep.project)]
    critical = [next(s for s in services if s.startswith("db")), dep.migration_service]
    return all(states.get(name) == "running" for name in critical)


def way_b(dep: Deployment, case: int, rnd: int) -> WayResult:
    """The replaced script (`process_system_update` of the old worker), in this process:
    login (a failure only logged), `pull`, `up -d` (every service, no wait), poll `ps` until
    db and api run, then exec the migration. Like the original it uses `-f FILE` only (the
    project name comes from the file's `name:`). Unlike it, `pull` names the target services:
    the local images here cannot be pulled (the original pulled every image)."""
    compose = ["docker", "compose", "-f", str(dep.compose_file)]
    load, cpu0 = load1(), children_cpu_s()
    with PeakSampler() as sampler:
        steps = Steps()
        config = dep.temp_docker_config("b")
        env = {**dep.env(), "DOCKER_CONFIG": str(config)}
        login = ["docker", "login", dep.stack.registry, "-u", dep.stack.registry_username]
        done = run(
            [*login, "--password-stdin"],
            env=env,
            input=dep.stack.registry_password,
            sampler=sampler,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            logger.warning("B: login failed: %s", done.stderr.strip())
        steps.mark("login")
        run([*compose, "pull", *dep.targets], env=env, sampler=sampler, timeout=600)
        steps.mark("pull")
        run([*compose, "up", "-d"], env=env, sampler=sampler, timeout=300)
        steps.mark("up")
        for _ in range(OLD_POLL_TRIES):
            if _old_containers_ready(dep, env, sampler):
                break
            time.sleep(OLD_POLL_DELAY_S)
        else:
            raise WayFailed("B: db and api did not run in time")
        steps.mark("poll")
        migrate = [*compose, "exec", "-T", dep.migration_service, dep.migration_command]
        run(migrate, env=env, sampler=sampler, timeout=300)
        steps.mark("migrate")
        shutil.rmtree(config, ignore_errors=True)
        steps.mark("cleanup")
    return WayResult(
        "B",
        case,
        rnd,
        steps.total,
        steps=steps.times,
        memory=sampler.as_dict(),
        cpu_s=children_cpu_s() - cpu0,
        load1=load,
    )


def playbook_command(dep: Deployment, playbook: Path) -> list[str]:
    """`ansible-playbook` as an operator runs it (README), every setting as an extra var (the
    role's variables; one JSON -e so that lists stay lists)."""
    extra = {
        "compose_update_compose_files": [str(dep.compose_file)],
        "compose_update_project_name": dep.project,
        "compose_update_registry_url": dep.stack.registry,
        "compose_update_registry_username": dep.stack.registry_username,
        "compose_update_registry_token_file": str(dep.token_file),
        "compose_update_migration_service": dep.migration_service,
        "compose_update_migration_command": dep.migration_command,
        "compose_update_health_timeout": 60,
        "compose_update_services": list(dep.targets),
    }
    args = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(INVENTORY)]
    args.append(str(playbook))
    return [*args, "-e", json.dumps(extra)]


def way_c(
    dep: Deployment,
    case: int,
    rnd: int,
    timing: TimingFile,
    playbook: Path = PLAYBOOK,
    *,
    extra_env: dict[str, str] | None = None,
    way: str = "C",
) -> WayResult:
    """`ansible-playbook -i inventory/localhost playbooks/update.yml -e ...` from the repo root
    (so ansible.cfg applies, as for an operator)."""
    env = {**dep.env(), **bench_path_env(), **callback_env(timing.path), **(extra_env or {})}
    return _ansible_way(way, case, rnd, playbook_command(dep, playbook), env=env, timing=timing)


def peer_vars(
    dep: Deployment, docker_config: Path, oneshot: tuple[str, ...] = ()
) -> dict[str, object]:
    """The peer's variables (bench/variants/peer.yml): what an operator puts in group_vars.
    The token is named by its file, never passed itself. Every target goes into the one
    `up --wait` (case 4's one-shot `init` too: `api` and `worker` wait for it to complete),
    except the `oneshot` ones: those run on their own after it (`compose run`)."""
    return {
        "app_project_src": str(dep.compose_file.parent),
        "app_compose_files": [dep.compose_file.name],
        "app_project_name": dep.project,
        "app_registry": dep.stack.registry,
        "app_registry_username": dep.stack.registry_username,
        "app_registry_token_file": str(dep.token_file),
        "app_docker_config": str(docker_config),
        "app_services": [name for name in dep.targets if name not in oneshot],
        "app_oneshot_services": [name for name in dep.targets if name in oneshot],
        "app_migration_service": dep.migration_service,
        "app_migration_command": dep.migration_command,
        "app_health_timeout": 60,
    }


def way_p(
    dep: Deployment, case: int, rnd: int, timing: TimingFile, oneshot: tuple[str, ...] = ()
) -> WayResult:
    """The peer: `ansible-playbook -i inventory/localhost bench/variants/peer.yml -e ...` from
    the repo root (same ansible.cfg as C), logging in into a fresh Docker config like A."""
    config = dep.temp_docker_config("p")
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(INVENTORY)]
    argv += [str(PEER_PLAYBOOK), "-e", json.dumps(peer_vars(dep, config, oneshot))]
    env = {**dep.env(), **bench_path_env(), **callback_env(timing.path)}
    try:
        return _ansible_way("P", case, rnd, argv, env=env, timing=timing)
    finally:
        shutil.rmtree(config, ignore_errors=True)


def _ansible_way(
    way: str, case: int, rnd: int, argv: list[str], *, env: dict[str, str], timing: TimingFile
) -> WayResult:
    """Run one ansible-playbook command from the repo root, timed, with its task timings."""
    load, cpu0 = load1(), children_cpu_s()
    with PeakSampler() as sampler:
        began = time.time()
        t0 = time.perf_counter()
        run(argv, env=env, sampler=sampler, cwd=REPO_ROOT, timeout=900)
        wall = time.perf_counter() - t0
    times = timing.read_new()
    breakdown = {
        "ansible_process_start": rel(times.process_start, began),
        "playbook_start": rel(times.playbook_start, began),
        "first_task_start": rel(times.first_task_start, began),
        "stats": rel(times.stats, began),
        "end": round(wall, 4),
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
        cpu_s=children_cpu_s() - cpu0,
        load1=load,
    )
