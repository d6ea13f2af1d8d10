"""Contract with the injector: every init container it renders is a valid ``remora init``.

The injector's reviewed golden outputs (``tests/golden/injector/*.out.yaml``) are the
record of what it renders; each ``init`` argument list among them must parse, validate and
plan here, so a flag renamed on either side fails this test instead of a pod start.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from initcontainer.cmdline import _parse_fast, build_parser
from initcontainer.config_from_flags import MachineFacts, config_from_args
from initcontainer.plan import build_plan

INJECTOR_GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "injector"


def _init_args() -> list[tuple[str, list[str]]]:
    found = []
    for path in sorted(INJECTOR_GOLDEN.glob("*.out.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            for container in _init_containers(document):
                args = [str(a) for a in container.get("args") or []]
                if args[:1] == ["init"]:
                    found.append((f"{path.name}:{container.get('name')}", args[1:]))
    return found


def _init_containers(document: Any) -> list[dict[str, Any]]:
    if not isinstance(document, dict):
        return []
    spec = document.get("spec") or {}
    if isinstance(spec.get("template"), dict):  # Deployments and friends
        spec = spec["template"].get("spec") or {}
    return list(spec.get("initContainers") or [])


CASES = _init_args()


def test_the_injector_renders_init_containers() -> None:
    assert len(CASES) >= 10, [name for name, _ in CASES]


@pytest.mark.parametrize(("source", "args"), CASES, ids=[name for name, _ in CASES])
def test_rendered_args_are_a_valid_capture_config(source: str, args: list[str]) -> None:
    argv = ["--enable-ipv6=false", *args]
    parsed = build_parser({}).parse_args(argv)
    plan = build_plan(config_from_args(parsed, MachineFacts()))
    assert plan.ipv4, source
    # Every pod start takes the fast path (argparse is only for help and errors).
    assert vars(_parse_fast(argv, {})) == vars(parsed), source
