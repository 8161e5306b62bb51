"""worker/shared/envfile.py: systemd's EnvironmentFile format read as systemd reads it (never
executed), a unit's LoadCredential= lines, and the CLI's environment built from both."""

from __future__ import annotations

import pytest

from worker.shared.envfile import (
    EnvFileError,
    client_environment,
    parse_env_file,
    unit_credentials,
)

PARSED = [
    ("A=1\nB=two words\n", {"A": "1", "B": "two words"}),
    ("# comment\n; also a comment\n\nA=1", {"A": "1"}),
    ("A = spaced  \n", {"A": "spaced"}),
    ('A="quoted # not a comment"\n', {"A": "quoted # not a comment"}),
    ("A='single $HOME `x`'\n", {"A": "single $HOME `x`"}),
    ('A="esc \\" \\\\ \\$ \\q"\n', {"A": 'esc " \\ $ \\q'}),
    ("A=line \\\ncontinued\n", {"A": "line continued"}),
    ('A="multi\nline"\n', {"A": "multi\nline"}),
    ("A=$HOME\n", {"A": "$HOME"}),  # no expansion
    ("A=1\nA=2\n", {"A": "2"}),  # the later line wins
    ("A=\n", {"A": ""}),
    # docs/migrating.md's migration command: quotes inside an unquoted value are kept
    (
        'MIGRATION_COMMAND=sh -c "cd /code/src && alembic upgrade head"\n',
        {"MIGRATION_COMMAND": 'sh -c "cd /code/src && alembic upgrade head"'},
    ),
    ("A=x # not a comment\n", {"A": "x # not a comment"}),
]


@pytest.mark.parametrize(("text", "expected"), PARSED)
def test_values_are_read_as_systemd_reads_them(text: str, expected: dict[str, str]) -> None:
    assert parse_env_file(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("export A=1\n", "line 1: expected NAME=value"),
        ("A=1\n$(touch /tmp/x)\n", "line 2: expected NAME=value"),
        ("A=1\nB\n", "line 2: expected NAME=value"),
        ("1A=1\n", "line 1: expected NAME=value"),
        ('A=1\nB="open\n', "line 2: a quoted value is not closed"),
    ],
)
def test_what_is_not_the_format_is_refused_with_its_line(text: str, message: str) -> None:
    with pytest.raises(EnvFileError, match=message.replace("(", r"\(").replace("$", r"\$")):
        parse_env_file(text)


def test_the_unit_s_credentials_are_found() -> None:
    unit = """[Service]
EnvironmentFile=/etc/update-executor/update-executor.env
LoadCredential=github_token:/etc/update-executor/github_token
LoadCredential=job_secret:/etc/update-executor/job_secret
#LoadCredential=redis_password:/etc/update-executor/redis_password
LoadCredential=relative:etc/x
LoadCredential=../x:/etc/x
"""
    assert unit_credentials(unit) == {
        "github_token": "/etc/update-executor/github_token",
        "job_secret": "/etc/update-executor/job_secret",
    }


def test_the_env_file_overrides_the_shell_and_credentials_fill_unset_secrets() -> None:
    shell = {"PATH": "/usr/bin", "REDIS_QUEUE_HOST": "shell-host"}
    env_file = {"REDIS_QUEUE_HOST": "10.0.0.5", "REDIS_QUEUE_PASSWORD_FILE": "/run/pw"}
    credentials = {"job_secret": "/etc/u/job_secret", "redis_password": "/etc/u/redis_password"}

    merged = client_environment(shell, env_file, credentials)

    assert merged["PATH"] == "/usr/bin"
    assert merged["REDIS_QUEUE_HOST"] == "10.0.0.5"
    assert merged["UPDATE_JOB_SECRET_FILE"] == "/etc/u/job_secret"
    assert merged["REDIS_QUEUE_PASSWORD_FILE"] == "/run/pw"  # named by the file: kept


def test_a_secret_set_in_the_environment_is_not_replaced_by_a_credential() -> None:
    merged = client_environment({"UPDATE_JOB_SECRET": "x" * 40}, {}, {"job_secret": "/etc/s"})

    assert "UPDATE_JOB_SECRET_FILE" not in merged


@pytest.mark.parametrize(
    ("text", "expected"),
    [('A="a""b"\n', "ab"), ("A='a' \"b\"\n", "ab"), ('A=  "x"\n', "x"), ("A=a'b'\n", "a'b'")],
)
def test_quoted_parts_join_as_in_systemd(text: str, expected: str) -> None:
    assert parse_env_file(text) == {"A": expected}
