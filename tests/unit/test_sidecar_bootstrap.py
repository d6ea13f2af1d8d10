"""Bootstrap generation: golden files (pod env + flags -> Envoy bootstrap + command line),
every one of them accepted by the real ``envoy --mode validate``, plus the invariants the
control plane and the kubelet rely on.

Regenerate after reviewing the diff: ``REMORA_UPDATE_GOLDEN=1 pytest tests/unit/test_sidecar_bootstrap.py``.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness.golden import assert_golden
from meshlib.certs import new_ca
from meshlib.envoy_binary import envoy_path
from sidecar.bootstrap import build_bootstrap, envoy_args, merge_override
from sidecar.config import AgentConfig, AgentOptions, build_config

GOLDEN = Path(__file__).parent.parent / "golden" / "sidecar" / "bootstrap"
CASES = sorted(p.stem for p in GOLDEN.glob("*.yaml"))


def load_case(name: str, **option_overrides: Any) -> AgentConfig:
    spec = yaml.safe_load((GOLDEN / f"{name}.yaml").read_text())
    options = AgentOptions(**{**(spec.get("options") or {}), **option_overrides})
    return build_config(
        {k: str(v) for k, v in spec["env"].items()},
        options,
        host_cpus=spec.get("host_cpus", 2),
        pod_labels=spec.get("pod_labels"),
        pod_annotations=spec.get("pod_annotations"),
    )


def render(config: AgentConfig) -> str:
    out = {
        "envoy_args": envoy_args(config, "/etc/istio/proxy/envoy-rev.json"),
        "bootstrap": build_bootstrap(config),
    }
    return json.dumps(out, indent=2, sort_keys=False) + "\n"


def test_there_are_cases() -> None:
    assert len(CASES) >= 4


@pytest.mark.parametrize("case", CASES)
def test_bootstrap_golden(case: str) -> None:
    got = render(load_case(case))
    expected_file = GOLDEN / f"{case}.json"
    assert_golden(expected_file, got, f"the bootstrap for {case}")


@pytest.mark.envoy
@pytest.mark.parametrize("case", CASES)
def test_envoy_accepts_bootstrap(case: str, tmp_path: Path) -> None:
    root = tmp_path / "root-cert.pem"
    root.write_bytes(new_ca("validate-root").cert_pem)
    config = load_case(case, xds_root_cert=str(root))
    path = tmp_path / "envoy-rev.json"
    path.write_text(json.dumps(build_bootstrap(config)))
    args = envoy_args(config, str(path))
    result = subprocess.run(
        [str(envoy_path()), "--mode", "validate", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "OK" in result.stdout + result.stderr


@pytest.mark.envoy
def test_envoy_validate_catches_a_broken_bootstrap(tmp_path: Path) -> None:
    """The validation test above would be worthless if validate accepted anything."""
    config = load_case("minimal-tls")
    broken = build_bootstrap(config)
    broken["static_resources"]["clusters"][0]["connect_timeout"] = "-1s"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    result = subprocess.run(
        [str(envoy_path()), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode != 0


def test_node_identity_is_what_the_control_plane_parses() -> None:
    config = load_case("istio-template-env")
    node = build_bootstrap(config)["node"]
    assert node["id"] == (
        "sidecar~10.244.1.12~reviews-v1-5d8f9c7b6-x2x7k.bookinfo~bookinfo.svc.cluster.local"
    )
    meta = node["metadata"]
    # The agent's own keys win over an ISTIO_META_ variable of the same name.
    assert meta["NAME"] == "reviews-v1-5d8f9c7b6-x2x7k"
    assert meta["NAMESPACE"] == "bookinfo"
    assert meta["INSTANCE_IPS"] == "10.244.1.12"
    assert meta["SERVICE_ACCOUNT"] == "bookinfo-reviews"
    assert meta["LABELS"]["version"] == "v1"
    assert meta["APP_CONTAINERS"] == "reviews"
    assert meta["OWNER"].endswith("/deployments/reviews-v1")
    assert node["cluster"] == "reviews.bookinfo"


def test_plaintext_on_15010_and_tls_elsewhere() -> None:
    plain = load_case("istio-template-env")
    tls = load_case("minimal-tls")
    assert not plain.xds.tls
    assert tls.xds.tls
    xds_plain = build_bootstrap(plain)["static_resources"]["clusters"][-1]
    xds_tls = build_bootstrap(tls)["static_resources"]["clusters"][-1]
    assert "transport_socket" not in xds_plain
    ctx = xds_tls["transport_socket"]["typed_config"]
    assert ctx["sni"] == "istiod.istio-system.svc"
    validation = ctx["common_tls_context"]["validation_context"]
    assert validation["trusted_ca"]["filename"] == "/var/run/secrets/istio/root-cert.pem"
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "istiod.istio-system.svc"}}
    ]


def test_no_config_means_not_live() -> None:
    """Envoy must wait for the first full config forever, not go live empty after 15 s."""
    dynamic = build_bootstrap(load_case("minimal-tls"))["dynamic_resources"]
    assert dynamic["cds_config"]["initial_fetch_timeout"] == "0s"
    assert dynamic["lds_config"]["initial_fetch_timeout"] == "0s"
    assert dynamic["ads_config"]["api_type"] == "DELTA_GRPC"


def test_admin_stays_on_loopback_even_when_listeners_are_public() -> None:
    for case in CASES:
        config = load_case(case)
        boot = build_bootstrap(config)
        admin = boot["admin"]["address"]["socket_address"]["address"]
        assert admin in {"127.0.0.1", "::1"}, case
        ports = {
            lst["address"]["socket_address"]["port_value"]
            for lst in boot["static_resources"]["listeners"]
        }
        assert ports == {config.ports.health, config.ports.prometheus}, case


def test_command_line_turns_hot_restart_off_and_sets_workers() -> None:
    config = load_case("istio-template-env")
    args = envoy_args(config, "/b.json")
    assert "--disable-hot-restart" in args
    assert args[args.index("--concurrency") + 1] == "1"
    assert args[args.index("--drain-time-s") + 1] == "20"
    changed = dataclasses.replace(config, concurrency=3)
    assert (
        envoy_args(changed, "/b.json")[envoy_args(changed, "/b.json").index("--concurrency") + 1]
        == "3"
    )


def test_override_merges_like_protobuf() -> None:
    base = {"a": {"b": 1, "c": [1]}, "d": "x", "e": [1, 2]}
    override = {"a": {"c": [2], "f": True}, "d": {"now": "an object"}, "e": [3]}
    assert merge_override(base, override) == {
        "a": {"b": 1, "c": [1, 2], "f": True},
        "d": {"now": "an object"},
        "e": [1, 2, 3],
    }
    assert base == {"a": {"b": 1, "c": [1]}, "d": "x", "e": [1, 2]}, "inputs stay untouched"
