"""Write a copy of playbooks/ with the lever "fewer module processes", for a lever run.

    python -m bench.variants.make_lean /tmp/lean
    python -m bench --variant-playbook /tmp/lean/update.yml --label lean ...

A prototype for measuring, never the product. The edits are in bench/variants/lean_edits/
(`NN-name.old` is replaced by `NN-name.new`, each exactly once; re-run after the real playbook
changes: it stops at the first edit that no longer applies):

- read-only Docker queries (`docker info`, `compose version`), the token file and the per-run
  temp directory (create and remove) run as lookups inside ansible-playbook (the play only
  ever targets localhost, the controller) instead of one module process each;
- the snapshots read `docker ps` + `docker inspect` + `docker image inspect` as lookups
  (`lean_edits/snapshot.yml`) instead of host_info + image_info module processes, and the
  after-update states come from the same inspect instead of one `docker_container_info` process
  per service;
- the recreate is skipped when the pull brought no new image and every target runs.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "playbooks"
EDITS = Path(__file__).resolve().parent / "lean_edits"


class EditDoesNotApply(RuntimeError):
    """playbooks/update.yml changed: one of the lever's edits no longer applies."""


def lean_playbook(text: str, edits: Path = EDITS) -> str:
    """The playbook text with every edit applied (each anchor must occur exactly once)."""
    for old_file in sorted(edits.glob("*.old")):
        old = old_file.read_text()
        if text.count(old) != 1:
            raise EditDoesNotApply(f"{old_file.name}: found {text.count(old)} times, wanted once")
        text = text.replace(old, old_file.with_suffix(".new").read_text())
    first_line_end = text.index("\n") + 1
    return text[:first_line_end] + (edits / "header.txt").read_text() + text[first_line_end:]


def write_lean(target: Path) -> Path:
    """Copy playbooks/ to `target` with the edits; return the playbook's path."""
    playbook = lean_playbook((SOURCE / "update.yml").read_text())
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(SOURCE, target)
    (target / "update.yml").write_text(playbook)
    shutil.copy2(EDITS / "snapshot.yml", target / "tasks" / "snapshot.yml")
    return target / "update.yml"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m bench.variants.make_lean OUTPUT_DIR", file=sys.stderr)
        return 2
    try:
        playbook = write_lean(Path(args[0]).resolve())
    except EditDoesNotApply as exc:
        print(f"make_lean: {exc}", file=sys.stderr)
        return 1
    print(playbook)
    return 0


if __name__ == "__main__":
    sys.exit(main())
