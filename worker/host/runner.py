"""Run the update playbook through ansible-runner, behind one narrow typed function.

ansible-runner's entry point takes fifty arguments and blocks; we call it with the few we
need, in a thread so the event loop (ARQ's health check, job abort, timeouts) keeps running.
Cancelling the awaiting task asks the runner to stop: it then kills the whole process group
of ansible-playbook, and we wait for that before returning.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner
import ptyprocess  # type: ignore[import-untyped]

from ..shared.untrusted import is_job_id, loggable
from .recovery import ansible_processes_of, end_process_groups
from .settings import ANSIBLE_CONFIG
from .summary import RunOutcome, UpdateStatus

logger = logging.getLogger("update_executor.runner")

# The one extra-var left on ansible-playbook's command line (the job id): the marker
# worker/host/recovery.py looks for.
ARGV_MARKER = "compose_update_job_id"

EventCallback = Callable[[dict[str, Any]], None]

# How often (s) the runner checks the cancel callback; its default of 5 s makes aborts slow.
CANCEL_POLL_S = 0.25
RUNNER_SETTINGS = {
    "pexpect_timeout": CANCEL_POLL_S,
    "suppress_output_file": True,  # no artifacts/<ident>/stdout: events come to us in memory
    "suppress_ansible_output": True,
}

# Environment variables never handed to ansible: ansible-runner copies the worker's whole
# environment into the run (and into artifacts/<ident>/command).
SECRET_ENV_VARS = (
    "GITHUB_TOKEN",
    "REDIS_QUEUE_PASSWORD",
    "UPDATE_JOB_SECRET",
    "NOTIFY_URLS",
)


def _close_ended_pty_at_once() -> None:
    """ansible-runner closes ansible-playbook's pty once the process has ended, and ptyprocess
    then sleeps 0.1 s ("give the kernel time to update process status") before it checks the
    process: 0.1 s added to every job for a process already reaped. Skip the sleep when the
    process has ended; a live one (never the case after ansible-runner's loop) keeps it."""
    original_close = ptyprocess.PtyProcess.close
    if getattr(original_close, "_update_executor", False):
        return

    def close(self: Any, force: bool = True) -> None:
        if not self.closed and not self.isalive():
            self.delayafterclose = 0
        original_close(self, force)

    close._update_executor = True  # type: ignore[attr-defined]
    ptyprocess.PtyProcess.close = close


_close_ended_pty_at_once()


class PlaybookCanceled(asyncio.CancelledError):
    """The awaiting task was canceled and the playbook stopped; `outcome` is what it did until
    then. A CancelledError, so code that does not look for it is canceled as usual."""

    def __init__(self, outcome: RunOutcome) -> None:
        super().__init__("the playbook was canceled")
        self.outcome = outcome


@dataclass(frozen=True)
class PlaybookRun:
    """One run of a playbook: what to run, with which variables."""

    playbook: Path
    inventory: Path
    extravars: Mapping[str, Any]
    ident: (
        str  # the job id; also passed as `compose_update_job_id`, which finds the run's processes
    )
    check_mode: bool = False
    timeout_s: int | None = None
    envvars: Mapping[str, str] = field(default_factory=dict)


def ansible_env(extra: Mapping[str, str]) -> dict[str, str]:
    """Environment overrides for the ansible process.

    the project's ansible.cfg (the checkout's, or the copy the package carries) is used
    whatever the runner's working directory is, and
    the secrets in our own environment are blanked (ansible-runner merges these over a copy
    of os.environ, so an empty value is how to remove one).
    """
    env = {name: "" for name in SECRET_ENV_VARS if name in os.environ}
    env.update(
        # ansible-playbook from the worker's own virtualenv, whatever systemd's PATH is.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        ANSIBLE_CONFIG=str(ANSIBLE_CONFIG),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
    )
    env.update(extra)
    return env


def run_playbook(
    run: PlaybookRun,
    *,
    cancel: threading.Event,
    on_event: EventCallback | None = None,
    work_root: Path | None = None,
) -> RunOutcome:
    """Run the playbook to the end (or until `cancel` is set) and return what happened.

    The private data dir is new, mode 0700, and removed before returning: ansible-runner
    writes the command line and environment there.
    """
    events: list[dict[str, Any]] = []
    if (
        not is_job_id(run.ident)
        or run.extravars.get("compose_update_job_id", run.ident) != run.ident
    ):
        # The ident is a path under the private data dir, and the id a playbook variable.
        logger.error("refusing to run a playbook for invalid job id %s", loggable(run.ident))
        return RunOutcome(status=UpdateStatus.failed, events=events, error="invalid job id")

    def handle_event(event: dict[str, Any]) -> bool:
        events.append(event)
        if on_event is not None:
            try:
                on_event(event)
            except Exception:
                logger.exception("event callback failed; the run goes on")
        return False  # keep events in memory only: nothing written to job_events/

    private_dir = Path(tempfile.mkdtemp(prefix=f"ue-run-{run.ident[:16]}-", dir=work_root))
    os.chmod(private_dir, 0o700)
    try:
        # ansible-runner reads these only from env/settings (a `settings=` argument is dropped
        # when that file is missing). Nothing secret in it.
        (private_dir / "env").mkdir(mode=0o700)
        (private_dir / "env" / "settings").write_text(json.dumps(RUNNER_SETTINGS))
        # The job's strings (services, requested_by, ...) go to ansible-playbook in a file
        # (`-e @<dir>/env/extravars`, 0600 in this 0700 dir), never on its command line: any
        # user of the host can read a process's argv (ProtectProc= does not hide it from
        # them). Only the job id stays there (it matches the job-id grammar, names nobody):
        # recovery finds a cut-off run's processes by it (worker/host/recovery.py).
        on_file = {k: v for k, v in run.extravars.items() if k != ARGV_MARKER}
        write_private(private_dir / "env" / "extravars", json.dumps(on_file))
        binary = write_launcher(private_dir)
        runner = ansible_runner.run(
            private_data_dir=str(private_dir),
            playbook=str(run.playbook),
            inventory=str(run.inventory),
            extravars={ARGV_MARKER: run.ident} if ARGV_MARKER in run.extravars else None,
            envvars=ansible_env(run.envvars),
            # With `binary`, ansible-runner runs the command as given (its "raw" mode): the
            # playbook goes on the command line.
            cmdline=shlex.join((["--check"] if run.check_mode else []) + [str(run.playbook)]),
            binary=str(binary),
            ident=run.ident,
            quiet=True,
            suppress_env_files=True,
            timeout=run.timeout_s,
            event_handler=handle_event,
            cancel_callback=cancel.is_set,
        )
        if runner.status in ("canceled", "timeout"):
            # ansible-runner kills ansible-playbook's process group, but ansible runs each task
            # in a worker process with a session of its own, which would go on (and with it
            # the module and `docker compose`): end those too.
            end_process_groups(ansible_processes_of(run.ident))
        status = UpdateStatus(runner.status) if runner.status in UpdateStatus.__members__ else None
        error = "" if status is not None else f"ansible-runner ended with status {runner.status}"
        return RunOutcome(
            status=status or UpdateStatus.failed,
            events=events,
            rc=runner.rc,
            error=error or _error_output(events),
        )
    except Exception as exc:
        logger.exception("ansible-runner failed to run the playbook")
        return RunOutcome(status=UpdateStatus.failed, events=events, error=f"runner error: {exc}")
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)


def write_private(path: Path, text: str) -> None:
    """A new file only this user can read (O_EXCL: never through something already there)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_launcher(private_dir: Path) -> Path:
    """ansible-runner's `binary` for this run: ansible-playbook under worker.host.ansible_exec,
    which drops the worker's settings from its environment (compose must never see them). A
    script in the run's private directory (0700), with this interpreter."""
    launcher = private_dir / "ansible-playbook"
    launcher.write_text(
        f"#!{sys.executable}\nfrom worker.host.ansible_exec import main\n\nmain()\n",
        encoding="utf-8",
    )
    launcher.chmod(0o700)
    return launcher


def _error_output(events: list[dict[str, Any]]) -> str:
    """Text ansible printed outside any task (e.g. a syntax error), for the summary."""
    lines = [
        str(event.get("stdout") or "").strip()
        for event in events
        if event.get("event") in ("error", "verbose") and "ERROR" in str(event.get("stdout", ""))
    ]
    return "\n".join(line for line in lines if line)[-1000:]


async def run_playbook_async(
    run: PlaybookRun,
    *,
    on_event: EventCallback | None = None,
    work_root: Path | None = None,
) -> RunOutcome:
    """`run_playbook` off the event loop. Cancelling this coroutine stops the playbook.

    On cancellation the runner kills ansible's process group; we wait for that to finish
    (it takes at most CANCEL_POLL_S plus the kill) so that nothing of the run is left behind,
    then raise PlaybookCanceled with what the run did until then.
    """
    cancel = threading.Event()
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(
        None,
        lambda: run_playbook(run, cancel=cancel, on_event=on_event, work_root=work_root),
    )
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        logger.warning("run %s: cancel requested, stopping ansible", run.ident)
        await asyncio.wait([future])
        outcome = future.result()
        raise PlaybookCanceled(
            RunOutcome(status=UpdateStatus.canceled, events=outcome.events, rc=outcome.rc)
        ) from None
