"""The benchmark's cases: which stack, and whether the registry holds something new."""

from __future__ import annotations

from dataclasses import dataclass

from bench.project import StackShape


@dataclass(frozen=True)
class Case:
    number: int
    title: str
    shape: StackShape
    changes: bool  # a new version is published before every round

    @property
    def stack_key(self) -> str:
        """Cases with the same key share one deployment (and one worker)."""
        kind = "real" if self.shape.real else "s"
        return f"{kind}{self.shape.total}x{self.shape.targets}"


CASES: dict[int, Case] = {
    1: Case(1, "5 services, 3 get new images", StackShape(5, 3), changes=True),
    2: Case(2, "5 services, nothing new", StackShape(5, 3), changes=False),
    3: Case(3, "20 services, 10 get new images", StackShape(20, 10), changes=True),
    4: Case(
        4,
        "real application: api, worker, one-shot init new; db, redis, frontend",
        StackShape(6, 3, real=True),
        changes=True,
    ),
}

# D runs last: its result is the next round's starting point (the others are rolled back).
WAYS = ("A", "B", "C", "P", "D")
# With a lever under test (`--variant-playbook`/`--variant-env`): C and D again with the lever,
# in the same rounds, so the comparison sees the same load on the machine.
VARIANT_WAYS = ("C*", "D*")
WAY_TITLES = {
    "A": "plain docker compose commands",
    "B": "old script (Python subprocess sequence)",
    "C": "ansible-playbook playbooks/update.yml",
    "P": "peer: ansible-playbook bench/variants/peer.yml (community.docker only)",
    "D": "product: client -> Redis -> worker -> ansible-runner",
    "C*": "C with the lever",
    "D*": "D with the lever",
}
