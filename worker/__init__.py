"""update-executor: update a Docker Compose deployment from an ARQ job, through Ansible.

Three parts, by where the code runs (docs/internals.md, "Package layout"):
`worker.shared` (both sides: the client, the codec, Redis keys, the API's settings),
`worker.host` (the worker on the host) and `worker.api` (the router and the CLI).
Flow: `shared.client` enqueues → `host.main` (ARQ worker) → `host.jobs.process_system_update`
validates (`shared.request`) → `host.runner` runs `playbooks/update.yml` → `host.summary`
builds the result.
"""

__version__ = "0.1.0"
