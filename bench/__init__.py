"""`make bench`: the same update done four ways, on a real dockerd, registry and Redis.

A: plain `docker login` / `compose pull` / `compose up -d --wait` / `compose exec`;
B: the replaced script's `subprocess` sequence; C: `ansible-playbook playbooks/update.yml`;
D: the product path (client -> Redis -> `update-executor worker` -> ansible-runner -> result).
See docs/performance.md for the latest figures and `python -m bench --help` for the options.
"""
