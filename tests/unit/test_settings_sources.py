"""How the settings read the environment (worker/shared/settings.py): the one source of secret
files (`X_FILE` and systemd's `$CREDENTIALS_DIRECTORY`), the variables, and the one message
that lists every problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.host.settings import Settings
from worker.shared.settings import (
    ClientSettings,
    ConfigError,
    Secret,
    SecretFiles,
    Unreadable,
    Variables,
)

SECRET = "s" * 40
OTHER = "o" * 40
CREDENTIAL = "c" * 40


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """secret, other, blank, spaced files and credentials directories: `creds/` (all four),
    `job-creds/` (the job secret), `blank-creds/` (blank job secret and token)."""
    (tmp_path / "secret").write_text(SECRET + "\n")
    (tmp_path / "other").write_text(OTHER)
    (tmp_path / "blank").write_text(" \n")
    (tmp_path / "spaced").write_text(" pass word \r\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    for name in ("job_secret", "notify_urls", "redis_password"):
        (creds / name).write_text(CREDENTIAL + "\n")
    (creds / "github_token").write_text("ghs_token\n")
    (tmp_path / "job-creds").mkdir()
    (tmp_path / "job-creds" / "job_secret").write_text(CREDENTIAL)
    blank_creds = tmp_path / "blank-creds"
    blank_creds.mkdir()
    for name in ("job_secret", "github_token"):
        (blank_creds / name).write_text("\n")
    return tmp_path


# (environment, with {d} for the files' directory) -> what the source hands on
SECRET_FILE_CASES = [
    pytest.param({}, {}, id="nothing set"),
    pytest.param(
        {"UPDATE_JOB_SECRET_FILE": "{d}/secret"}, {"UPDATE_JOB_SECRET": SECRET}, id="X_FILE"
    ),
    pytest.param(
        {"CREDENTIALS_DIRECTORY": "{d}/creds"},
        {
            "UPDATE_JOB_SECRET": CREDENTIAL,
            "REDIS_QUEUE_PASSWORD": CREDENTIAL,
            "NOTIFY_URLS": CREDENTIAL,
            "GITHUB_TOKEN_FILE": Path("{d}/creds/github_token"),
            "GITHUB_TOKEN": "",
        },
        id="credentials directory",
    ),
    pytest.param(
        {"CREDENTIALS_DIRECTORY": "{d}/job-creds", "UPDATE_JOB_SECRET_FILE": "{d}/other"},
        {"UPDATE_JOB_SECRET": OTHER},
        id="X_FILE wins over the credential",
    ),
    pytest.param(
        {"UPDATE_JOB_SECRET_FILE": " ", "CREDENTIALS_DIRECTORY": "{d}/job-creds"},
        {"UPDATE_JOB_SECRET": CREDENTIAL},
        id="a blank X_FILE is unset",
    ),
    pytest.param(
        {"CREDENTIALS_DIRECTORY": "{d}/nowhere"}, {}, id="a credentials directory without it"
    ),
    pytest.param(
        {"UPDATE_JOB_SECRET_FILE": "{d}/missing"},
        {
            "UPDATE_JOB_SECRET": Unreadable(
                "UPDATE_JOB_SECRET_FILE {d}/missing cannot be read: No such file or directory"
            )
        },
        id="a missing file",
    ),
    pytest.param(
        {"UPDATE_JOB_SECRET_FILE": "{d}/blank"},
        {"UPDATE_JOB_SECRET": Unreadable("UPDATE_JOB_SECRET_FILE {d}/blank is empty")},
        id="an empty file",
    ),
    pytest.param(
        {"CREDENTIALS_DIRECTORY": "{d}/blank-creds"},
        {
            "UPDATE_JOB_SECRET": Unreadable(
                "UPDATE_JOB_SECRET_FILE {d}/blank-creds/job_secret is empty"
            )
        },
        id="an empty credential",
    ),
    pytest.param(
        {"REDIS_QUEUE_PASSWORD_FILE": "{d}/spaced"},
        {"REDIS_QUEUE_PASSWORD": " pass word "},
        id="a password keeps its spaces, not its line break",
    ),
    pytest.param(
        {"GITHUB_TOKEN_FILE": "{d}/secret"},
        {"GITHUB_TOKEN_FILE": Path("{d}/secret"), "GITHUB_TOKEN": ""},
        id="the registry token keeps its path, never the variable",
    ),
    pytest.param(
        {"GITHUB_TOKEN_FILE": "{d}/blank"},
        {"GITHUB_TOKEN_FILE": Unreadable("GITHUB_TOKEN_FILE {d}/blank is empty")},
        id="a named empty token file",
    ),
    pytest.param(
        {"CREDENTIALS_DIRECTORY": "{d}/blank-creds", "GITHUB_TOKEN_FILE": ""},
        {
            "UPDATE_JOB_SECRET": Unreadable(
                "UPDATE_JOB_SECRET_FILE {d}/blank-creds/job_secret is empty"
            )
        },
        id="a blank github_token credential is no token (the unit's SetCredential=)",
    ),
]


def _fill(value: object, directory: Path) -> object:
    if isinstance(value, str):
        return value.replace("{d}", str(directory))
    if isinstance(value, Path):
        return Path(str(value).replace("{d}", str(directory)))
    if isinstance(value, Unreadable):
        return Unreadable(value.problem.replace("{d}", str(directory)))
    return value


@pytest.mark.parametrize(("environ", "expected"), SECRET_FILE_CASES)
def test_the_secret_files_source(
    files: Path, environ: dict[str, str], expected: dict[str, object]
) -> None:
    env = {name: str(_fill(value, files)) for name, value in environ.items()}

    found = SecretFiles(Settings, env)()

    assert found == {name: _fill(value, files) for name, value in expected.items()}


def test_the_api_side_reads_only_its_own_secret_files(files: Path) -> None:
    found = SecretFiles(ClientSettings, {"CREDENTIALS_DIRECTORY": f"{files}/creds"})()
    assert found == {"UPDATE_JOB_SECRET": CREDENTIAL, "REDIS_QUEUE_PASSWORD": CREDENTIAL}


# which one wins, end to end: X_FILE, then the credential, then the variable X
@pytest.mark.parametrize(
    ("environ", "job_secret"),
    [
        ({"UPDATE_JOB_SECRET": OTHER}, OTHER),
        ({"UPDATE_JOB_SECRET": OTHER, "CREDENTIALS_DIRECTORY": "{d}/creds"}, CREDENTIAL),
        (
            {
                "UPDATE_JOB_SECRET": OTHER,
                "CREDENTIALS_DIRECTORY": "{d}/creds",
                "UPDATE_JOB_SECRET_FILE": "{d}/secret",
            },
            SECRET,
        ),
        ({"UPDATE_JOB_SECRET": f"  {OTHER} "}, OTHER),
        ({}, ""),
    ],
)
def test_a_file_is_preferred_to_the_credential_and_both_to_the_variable(
    files: Path, environ: dict[str, str], job_secret: str
) -> None:
    env = {name: str(_fill(value, files)) for name, value in environ.items()}
    assert ClientSettings.from_env(env).job_secret.reveal() == job_secret


def test_a_secret_file_problem_is_one_clear_error_among_the_others(files: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(
            {
                "REDIS_QUEUE_PORT": "redis",
                "UPDATE_JOB_SECRET_FILE": f"{files}/missing",
                "NOTIFY_URLS_FILE": f"{files}/blank",
                "JOB_TIMEOUT": "soon",
            }
        )
    assert str(raised.value) == (
        "invalid configuration: REDIS_QUEUE_PORT must be an integer, got 'redis'; "
        f"UPDATE_JOB_SECRET_FILE {files}/missing cannot be read: No such file or directory; "
        "JOB_TIMEOUT must be an integer, got 'soon'; "
        f"NOTIFY_URLS_FILE {files}/blank is empty"
    )


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"REDIS_QUEUE_HOST": " redis "}, {"REDIS_QUEUE_HOST": "redis"}),
        ({"REDIS_QUEUE_HOST": "  ", "HEALTH_TIMEOUT": ""}, {}),
        ({"REDIS_QUEUE_PASSWORD": " p "}, {"REDIS_QUEUE_PASSWORD": " p "}),
        ({"HISTORY_FILE": " - "}, {"HISTORY_FILE": "-"}),
        ({"OTHER": "x", "insecure_unsigned_jobs": "true"}, {}),
    ],
)
def test_the_variables_source(environ: dict[str, str], expected: dict[str, object]) -> None:
    """Stripped (not a password); a blank variable is unset, except LOG_FILE and HISTORY_FILE,
    where "" means none; only settings are read, by their variable."""
    off = {"LOG_FILE": "", "HISTORY_FILE": ""}
    assert Variables(Settings, {**off, **environ})() == {**off, **expected}


def test_an_unset_history_file_is_found_on_the_host(tmp_path: Path) -> None:
    found = Variables(Settings, {"LOG_FILE": "-", "STATE_DIRECTORY": f"{tmp_path}:/other"})()
    assert found == {"LOG_FILE": "-", "HISTORY_FILE": tmp_path / "history.jsonl"}


def test_keywords_read_no_environment_and_from_env_reads_os_environ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HEALTH_TIMEOUT", "42")
    monkeypatch.setenv("LOG_FILE", "")
    assert Settings().health_timeout == 300
    assert Settings(health_timeout=7).health_timeout == 7
    assert Settings.from_env().health_timeout == 42


def test_no_dump_shows_a_secret() -> None:
    settings = Settings(
        job_secret=Secret(SECRET),
        registry_username="u",
        registry_token=Secret("ghs_x"),
        notify_urls=Secret("json://t@h/"),
    )
    text = settings.model_dump_json() + repr(settings) + str(settings.model_dump())
    assert SECRET not in text and "ghs_x" not in text and "json://t@h/" not in text
    assert settings.job_secret.reveal() == SECRET
