"""For `arq worker.arq_app.WorkerSettings`: the worker configured from the environment when arq
imports this module. `update-executor worker` runs the same worker with friendlier errors."""

from __future__ import annotations

from .main import scrub_secret_environ, worker_kwargs
from .settings import Settings

WorkerSettings = type("WorkerSettings", (), worker_kwargs(Settings.from_env()))
scrub_secret_environ()
