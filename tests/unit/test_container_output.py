"""Container output (a migration's, a hook's: newlines, ANSI escapes) is shown escaped on one
line in the worker's log and in `update-executor history`; the raw tail stays in the result.
Apprise's debug lines (URLs with tokens) stay off with -v. Issue 21. No Redis, no Docker."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from worker.api.tables import format_history_table
from worker.host.jobs import log_summary
from worker.shared.logs import setup_logging
from worker.shared.result import StepResult, StepStatus, Summary, UpdateStatus
from worker.shared.untrusted import escaped

OUTPUT = "Applying 0002...\n\x1b[31mERROR\x1b[0m: relation exists\r\nforged line\x00"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("plain text, é, ü", "plain text, é, ü"),
        ("a\nb", "a\\nb"),
        ("\x1b[2J\x1b[31mred", "\\x1b[2J\\x1b[31mred"),
        ("nul\x00 cr\r bell\x07", "nul\\x00 cr\\r bell\\x07"),
        ("c1\x9b line\u2028sep", "c1\\x9b line\\u2028sep"),
        (b"bytes\xff\n", "bytes\\xff\\n"),
    ],
)
def test_escaped_shows_control_characters_as_escapes(value: object, shown: str) -> None:
    assert escaped(value) == shown


def test_escaped_keeps_the_end_of_a_long_output() -> None:
    assert escaped("x" * 50 + "END", limit=10) == "…" + "x" * 6 + "END"


def summary() -> Summary:
    at = datetime(2026, 12, 7, tzinfo=UTC)
    return Summary(
        job_id="j1",
        status=UpdateStatus.failed,
        started_at=at,
        finished_at=at,
        request=None,
        steps=[StepResult("migrations", StepStatus.failed, 1.0, OUTPUT)],
        services={},
        migrations={"ran": True, "rc": 1, "output_tail": OUTPUT},
        stats={},
        error={"step": "migrations", "message": OUTPUT},
    )


def test_the_log_shows_container_output_on_one_line_escaped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    done = summary()
    log_summary(done)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    for line in lines:
        assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x00" not in line
        assert "\\x1b[31mERROR" in line and "\\nforged line" in line
    assert done.as_dict()["migrations"]["output_tail"] == OUTPUT  # the result keeps it raw


def test_the_history_table_shows_container_output_escaped() -> None:
    record = {
        "finished_at": "2026-12-07T00:00:00Z",
        "kind": "update",
        "outcome": "failed",
        "job_id": "j1",
        "error": {"step": "migrations", "message": OUTPUT},
    }
    table = format_history_table([record])
    lines = table.splitlines()
    assert len(lines) == 2, table
    assert "\x1b" not in table and "\r" not in table and "\x00" not in table
    assert "migrations: Applying 0002...\\n\\x1b[31mERROR" in lines[1]


@pytest.fixture
def restored_logging() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in ("apprise", "urllib3", "arq.worker")]
    levels = [logger.level for logger in loggers]
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


@pytest.mark.usefixtures("restored_logging")
def test_apprise_debug_lines_with_tokens_stay_off_with_verbose(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Apprise logs the URL it posts to (a webhook's token is in its path) at DEBUG."""
    import apprise

    token = "T0KEN-in-the-url-0123456789"
    notifier = apprise.Apprise()
    notifier.add(f"json://127.0.0.1:9/hook/{token}")  # port 9: refused at once
    setup_logging(None, verbose=True)
    with caplog.at_level(logging.DEBUG):
        notifier.notify(title="t", body="b")
    assert "JSON" in caplog.text  # Apprise's INFO/WARNING lines are kept
    assert token not in caplog.text
