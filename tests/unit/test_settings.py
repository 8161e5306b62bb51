from pathlib import Path

import pytest

from worker.host.settings import Settings
from worker.shared.client import CANCEL_MARGIN_S, CLAIM_TTL_S
from worker.shared.keys import MAX_JOB_TIMEOUT_S
from worker.shared.settings import DEFAULT_QUEUE_NAME, ClientSettings, ConfigError, Secret


def test_defaults_match_the_documented_ones(tmp_path: Path) -> None:
    settings = Settings.from_env({"LOG_FILE": ""})
    assert settings.redis_host == "localhost"
    assert settings.redis_port == 6379
    assert settings.queue_name == DEFAULT_QUEUE_NAME == "update-executor:queue"
    assert settings.compose_file == Path("docker-compose.prod.yml").absolute()
    assert settings.registry_url == "ghcr.io"
    assert settings.migration_service == "api"
    assert settings.migration_command == "alembic upgrade head"
    assert (settings.health_timeout, settings.job_timeout) == (300, 1800)
    assert settings.update_services == ()
    assert settings.log_file is None
    assert settings.poll_delay == 0.05


def test_repr_never_shows_a_secret(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "GITHUB_TOKEN": "ghs_supersecretvalue",
            "REGISTRY_USERNAME": "bot",
            "REDIS_QUEUE_PASSWORD": "redis-pass-123",
        }
    )
    text = repr(settings) + str(settings)
    assert "ghs_supersecretvalue" not in text
    assert "redis-pass-123" not in text
    assert settings.registry_token.reveal() == "ghs_supersecretvalue"
    assert f"{settings.redis_password}" == "Secret('**********')"


def test_token_file_is_preferred_over_the_variable(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("from-file\n")
    settings = Settings.from_env(
        {"GITHUB_TOKEN_FILE": str(token), "GITHUB_TOKEN": "from-env", "REGISTRY_USERNAME": "u"}
    )
    assert settings.registry_token_file == token
    assert not settings.registry_token


def test_systemd_credential_is_used_when_no_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "github_token").write_text("cred")
    settings = Settings.from_env({"CREDENTIALS_DIRECTORY": str(tmp_path), "REGISTRY_USERNAME": "u"})
    assert settings.registry_token_file == tmp_path / "github_token"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"UPDATE_QUEUE_NAME": "arq:queue"}, "must not be ARQ's default"),
        ({"REDIS_QUEUE_PORT": "redis"}, "REDIS_QUEUE_PORT must be an integer"),
        ({"REDIS_QUEUE_PORT": "70000"}, "REDIS_QUEUE_PORT must be between"),
        ({"HEALTH_TIMEOUT": "900", "JOB_TIMEOUT": "600"}, "must be longer than HEALTH_TIMEOUT"),
        ({"GITHUB_TOKEN_FILE": "/nonexistent/token", "REGISTRY_USERNAME": "u"}, "cannot be read"),
        ({"GITHUB_TOKEN": "x"}, "REGISTRY_USERNAME is required"),
        ({"WORKER_POLL_DELAY": "fast"}, "WORKER_POLL_DELAY must be a number of seconds"),
        ({"WORKER_POLL_DELAY": "0"}, "WORKER_POLL_DELAY must be between"),
        ({"WORKER_POLL_DELAY": "nan"}, "WORKER_POLL_DELAY must be between"),
        ({"WORKER_POLL_DELAY": "60"}, "WORKER_POLL_DELAY must be between"),
    ],
)
def test_bad_configuration_is_a_clear_error(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_empty_token_file_is_refused(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        Settings.from_env({"GITHUB_TOKEN_FILE": str(token), "REGISTRY_USERNAME": "u"})


def test_update_services_is_a_comma_list() -> None:
    settings = Settings.from_env({"UPDATE_SERVICES": " api, worker ,,frontend"})
    assert settings.update_services == ("api", "worker", "frontend")


def test_secret_equality_and_truth() -> None:
    assert Secret("a") == Secret("a")
    assert not Secret("")
    assert repr(Secret("")) == "Secret('')"


def test_poll_delay_is_passed_to_arq() -> None:
    from worker.host.main import worker_kwargs

    settings = Settings.from_env({"WORKER_POLL_DELAY": "0.2", "LOG_FILE": ""})
    assert settings.poll_delay == 0.2
    assert worker_kwargs(settings)["poll_delay"] == 0.2


@pytest.mark.parametrize("name", ["ROLLBACK_ON_MIGRATION_FAILURE", "REDIS_QUEUE_SSL"])
@pytest.mark.parametrize("value", ["flase", "ture", "2", "enabled"])
def test_a_mistyped_boolean_is_an_error_with_one_message_for_all(name: str, value: str) -> None:
    """One parser for every boolean: `flase` is neither true nor false (issue 14: it used to
    turn ROLLBACK_ON_MIGRATION_FAILURE on)."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env({name: value, "LOG_FILE": ""})
    assert f"{name} must be true or false, got {value!r}" in str(raised.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("true", True),
        ("YES", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("Off", False),
        ("no", False),
        ("0", False),
        ("", True),
    ],
)
def test_booleans_read_the_same_words(value: str, expected: bool) -> None:
    settings = Settings.from_env({"ROLLBACK_ON_MIGRATION_FAILURE": value, "LOG_FILE": ""})
    assert settings.rollback_on_migration_failure is expected


def test_the_api_side_reads_only_its_own_variables() -> None:
    """ClientSettings (the API, the CLI's client commands) is not made to read, or fail on,
    the worker's variables; each shared variable has one definition, used by both."""
    worker_only = {
        "JOB_TIMEOUT": "soon",
        "ROLLBACK_ON_MIGRATION_FAILURE": "flase",
        "COMPOSE_ENV_PASSTHROUGH": "GITHUB_TOKEN",
        "GITHUB_TOKEN": "ghs_x",
    }
    shared = {"UPDATE_QUEUE_NAME": "q:one", "REDIS_QUEUE_PORT": "6380", "UPDATE_JOB_MAX_AGE": "60"}
    client = ClientSettings.from_env({**worker_only, **shared})
    assert (client.queue_name, client.redis_port, client.job_max_age) == ("q:one", 6380, 60)
    assert not hasattr(client, "job_timeout")
    with pytest.raises(ConfigError, match="JOB_TIMEOUT must be an integer"):
        Settings.from_env({**worker_only, **shared})
    worker = Settings.from_env({**shared, "LOG_FILE": ""})
    assert isinstance(worker, ClientSettings)
    assert {f: getattr(worker, f) for f in ClientSettings.model_fields} == {
        f: getattr(client, f) for f in ClientSettings.model_fields
    }
    with pytest.raises(ConfigError, match="REDIS_QUEUE_SSL must be true or false, got 'flase'"):
        ClientSettings.from_env({"REDIS_QUEUE_SSL": "flase"})


def test_the_api_s_safety_ttls_cover_any_job_timeout_a_worker_accepts() -> None:
    """The API does not read JOB_TIMEOUT, so its claim and cancel TTLs must outlast the
    longest one a worker can be configured with (docs/operations.md, 'No duplicate jobs')."""
    with pytest.raises(
        ConfigError, match=f"JOB_TIMEOUT must be between 60 and {MAX_JOB_TIMEOUT_S}"
    ):
        Settings.from_env({"JOB_TIMEOUT": str(MAX_JOB_TIMEOUT_S + 1), "LOG_FILE": ""})
    longest = Settings.from_env({"JOB_TIMEOUT": str(MAX_JOB_TIMEOUT_S), "LOG_FILE": ""})
    assert longest.job_timeout < CLAIM_TTL_S
    assert longest.job_timeout < MAX_JOB_TIMEOUT_S + CANCEL_MARGIN_S


@pytest.mark.parametrize("content", ["", "\n", " \n"])
def test_a_blank_systemd_credential_is_no_token(tmp_path: Path, content: str) -> None:
    """Issue 25: the unit's `SetCredential=github_token:\\n` stands in for a token file that
    does not exist (a registry that needs no token), and an operator may leave the file empty:
    the worker starts without a token (no login) instead of refusing the configuration."""
    (tmp_path / "github_token").write_text(content)
    settings = Settings.from_env(
        {"CREDENTIALS_DIRECTORY": str(tmp_path), "REGISTRY_USERNAME": "u", "LOG_FILE": ""}
    )
    assert not settings.has_registry_token
    assert settings.registry_token_file is None


def test_a_blank_credential_leaves_the_token_variable_in_charge(tmp_path: Path) -> None:
    (tmp_path / "github_token").write_text("\n")
    settings = Settings.from_env(
        {"CREDENTIALS_DIRECTORY": str(tmp_path), "GITHUB_TOKEN": "t", "REGISTRY_USERNAME": "u"}
    )
    assert settings.registry_token.reveal() == "t"
