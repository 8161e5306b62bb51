"""Lifecycle hooks (issue 16) on the test bed: compose labels `update-executor.pre-update` and
`update-executor.post-update` on the api service, whose commands append to the api's volume
which container ran them. Through the queue (real worker, real playbook) and by hand with
ansible-playbook (the hooks are steps of the playbook, with their own tags). The tests share one
deployment of this module: each sets its own hooks, starts from an empty hook log and publishes
a version of its own."""

from __future__ import annotations

from typing import Any

from testbed.faults import run_playbook
from tests.integration.conftest import Deployment, update
from worker.shared.client import UpdateClient

# `$$` is compose's escape for `$`: the container's shell expands $(hostname), its short ID.
RECORD_PRE = "sh -c 'echo \"pre $$(hostname)\" >> /data/hooks.log'"
RECORD_POST = "sh -c 'echo \"post $$(hostname)\" >> /data/hooks.log'"


_ORIGINAL = "update-executor.testbed.original-compose"


def add_hooks(deployment: Deployment, pre: str | None, post: str | None) -> None:
    """Put the hook labels on the api service and apply them (compose recreates the api with
    its labels, as an operator's `docker compose up -d` would), before any update: the labels
    replace the ones an earlier test set, and the hook log starts empty."""
    original = deployment.compose_file.with_name(_ORIGINAL)
    if not original.exists():
        original.write_text(deployment.compose_file.read_text())
    deployment.compose("exec", "-T", "api", "rm", "-f", "/data/hooks.log")
    labels = ["    labels:"]
    if pre is not None:
        labels.append(f"      update-executor.pre-update: {quote(pre)}")
    if post is not None:
        labels.append(f"      update-executor.post-update: {quote(post)}")
    labels.append('      update-executor.timeout: "60"')
    text = original.read_text()
    anchor = "      APP_ROLE: api\n"
    assert anchor in text
    deployment.compose_file.write_text(text.replace(anchor, anchor + "\n".join(labels) + "\n", 1))
    deployment.compose("up", "-d", "--wait")


def quote(command: str) -> str:
    """A YAML double-quoted scalar."""
    return '"' + command.replace("\\", "\\\\").replace('"', '\\"') + '"'


def hook_log(deployment: Deployment) -> list[str]:
    return deployment.compose("exec", "-T", "api", "cat", "/data/hooks.log").splitlines()


def step_names(summary: dict[str, Any]) -> list[str]:
    return [step["name"] for step in summary["steps"]]


def status_of(summary: dict[str, Any], name: str) -> str:
    return str(next(step["status"] for step in summary["steps"] if step["name"] == name))


async def test_pre_hook_in_the_old_container_then_post_hook_in_the_new_one(
    shared_deployment: Deployment, shared_client: UpdateClient
) -> None:
    deployment, client = shared_deployment, shared_client
    add_hooks(deployment, RECORD_PRE, RECORD_POST)
    old = deployment.container_ids()
    new_app = deployment.publish(deployment.app_repo, deployment.next_version())

    summary = await update(client, deployment, services=["api", "worker"])

    assert summary["status"] == "successful", summary["error"]
    new = deployment.container_ids()
    assert deployment.image_ids()["api"] == new_app
    assert new["api"] != old["api"]
    # each once, in that order, the pre one in the old container and the post one in the new
    assert hook_log(deployment) == [f"pre {old['api'][:12]}", f"post {new['api'][:12]}"]
    names = step_names(summary)
    assert names.index("pull") < names.index("pre-update") < names.index("recreate")
    assert names.index("migrations") < names.index("post-update") < names.index("rollback")
    assert status_of(summary, "pre-update") == status_of(summary, "post-update") == "changed"
    pre_step = next(step for step in summary["steps"] if step["name"] == "pre-update")
    assert pre_step["message"] == "api: exit 0"
    assert summary["hooks"] == {
        "api": {
            "pre-update": {"command": RECORD_PRE.replace("$$", "$"), "rc": 0, "output_tail": ""},
            "post-update": {"command": RECORD_POST.replace("$$", "$"), "rc": 0, "output_tail": ""},
        }
    }

    # Nothing new: no container is replaced, so no hook runs (and no hook step shows).
    again = await update(client, deployment, services=["api", "worker"], run_migrations=False)
    assert again["status"] == "successful", again["error"]
    assert deployment.container_ids()["api"] == new["api"]
    assert hook_log(deployment) == [f"pre {old['api'][:12]}", f"post {new['api'][:12]}"]
    assert "pre-update" not in step_names(again)
    assert again["hooks"] == {}


async def test_a_failing_pre_hook_stops_the_update_before_anything_changed(
    shared_deployment: Deployment, shared_client: UpdateClient
) -> None:
    deployment, client = shared_deployment, shared_client
    add_hooks(deployment, "sh -c 'echo cannot drain >&2; exit 3'", RECORD_POST)
    containers, images = deployment.container_ids(), deployment.image_ids()
    deployment.publish(deployment.app_repo, deployment.next_version())

    summary = await update(client, deployment, services=["api", "worker"])

    assert summary["status"] == "failed"
    assert summary["error"]["step"] == "pre-update"
    assert "exited with status 3" in summary["error"]["message"]
    assert "cannot drain" in summary["error"]["message"]
    assert summary["rolled_back"] is False
    assert deployment.container_ids() == containers  # every container as it was
    assert deployment.image_ids() == images
    assert status_of(summary, "recreate") == "skipped"
    assert "post-update" not in step_names(summary)
    assert summary["hooks"]["api"]["pre-update"]["rc"] == 3
    assert "cannot drain" in summary["hooks"]["api"]["pre-update"]["output_tail"]
    assert deployment.compose("exec", "-T", "api", "ls", "/data").split().count("hooks.log") == 0


async def test_a_failing_post_hook_rolls_back(
    shared_deployment: Deployment, shared_client: UpdateClient
) -> None:
    deployment, client = shared_deployment, shared_client
    add_hooks(deployment, RECORD_PRE, "sh -c 'echo cache warm-up failed; exit 4'")
    images = deployment.image_ids()
    deployment.publish(deployment.app_repo, deployment.next_version())

    summary = await update(client, deployment, services=["api", "worker"])

    assert summary["status"] == "failed"
    assert summary["error"]["step"] == "post-update"
    assert "exited with status 4" in summary["error"]["message"]
    assert "cache warm-up failed" in summary["error"]["message"]
    assert summary["rolled_back"] is True
    assert deployment.image_ids()["api"] == images["api"]  # the previous version runs again
    assert deployment.image_ids()["worker"] == images["worker"]
    assert status_of(summary, "rollback") == "changed"
    assert summary["hooks"]["api"]["post-update"]["rc"] == 4


def test_hooks_run_by_hand_and_can_be_skipped_by_tag(shared_deployment: Deployment) -> None:
    deployment = shared_deployment
    add_hooks(deployment, RECORD_PRE, RECORD_POST)
    old = deployment.container_ids()
    deployment.publish(deployment.app_repo, deployment.next_version())
    env = {**deployment.worker_env(), "UPDATE_SERVICES": "api"}

    run = run_playbook(env)
    assert run.returncode == 0, run.explain()
    new = deployment.container_ids()
    assert hook_log(deployment) == [f"pre {old['api'][:12]}", f"post {new['api'][:12]}"]
    assert set(run.report["hooks"]["api"]) == {"pre-update", "post-update"}

    deployment.publish(deployment.app_repo, deployment.next_version())
    skipped = run_playbook(env, "--skip-tags", "hooks")
    assert skipped.returncode == 0, skipped.explain()
    assert deployment.container_ids()["api"] != new["api"]  # updated, without hooks
    assert len(hook_log(deployment)) == 2
    assert skipped.report["hooks"] == {}
