"""Every summary a test sees is checked against docs/result.schema.json."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "docs" / "result.schema.json"


@cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )


def assert_valid_summary(summary: Any) -> dict[str, Any]:
    errors = sorted(_validator().iter_errors(summary), key=lambda e: list(e.path))
    assert not errors, "summary does not match the schema:\n" + "\n".join(
        f"- {'/'.join(map(str, e.path))}: {e.message}" for e in errors
    )
    assert isinstance(summary, dict)
    return summary
