"""The bench's code fingerprint tells a run whether worker/ or playbooks/ changed under it; the
bytecode ansible writes next to the role's filter plugins during the run is not a change."""

from __future__ import annotations

from pathlib import Path

from bench.machine import code_fingerprint


def _tree(root: Path) -> None:
    plugins = root / "playbooks" / "roles" / "r" / "filter_plugins"
    plugins.mkdir(parents=True)
    (plugins / "f.py").write_text("X = 1\n")
    (root / "worker").mkdir()
    (root / "worker" / "w.py").write_text("Y = 1\n")


def test_bytecode_written_during_a_run_is_not_a_change(tmp_path: Path) -> None:
    _tree(tmp_path)
    before = code_fingerprint(tmp_path)
    cache = tmp_path / "playbooks" / "roles" / "r" / "filter_plugins" / "__pycache__"
    cache.mkdir()
    (cache / "f.cpython-311.pyc").write_bytes(b"\x00bytecode")
    after = code_fingerprint(tmp_path)
    assert after["playbooks_sha256"] == before["playbooks_sha256"]


def test_a_changed_playbook_file_is_a_change(tmp_path: Path) -> None:
    _tree(tmp_path)
    before = code_fingerprint(tmp_path)
    (tmp_path / "playbooks" / "roles" / "r" / "filter_plugins" / "f.py").write_text("X = 2\n")
    assert code_fingerprint(tmp_path)["playbooks_sha256"] != before["playbooks_sha256"]
