"""For `arq worker.host.arq_app.WorkerSettings`: the worker's settings from the environment.

arq's command line builds arq's own Worker, which lacks UpdateWorker's checks (job ids,
replay across restarts, signed cancel requests, hostile Redis state: worker/host/arq_worker.py),
so such a worker refuses to start (issue 11); run `update-executor worker`. The settings
stay importable for tools that read them.
"""

from __future__ import annotations

from .main import scrub_secret_environ, worker_kwargs
from .settings import Settings

WorkerSettings = type("WorkerSettings", (), worker_kwargs(Settings.from_env()))
scrub_secret_environ()
