"""An update changes images, nothing else: on a stack shaped like the real one (see
testbed/real_shape.py), whose `.env` and compose file use the names of the worker's own
settings, every recreated container is configured exactly as `docker compose up` from a clean
shell configures it, after an update through the queue, after a rollback and after a manual
`ansible-playbook` run; the other containers are untouched (issue 12)."""

from __future__ import annotations

from tests.integration.real_site import RealSite, real_site
from tests.summary_schema import assert_valid_summary
from worker.shared.client import UpdateClient

__all__ = ["real_site"]  # the fixture

TARGETS = ["api", "frontend", "worker"]
NON_TARGETS = ["db", "init-permissions", "redis"]


def assert_the_dotenv_decided(site: RealSite) -> None:
    """What a user checks first: the api container's settings are the project's, not the host
    worker's (Redis is `redis` inside the network, not the host's 127.0.0.1)."""
    env = site.env_of("api")
    assert env["REDIS_QUEUE_HOST"] == "redis"
    assert env["REDIS_QUEUE_PORT"] == "6379"
    assert env["GITHUB_TOKEN"] == "token-from-the-dotenv"
    assert env["GHCR_REGISTRY_URL"] == "https://ghcr.io"
    assert env["COMPOSE_FILE_PATH"] == str(site.shape.directory)
    host_mount = [m for m in site.inspect("api")["Mounts"] if m["Destination"] == "/host"]
    assert [m["Source"] for m in host_mount] == [str(site.shape.directory)]


async def test_updates_and_rollbacks_change_images_only(real_site: RealSite) -> None:
    site = real_site
    assert_the_dotenv_decided(site)
    before = site.container_ids()
    new_backend = site.publish(site.backend_repo, "2")
    new_frontend = site.publish(site.frontend_repo, "2")

    # 1. Through the queue, the real worker process with the host's settings; one process
    # serves both jobs, as the unit's does. HEALTH_TIMEOUT 20 s (the bed's containers are
    # healthy within ~2 s): the unhealthy version of step 2 is given up after 20 s, not 60.
    async with await UpdateClient.connect(site.settings) as client:
        with site.worker(HEALTH_TIMEOUT="20"):
            job_id = await client.enqueue_update(requested_by="admin")
            summary = assert_valid_summary(await client.result(job_id, timeout=240))
            assert summary["status"] == "successful", summary["error"]
            assert sorted(summary["services"]) == TARGETS
            assert summary["migrations"]["ran"] is True and summary["migrations"]["rc"] == 0
            images = site.image_ids()
            assert images["api"] == images["worker"] == new_backend
            assert images["frontend"] == new_frontend
            ids = site.container_ids()
            assert {s: ids[s] for s in NON_TARGETS} == {s: before[s] for s in NON_TARGETS}
            assert all(ids[s] != before[s] for s in TARGETS)
            assert_the_dotenv_decided(site)
            site.assert_configuration_is_the_operators(TARGETS)

            # 2. A new backend that never gets healthy: rolled back by the playbook.
            before = site.container_ids()
            site.publish(site.backend_repo, "3", behaviour="unhealthy")
            job_id = await client.enqueue_update(services=["api", "worker"])
            summary = assert_valid_summary(await client.result(job_id, timeout=240))
        assert summary["status"] == "failed"
        assert summary["rolled_back"] is True, summary["error"]
        assert site.image_ids()["api"] == new_backend
        ids = site.container_ids()
        assert {s: ids[s] for s in NON_TARGETS} == {s: before[s] for s in NON_TARGETS}
        assert ids["frontend"] == before["frontend"]
        assert_the_dotenv_decided(site)
        site.assert_configuration_is_the_operators(["api", "worker"])

    # 3. By hand, configured as operators configure the role: the settings in group_vars.
    before = site.container_ids()
    newest = site.publish(site.backend_repo, "4")
    done = site.ansible_playbook("-e", "compose_update_services=api,worker")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert site.image_ids()["api"] == newest
    ids = site.container_ids()
    assert {s: ids[s] for s in [*NON_TARGETS, "frontend"]} == {
        s: before[s] for s in [*NON_TARGETS, "frontend"]
    }
    assert_the_dotenv_decided(site)
    site.assert_configuration_is_the_operators(["api", "worker"])
