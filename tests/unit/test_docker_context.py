"""The preflight finds the operator's docker context and hands its address to every step as
DOCKER_HOST, or refuses one it cannot hand over (issue 20: one daemon, really)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.unit.playbook_code import load

preflight = load("library/update_preflight")


@pytest.mark.parametrize(
    ("environ", "config", "expected"),
    [
        ({"DOCKER_HOST": "unix:///a.sock", "DOCKER_CONTEXT": "away"}, None, ""),  # DOCKER_HOST wins
        ({"DOCKER_CONTEXT": "away"}, {"currentContext": "other"}, "away"),
        ({"DOCKER_CONTEXT": "default"}, None, ""),
        ({}, {"currentContext": "other"}, "other"),
        ({}, {"currentContext": "default"}, ""),
        ({}, {"auths": {}}, ""),
        ({}, None, ""),
    ],
)
def test_current_context(
    tmp_path: Path, environ: dict[str, str], config: dict[str, Any] | None, expected: str
) -> None:
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    assert preflight.current_context({**environ, "DOCKER_CONFIG": str(tmp_path)}) == expected


def inspect(host: str, tls: bool = False, skip_verify: bool = False) -> str:
    entry = {
        "Name": "away",
        "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": skip_verify}},
        "TLSMaterial": {"docker": ["ca.pem"]} if tls else {},
    }
    return json.dumps([entry])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (inspect("unix:///run/other.sock"), "unix:///run/other.sock"),
        (inspect("tcp://10.0.0.2:2375"), "tcp://10.0.0.2:2375"),
        (inspect("tcp://10.0.0.2:2376", tls=True), "cannot be followed"),
        (inspect("tcp://10.0.0.2:2376", skip_verify=True), "cannot be followed"),
        (inspect("ssh://deploy@web1"), "cannot be followed"),
        ('context "away" does not exist', "could not be read"),
        ("[]", "could not be read"),
    ],
)
def test_context_endpoint(text: str, expected: str) -> None:
    if expected.startswith(("unix://", "tcp://")):
        assert preflight.context_endpoint("away", text) == expected
    else:
        with pytest.raises(preflight.PreflightFailed, match=expected) as raised:
            preflight.context_endpoint("away", text)
        assert "compose_update_docker_host" in str(raised.value)
