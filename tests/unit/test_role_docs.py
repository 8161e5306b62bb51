"""The role's README documents exactly its argument_specs, and defaults/main.yml gives each
variable of the `main` entry point the default the spec states (issue 13)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROLE = Path(__file__).resolve().parents[2] / "playbooks" / "roles" / "compose_update"
ROW = re.compile(r"^\| `(compose_update_[a-z_]+)` \| ([a-z/]+) \| `(.*)` \| (.*) \|$")


def specs() -> dict[str, dict[str, dict[str, object]]]:
    loaded = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    return {name: entry["options"] for name, entry in loaded["argument_specs"].items()}


def readme_tables() -> dict[str, dict[str, tuple[str, object, str]]]:
    tables: dict[str, dict[str, tuple[str, object, str]]] = {}
    current = None
    for line in (ROLE / "README.md").read_text().splitlines():
        heading = re.match(r"^## Variables of `([a-z]+)`", line)
        if heading:
            current = tables.setdefault(heading.group(1), {})
        match = ROW.match(line)
        if match and current is not None:
            name, kind, default, meaning = match.groups()
            current[name] = (kind, json.loads(default), meaning)
    return tables


def test_the_readme_lists_every_option_of_each_entry_point_as_the_spec_says() -> None:
    tables = readme_tables()
    for entry, options in specs().items():
        documented = {
            name: (
                str(option["type"]) + (f"/{option['elements']}" if "elements" in option else ""),
                option.get("default"),
                option["description"],
            )
            for name, option in options.items()
        }
        assert tables[entry] == documented, entry


def test_the_defaults_are_the_ones_the_spec_states() -> None:
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    main = specs()["main"]
    assert set(defaults) == set(main)
    for name, value in defaults.items():
        assert main[name].get("default") == value, name
    for entry in specs().values():
        assert set(entry) <= set(main)
