"""POST /system/update/cancel end to end (issue 25): the UI's cancel button on a real app
(tests/integration/api_app.py under uvicorn), the test bed's Redis, registry and dockerd, and
the real ARQ worker, which takes the API's signed cancel request before the job starts.

The deployment is the module's shared one on a queue of its own: the canceled update changes
nothing, so the site is left as every other test may find it.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.integration.conftest import Deployment, run_worker_burst
from tests.integration.test_api import ADMIN, BASE, api_server
from tests.summary_schema import assert_valid_summary
from worker.shared.client import UpdateClient
from worker.shared.keys import cancel_key, inflight_key


async def test_the_api_cancels_a_queued_update_before_it_starts(
    shared_deployment: Deployment, tmp_path: Path
) -> None:
    deployment = shared_deployment.with_fresh_queue()
    queue = deployment.settings.queue_name
    before_images, before_containers = deployment.image_ids(), deployment.container_ids()
    new_app = deployment.publish(deployment.app_repo, deployment.next_version())
    assert new_app != before_images["api"]  # an update would change the site

    async with await UpdateClient.connect(deployment.settings) as client:
        with api_server(deployment, tmp_path) as api:
            async with httpx.AsyncClient(base_url=api.url, headers=ADMIN, timeout=60) as http:
                queued = await http.post(f"{BASE}/trigger", json={"services": ["api"]})
                assert queued.status_code == 202, queued.text
                job_id = queued.json()["job_id"]

                # No job id: the latest update, the one just queued.
                canceling = await http.post(f"{BASE}/cancel", json={})
                assert canceling.status_code == 202, canceling.text
                assert canceling.json()["job_id"] == job_id
                assert canceling.json()["state"] == "queued"
                assert await client.redis.exists(cancel_key(queue, job_id))  # signed, in Redis

                await run_worker_burst(deployment.settings)  # the real worker takes the queue

                status = await http.get(f"{BASE}/status", params={"job_id": job_id})
                assert status.status_code == 200, status.text
                answer = status.json()
                assert answer["state"] == "finished"
                summary = assert_valid_summary(answer["summary"])
                assert summary["status"] == "canceled", summary
                assert summary["rolled_back"] is False
                assert answer["status"] == "failed"  # the application's page: not "completed"

                again = await http.post(f"{BASE}/cancel", params={"job_id": job_id}, json={})
                assert again.status_code == 409, again.text
                assert "already ended (canceled)" in again.json()["detail"]
                unknown = await http.post(
                    f"{BASE}/cancel", params={"job_id": "no-such-job"}, json={}
                )
                assert unknown.status_code == 404, unknown.text

        # Nothing ran: the same containers on the same images, the request and the in-flight
        # slot gone from Redis, the queue empty.
        assert deployment.image_ids() == before_images
        assert deployment.container_ids() == before_containers
        assert not await client.redis.exists(cancel_key(queue, job_id))
        assert await client.redis.get(inflight_key(queue)) is None
        assert await client.redis.zcard(queue) == 0
