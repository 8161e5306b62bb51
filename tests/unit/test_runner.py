"""worker/host/runner.py's tweak of ptyprocess: closing the pty of an ended ansible-playbook does
not wait 0.1 s first (ansible-runner closes it after every run), and a live process is still
closed the careful way."""

from __future__ import annotations

import pexpect

import worker.host.runner  # noqa: F401  (applies the tweak)


def test_the_pty_of_an_ended_process_is_closed_without_the_wait() -> None:
    child = pexpect.spawn("sh", ["-c", "exit 3"])
    child.expect(pexpect.EOF)
    while child.isalive():
        child.expect(pexpect.EOF, timeout=1)
    child.close()
    assert child.ptyproc.delayafterclose == 0
    assert child.exitstatus == 3


def test_a_live_process_keeps_the_wait_and_is_ended() -> None:
    child = pexpect.spawn("sleep", ["30"])
    child.close()
    assert child.ptyproc.delayafterclose == 0.1
    assert not child.isalive()
    assert child.signalstatus is not None
