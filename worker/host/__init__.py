"""The worker on the host: the ARQ worker, the update job, Ansible, rollback and recovery."""
