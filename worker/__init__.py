"""update-executor: update a Docker Compose deployment from an ARQ job, through Ansible.

Flow: `client` enqueues → `main` (ARQ worker) → `jobs.process_system_update` validates
(`request`) → `runner` runs `playbooks/update.yml` → `summary` builds the result.
"""

__version__ = "0.1.0"
