"""A fleet from one queue, the worker's side (issue 24): a job's `hosts` (names, never a
pattern), the settings of the batches (UPDATE_SERIAL ...), the inventory check
(worker/host/inventory.py) and what `status` shows of a summary's per-host outcome."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.summary_schema import assert_valid_summary
from worker.api.routes import TriggerBody
from worker.api.tables import format_summary, host_status_fields, summary_hosts
from worker.command import main
from worker.host import jobs, rollback
from worker.host import main as main_module
from worker.host.arq_worker import CTX_MARK
from worker.host.inventory import (
    Inventory,
    InventoryError,
    inventory_problems,
    read_inventory,
    requested_target,
    target,
)
from worker.host.runner import PlaybookRun
from worker.host.settings import Settings, parse_serial
from worker.host.summary import RunOutcome, UpdateStatus
from worker.shared.client import UpdateClient
from worker.shared.request import MAX_HOSTS, InvalidRequest, UpdateRequest
from worker.shared.result import rejected_summary
from worker.shared.settings import ConfigError

SECRET = {"UPDATE_JOB_SECRET": "s" * 40}


# ------------------------------------------------------------------ the job's `hosts`
@pytest.mark.parametrize(
    "hosts",
    [
        ["web1"],
        ["web1", "web2", "db"],
        ["192.168.1.10"],
        ["host-1.example.com", "group_a"],
        ["a" * 63],
        [f"h{i}" for i in range(MAX_HOSTS)],
    ],
)
def test_host_names_are_accepted(hosts: list[str]) -> None:
    request = UpdateRequest.parse({"hosts": hosts})
    assert request.hosts == tuple(hosts)
    assert request.job_kwargs()["hosts"] == hosts
    assert request.as_dict()["hosts"] == hosts


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        (["web*"], "invalid host name at hosts[0]"),
        (["all:!web1"], "invalid host name"),
        (["web1", "web&db"], "invalid host name at hosts[1]"),
        (["web1,web2"], "invalid host name"),
        (["~web[0-9]"], "invalid host name"),
        (["{{ lookup('pipe', 'id') }}"], "invalid host name"),
        (["!web1"], "invalid host name"),
        (["-web"], "invalid host name"),
        (["web 1"], "invalid host name"),
        ([""], "invalid host name"),
        (["a" * 64], "invalid host name"),
        ([1], "invalid host name"),
        ([None], "invalid host name"),
        (["web1\n"], "invalid host name"),
        ([], "non-empty list"),
        ("web1", "non-empty list"),
        ({"web1": True}, "non-empty list"),
        ([f"h{i}" for i in range(MAX_HOSTS + 1)], f"more than {MAX_HOSTS} names"),
        (["web1", "web2", "web1"], "twice"),
    ],
)
def test_host_names_outside_the_grammar_are_refused(hosts: object, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("[", r"\[").replace("]", r"\]")):
        UpdateRequest.parse({"hosts": hosts})


def test_a_job_without_hosts_is_as_before() -> None:
    request = UpdateRequest.parse({"services": ["api"]})
    assert request.hosts == ()
    assert "hosts" not in request.job_kwargs()
    assert "hosts" not in request.as_dict()
    assert UpdateRequest.parse({"hosts": None}).hosts == ()


def test_the_router_takes_hosts_and_defaults_without() -> None:
    assert TriggerBody(hosts=["web1"]).request("ops").hosts == ("web1",)
    assert "hosts" not in TriggerBody().request(None).job_kwargs()  # the UI's call, as before
    with pytest.raises(InvalidRequest, match="invalid host name"):
        TriggerBody(hosts=["all:!db"]).request(None)


# ------------------------------------------------------------------ UPDATE_SERIAL and friends
@pytest.mark.parametrize(
    ("text", "batches"),
    [
        ("", []),
        ("1", [1]),
        ("1,50%", [1, "50%"]),
        (" 1 , 2 ,100% ", [1, 2, "100%"]),
        ("25%", ["25%"]),
        ("99999", [99999]),
        ("1,1,1", [1, 1, 1]),
    ],
)
def test_serial_parses_to_the_play_s_list(text: str, batches: list[int | str]) -> None:
    assert parse_serial(text) == batches


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "0%",
        "101%",
        "100000",
        "-1",
        "1.5",
        "50 %",
        "%50",
        "1,,2",
        "1,",
        "1;2",
        "abc",
        "1,50%,{{ x }}",
        "01",
        ",".join(["1"] * 17),
    ],
)
def test_serial_outside_the_grammar_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"batch sizes|percentage"):
        parse_serial(text)


@pytest.mark.parametrize(
    ("environ", "problem"),
    [
        ({"UPDATE_SERIAL": "1,0"}, "UPDATE_SERIAL"),
        ({"UPDATE_MAX_FAIL_PERCENTAGE": "101"}, "UPDATE_MAX_FAIL_PERCENTAGE"),
        ({"UPDATE_MAX_FAIL_PERCENTAGE": "-1"}, "UPDATE_MAX_FAIL_PERCENTAGE"),
        ({"UPDATE_BATCH_PAUSE": "3601"}, "UPDATE_BATCH_PAUSE"),
        ({"UPDATE_FLEET_ROLLBACK": "maybe"}, "UPDATE_FLEET_ROLLBACK"),
        ({"UPDATE_HOSTS_GROUP": "web*"}, "UPDATE_HOSTS_GROUP"),
        ({"UPDATE_HOSTS_GROUP": "all:!db"}, "UPDATE_HOSTS_GROUP"),
    ],
)
def test_bad_fleet_settings_stop_the_worker(environ: dict[str, str], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Settings.from_env({**SECRET, **environ})


def test_the_fleet_settings_reach_the_play_as_extra_vars() -> None:
    settings = Settings.from_env(
        {
            **SECRET,
            "UPDATE_SERIAL": "1, 50%",
            "UPDATE_MAX_FAIL_PERCENTAGE": "20",
            "UPDATE_BATCH_PAUSE": "5",
            "UPDATE_FLEET_ROLLBACK": "yes",
        }
    )
    assert settings.serial == "1,50%"
    assert jobs.fleet_vars(settings, "web1,db") == {
        "update_hosts": "web1,db",
        "update_serial": [1, "50%"],
        "update_max_fail_percentage": 20,
        "update_batch_pause": 5,
        "update_fleet_rollback": True,
    }
    defaults = jobs.fleet_vars(Settings.from_env(SECRET), "localhost")
    assert defaults["update_serial"] == []  # every host in one batch
    assert defaults["update_max_fail_percentage"] == 0
    assert defaults["update_fleet_rollback"] is False


# ------------------------------------------------------------------ the inventory
FLEET_INI = """\
[update_hosts]
web1
web2

[db]
db1 ansible_host=10.0.0.5

[web:children]
update_hosts
"""
FLEET_YAML = """\
all:
  children:
    update_hosts:
      hosts:
        web1: {}
        web2: {}
    db:
      hosts:
        db1: {}
"""


def fleet_dir(tmp_path: Path) -> Path:
    """An inventory directory: hosts, group_vars/, host_vars/ (with YAML that is no inventory)."""
    inventory = tmp_path / "fleet"
    (inventory / "group_vars").mkdir(parents=True)
    (inventory / "host_vars").mkdir()
    (inventory / "hosts").write_text(FLEET_INI)
    (inventory / "group_vars" / "all.yml").write_text("compose_update_health_timeout: 60\n")
    (inventory / "host_vars" / "web1.yml").write_text("compose_update_docker_host: unix:///x\n")
    return inventory


@pytest.mark.parametrize(
    ("files", "source", "names"),
    [
        ({"hosts": FLEET_INI}, "hosts", ["db", "db1", "update_hosts", "web", "web1", "web2"]),
        ({"hosts.yml": FLEET_YAML}, "hosts.yml", ["db", "db1", "update_hosts", "web1", "web2"]),
        ({"localhost": "localhost ansible_connection=local\n"}, "localhost", ["localhost"]),
        ({"empty": ""}, "empty", []),
        ({"a": "[web]\nweb1\n", "b": "[db]\ndb1\n"}, ".", ["db", "db1", "web", "web1"]),
    ],
)
def test_an_inventory_s_names_are_its_hosts_and_groups(
    tmp_path: Path, files: dict[str, str], source: str, names: list[str]
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    inventory = read_inventory(tmp_path / source)
    assert inventory.names() == sorted([*names, "all", "ungrouped"])


def test_an_inventory_directory_skips_its_vars(tmp_path: Path) -> None:
    inventory = read_inventory(fleet_dir(tmp_path))
    assert inventory.hosts == {"web1", "web2", "db1"}
    assert {"update_hosts", "db", "web"} <= inventory.groups


@pytest.mark.parametrize(
    ("files", "source", "message"),
    [
        ({}, "missing", "does not exist"),
        ({"bad.ini": "[web\nweb1 = =\n"}, "bad.ini", "bad.ini could not be parsed"),
        ({"sub/.hidden": "[web]\nweb1\n"}, "sub", "holds no inventory file"),
    ],
)
def test_an_inventory_that_does_not_parse_is_an_error(
    tmp_path: Path, files: dict[str, str], source: str, message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(InventoryError, match=message):
        read_inventory(tmp_path / source)


@pytest.mark.parametrize(
    ("hosts", "group", "expected"),
    [
        ((), None, "update_hosts"),  # the default group, the inventory has it
        ((), "db", "db"),
        ((), "web1", "web1"),  # a host will do
        (("web1",), None, "web1"),
        (("web2", "db"), None, "web2,db"),  # in the job's order
        (("all",), None, "all"),
    ],
)
def test_the_play_s_hosts_are_the_job_s_names_or_the_group(
    tmp_path: Path, hosts: tuple[str, ...], group: str | None, expected: str
) -> None:
    settings = Settings(inventory=fleet_dir(tmp_path))
    if group is not None:
        settings = Settings(inventory=settings.inventory, hosts_group=group)
    assert target(settings, hosts) == expected


def test_without_the_default_group_the_default_is_localhost(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("[local]\nlocalhost ansible_connection=local\n")
    assert target(Settings(inventory=tmp_path / "hosts"), ()) == "localhost"
    # The shipped inventory, as before fleets.
    assert target(Settings(), ()) == "localhost"


def test_a_group_set_and_missing_stops_the_worker(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {**SECRET, "UPDATE_INVENTORY": str(fleet_dir(tmp_path)), "UPDATE_HOSTS_GROUP": "webs"}
    )
    with pytest.raises(InventoryError, match="UPDATE_HOSTS_GROUP webs is no group"):
        target(settings, ())
    [problem] = inventory_problems(settings)
    assert "UPDATE_HOSTS_GROUP webs" in problem and "UPDATE_INVENTORY" in problem


def test_a_bad_inventory_stops_the_worker(tmp_path: Path) -> None:
    (tmp_path / "hosts").write_text("[web\n")
    settings = Settings.from_env({**SECRET, "UPDATE_INVENTORY": str(tmp_path / "hosts")})
    assert settings.missing_ansible_content() == []  # there, but not an inventory
    [problem] = inventory_problems(settings)
    assert "could not be parsed" in problem and "UPDATE_INVENTORY" in problem
    assert inventory_problems(Settings.from_env(SECRET)) == []  # the shipped one
    directory = Settings.from_env({**SECRET, "UPDATE_INVENTORY": str(fleet_dir(tmp_path))})
    assert directory.missing_ansible_content() == []  # a directory is an inventory too


def test_an_unknown_name_is_refused_with_the_valid_ones(tmp_path: Path) -> None:
    settings = Settings(inventory=fleet_dir(tmp_path))
    with pytest.raises(InvalidRequest) as refused:
        target(settings, ("web1", "web3", "cache"))
    assert str(refused.value) == (
        "hosts not in the inventory: cache, web3 (valid host and group names: all, db, db1, "
        "ungrouped, update_hosts, web, web1, web2)"
    )


def test_the_valid_names_listed_are_bounded() -> None:
    many = Inventory(Path("/x"), frozenset(f"h{i:03}" for i in range(120)), frozenset({"all"}))
    with pytest.raises(InvalidRequest, match=r"h048, \.\.\. \(71 more\)\)$"):
        requested_target(many, ("nope",))


async def test_a_job_naming_an_unknown_host_runs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before the compose file is read or a playbook runs (both would fail here)."""

    async def no_compose(settings: Settings) -> list[str]:
        raise AssertionError("the services were resolved for a refused job")

    monkeypatch.setattr(jobs, "allowed_services", no_compose)
    settings = Settings(inventory=fleet_dir(tmp_path))
    summary = await jobs._update(settings, "job1", None, {"hosts": ["web9"]})
    assert summary["status"] == "failed"
    assert summary["steps"] == []
    assert summary["error"] == {
        "step": "validation",
        "message": "hosts not in the inventory: web9 (valid host and group names: all, db, db1, "
        "ungrouped, update_hosts, web, web1, web2)",
    }


# ------------------------------------------------------------------ status shows the hosts
FLEET_SUMMARY: dict[str, Any] = {
    "job_id": "j1",
    "status": "failed",
    "duration_s": 12.5,
    "request": {"hosts": ["update_hosts"], "requested_by": "ops"},
    "services": {},
    "hosts": {
        "web1": {"status": "successful", "rolled_back": False, "error": None},
        "web2": {
            "status": "failed",
            "rolled_back": True,
            "error": {"step": "recreate", "message": "api unhealthy\x1b[31m"},
        },
        "web3": "garbage",
        7: {"status": "successful"},
    },
}


def test_status_shows_each_host_s_outcome() -> None:
    assert summary_hosts(FLEET_SUMMARY) == {
        "web1": {"status": "successful", "rolled_back": False, "error": None},
        "web2": {
            "status": "failed",
            "rolled_back": True,
            "error": "recreate: api unhealthy\\x1b[31m",
        },
    }
    text = format_summary(FLEET_SUMMARY).splitlines()
    assert text[0] == "update j1 on update_hosts: failed in 12.5 s (requested by ops)"
    assert text[1:3] == [
        "  host web1  successful",
        "  host web2  failed, rolled back: recreate: api unhealthy\\x1b[31m",
    ]
    assert host_status_fields({"summary": FLEET_SUMMARY})["hosts"]["web2"]["rolled_back"]


@pytest.mark.parametrize(
    "summary",
    [None, {}, {"hosts": None}, {"hosts": []}, {"hosts": "web1"}, {"hosts": {}}, "x"],
)
def test_a_summary_without_per_host_detail_keeps_status_as_before(summary: object) -> None:
    assert summary_hosts(summary) == {}
    assert host_status_fields({"summary": summary}) == {}


def test_a_summary_s_request_shows_the_hosts_asked_for() -> None:
    request = UpdateRequest.parse({"hosts": ["web1", "db"]}).resolve(["api"])
    at = datetime.now(UTC)
    summary = rejected_summary(job_id="j1", message="x", started_at=at, finished_at=at)
    summary.request = request
    assert assert_valid_summary(summary.as_dict())["request"]["hosts"] == ["web1", "db"]


@pytest.mark.parametrize(
    "argv",
    [
        ["enqueue", "--hosts", "web*"],
        ["enqueue", "--hosts", "all:!web1"],
        ["enqueue", "--hosts", "web1,"],
        ["enqueue", "--hosts", "web1,web1"],
        ["revert", "--hosts", "web&db"],
    ],
)
def test_the_cli_refuses_a_pattern_before_it_queues_anything(
    argv: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def no_redis(*args: object, **kwargs: object) -> None:
        raise AssertionError("connected to Redis for an invalid request")

    monkeypatch.setattr(UpdateClient, "connect", no_redis)
    monkeypatch.setenv("UPDATE_JOB_SECRET", "s" * 40)
    assert main(argv) == 2
    assert "invalid request" in capsys.readouterr().err


# ------------------------------------------------------------------ what the play is given
@pytest.mark.parametrize(
    ("fields", "update_hosts"),
    [({}, "update_hosts"), ({"hosts": ["web2", "db"]}, "web2,db")],
)
async def test_the_playbook_and_a_cut_off_rollback_run_on_the_job_s_hosts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any], update_hosts: str
) -> None:
    """A job cut off (here: a timeout) is rolled back on the hosts it targeted."""
    runs: list[PlaybookRun] = []

    async def run(playbook: PlaybookRun, **kwargs: object) -> RunOutcome:
        runs.append(playbook)
        return RunOutcome(status=UpdateStatus.timeout, events=[])

    async def services(settings: Settings) -> list[str]:
        return ["api"]

    monkeypatch.setattr(jobs, "allowed_services", services)
    monkeypatch.setattr(jobs, "run_playbook_async", run)
    monkeypatch.setattr(rollback, "run_playbook_async", run)
    settings = Settings(inventory=fleet_dir(tmp_path), lock_dir=tmp_path / "locks", serial="1")
    await jobs._update(settings, "job1", None, fields)
    update, cut_off = runs
    assert update.playbook.name == "update.yml" and cut_off.playbook.name == "rollback.yml"
    assert update.extravars["update_hosts"] == cut_off.extravars["update_hosts"] == update_hosts
    assert update.extravars["update_serial"] == [1]


async def test_the_worker_does_not_start_with_an_inventory_that_does_not_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def host_ok() -> list[str]:
        return []

    monkeypatch.setattr(main_module, "check_host", host_ok)
    (tmp_path / "hosts").write_text("[update_hosts\nweb1\n")
    settings = Settings.from_env({**SECRET, "UPDATE_INVENTORY": str(tmp_path / "hosts")})
    with pytest.raises(main_module.StartupError, match=r"hosts could not be parsed.*UPDATE_INV"):
        await main_module.startup({"settings": settings, CTX_MARK: True})
