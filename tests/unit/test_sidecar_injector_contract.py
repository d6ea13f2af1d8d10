"""The contract with the injector, checked on its own golden outputs: every ``istio-proxy``
container the injector renders (``tests/golden/injector/*.out.yaml``) must start the agent —
its args and env, resolved the way the kubelet resolves them, give a valid configuration —
and every lifecycle hook must be a ``remora proxy`` command line the agent accepts.

Read-only use of the injector's files: when the two sides drift apart, this fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from sidecar.cli import proxy
from sidecar.config import AgentOptions, build_config

INJECTOR_GOLDEN = Path(__file__).parent.parent / "golden" / "injector"
FIELDS = {
    "metadata.name": "web-7d4f9-abcde",
    "metadata.namespace": "shop",
    "status.podIP": "10.244.1.7",
    "spec.serviceAccountName": "web",
    "status.hostIP": "172.18.0.2",
    "spec.nodeName": "node-1",
}
RESOURCES = {"limits.cpu": "2", "limits.memory": "1073741824"}


def _pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = doc.get("spec") or {}
    if "template" in spec:
        spec = spec["template"].get("spec") or {}
    if spec:
        yield spec


def proxy_containers() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(INJECTOR_GOLDEN.glob("*.out.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict):
                continue
            for spec in _pod_specs(doc):
                for container in [
                    *(spec.get("initContainers") or []),
                    *(spec.get("containers") or []),
                ]:
                    if container.get("name") == "istio-proxy":
                        found.append((path.name, container))
    return found


CONTAINERS = proxy_containers()


def kubelet_env(container: dict[str, Any]) -> dict[str, str]:
    """The env as the kubelet would give it (fieldRef/resourceFieldRef resolved)."""
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = str(var["value"])
        elif "fieldRef" in (var.get("valueFrom") or {}):
            env[var["name"]] = FIELDS[var["valueFrom"]["fieldRef"]["fieldPath"]]
        elif "resourceFieldRef" in (var.get("valueFrom") or {}):
            env[var["name"]] = RESOURCES[var["valueFrom"]["resourceFieldRef"]["resource"]]
    return env


def expand(arg: str, env: dict[str, str]) -> str:
    """The kubelet's ``$(VAR)`` expansion in args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), arg)


def test_the_injector_renders_proxy_containers() -> None:
    assert len(CONTAINERS) >= 10, "no injector goldens found: has their layout changed?"


@pytest.mark.parametrize(("name", "container"), CONTAINERS, ids=[n for n, _ in CONTAINERS])
def test_every_injected_proxy_starts_the_agent(
    name: str, container: dict[str, Any], tmp_path: Path
) -> None:
    args = container.get("args") or []
    assert args[:2] == ["proxy", "sidecar"], f"{name}: the agent is 'remora proxy sidecar'"
    env = kubelet_env(container)
    argv = [expand(a, env) for a in args[2:]]
    result = CliRunner().invoke(
        proxy,
        [
            "sidecar",
            *argv,
            "--dry-run",
            "--config-dir",
            str(tmp_path),
            "--pod-info-dir",
            str(tmp_path),
        ],
        env=env,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, f"{name}: {result.output}"
    plan = json.loads(result.output)
    node = plan["bootstrap"]["node"]
    assert node["id"] == "sidecar~10.244.1.7~web-7d4f9-abcde.shop~shop.svc.cluster.local"
    assert node["metadata"]["SERVICE_ACCOUNT"] == "web"
    for key in ("APP_CONTAINERS", "CLUSTER_ID", "MESH_ID", "INTERCEPTION_MODE"):
        assert key in node["metadata"], f"{name}: ISTIO_META_{key} did not reach the node"
    config = build_config(env, AgentOptions(), host_cpus=2)
    # Every rewritten probe is one the agent serves, on the port the probes now point at.
    probers = json.loads(env.get("ISTIO_KUBE_APP_PROBERS", "{}"))
    assert set(config.probers) == set(probers)
    # The proxy's own probes hit Envoy's health listener, which forwards to the agent.
    for own in (container.get("readinessProbe"), container.get("startupProbe")):
        if own:
            assert own["httpGet"] == {"path": "/healthz/ready", "port": config.ports.health}
    if "ISTIO_PROMETHEUS_ANNOTATIONS" in env:
        assert config.app_scrape is not None, f"{name}: the app's metrics would not be merged"


HOOKS = [
    (name, hook, handler["exec"]["command"])
    for name, container in CONTAINERS
    for hook, handler in (container.get("lifecycle") or {}).items()
    if "exec" in handler
]


def test_some_hooks_are_rendered() -> None:
    assert {hook for _, hook, _ in HOOKS} >= {"postStart", "preStop"}


@pytest.mark.parametrize(("name", "hook", "command"), HOOKS, ids=[f"{n}-{h}" for n, h, _ in HOOKS])
def test_every_lifecycle_hook_is_a_command_the_agent_accepts(
    name: str, hook: str, command: list[str]
) -> None:
    assert command[:2] == ["remora", "proxy"], f"{name} {hook}: {command}"
    sub = proxy.commands[command[2]]
    with click.Context(sub) as ctx:
        sub.parse_args(ctx, list(command[3:]))  # raises on an unknown flag or argument
