"""For `arq worker.arq_app.WorkerSettings`: the worker configured from the environment when arq
imports this module. `update-executor worker` runs the same worker with friendlier errors.

It needs a job secret (UPDATE_JOB_SECRET_FILE, ...): `--insecure-unsigned-jobs` exists only as
a flag of `update-executor worker`, on purpose."""

from __future__ import annotations

from .main import scrub_secret_environ, worker_kwargs
from .settings import Settings

WorkerSettings = type("WorkerSettings", (), worker_kwargs(Settings.from_env()))
scrub_secret_environ()
