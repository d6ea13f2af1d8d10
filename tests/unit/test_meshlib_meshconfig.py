"""ProxyConfig parsing: out-of-range or mistyped values are refused naming the field and value."""

from __future__ import annotations

from typing import Any

import pytest

from meshlib.meshconfig import MeshConfigError, parse_mesh_config, parse_proxy_config


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ({"statusPort": 15021}, ("status_port", 15021)),
        ({"statusPort": "15020"}, ("status_port", 15020)),
        ({"statusPort": 0}, ("status_port", 0)),  # 0 disables the status server, as in Istio
        ({"statusPort": 65535}, ("status_port", 65535)),
        ({"proxyAdminPort": "15001"}, ("proxy_admin_port", 15001)),
        ({"concurrency": 0}, ("concurrency", 0)),
        ({"concurrency": "4"}, ("concurrency", 4)),
        ({"concurrency": 2.0}, ("concurrency", 2)),
    ],
)
def test_integer_fields_accept_integers_and_decimal_strings(
    raw: dict[str, Any], want: tuple[str, int]
) -> None:
    attr, value = want
    parsed = getattr(parse_proxy_config(raw), attr)
    assert parsed == value and type(parsed) is int


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("statusPort", 70000),
        ("statusPort", -5),
        ("statusPort", "-5"),
        ("statusPort", 15.7),
        ("statusPort", True),
        ("statusPort", "true"),
        ("statusPort", "²"),
        ("statusPort", None),
        ("statusPort", [15020]),
        ("proxyAdminPort", 0),
        ("proxyAdminPort", 65536),
        ("concurrency", -1),
        ("concurrency", False),
        ("concurrency", "1.5"),
        ("concurrency", 2**31),
    ],
)
def test_bad_integer_fields_are_refused_naming_field_and_value(key: str, value: Any) -> None:
    with pytest.raises(MeshConfigError) as caught:
        parse_proxy_config({key: value})
    assert str(caught.value).startswith(f"defaultConfig.{key}: {value!r} is not an integer in ")


def test_the_mesh_default_config_is_checked_too() -> None:
    with pytest.raises(MeshConfigError, match=r"defaultConfig\.statusPort: 70000"):
        parse_mesh_config({"defaultConfig": {"statusPort": 70000}})


@pytest.mark.parametrize("value", [None, {"nested": "x"}, ["a"]])
def test_proxy_metadata_values_must_be_strings(value: Any) -> None:
    with pytest.raises(MeshConfigError) as caught:
        parse_proxy_config({"proxyMetadata": {"OK": "1", "A": value}})
    assert str(caught.value) == f"defaultConfig.proxyMetadata.A: {value!r} is not a string"


def test_proxy_metadata_overlays_the_base() -> None:
    base = parse_proxy_config({"proxyMetadata": {"A": "1", "B": "2"}})
    assert parse_proxy_config({"proxyMetadata": {"B": "3", "C": 4}}, base).proxy_metadata == {
        "A": "1",
        "B": "3",
        "C": "4",
    }


def test_written_proxy_config_reads_back_the_same() -> None:
    """PROXY_CONFIG is written from the same field table the agent reads it with."""
    from meshlib.meshconfig import ProxyConfig, proxy_config_overrides

    config = parse_proxy_config(
        {
            "discoveryAddress": "d:15012",
            "statusPort": 0,
            "interceptionMode": "TPROXY",
            "holdApplicationUntilProxyStarts": "true",
            "concurrency": 2,
            "drainDuration": "1m30.5s",
            "terminationDrainDuration": 1234567,
            "proxyMetadata": {"A": "1"},
            "tracing": {"sampling": 1},
        }
    )
    written = proxy_config_overrides(config)
    assert written["drainDuration"] == "90.5s"
    assert written["terminationDrainDuration"] == "1234567s"
    assert parse_proxy_config(written) == config
    assert proxy_config_overrides(ProxyConfig()) == {}


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"drainDuration": "5"}, "defaultConfig.drainDuration: '5' is missing a unit"),
        ({"drainDuration": "-1s"}, "defaultConfig.drainDuration: '-1s' is negative"),
        ({"drainDuration": -1}, "defaultConfig.drainDuration: -1 is not a duration"),
        ({"holdApplicationUntilProxyStarts": "yes"}, "'yes' is not a boolean"),
        ({"interceptionMode": "IPVS"}, "'IPVS' is not one of REDIRECT, TPROXY, NONE"),
    ],
)
def test_go_syntax_for_durations_and_booleans(raw: dict[str, Any], says: str) -> None:
    with pytest.raises(MeshConfigError, match=says):
        parse_proxy_config(raw)


def test_go_durations_and_yaml_numbers_as_seconds() -> None:
    assert parse_proxy_config({"drainDuration": "1.5h"}).drain_duration_seconds == 5400
    assert parse_proxy_config({"drainDuration": 2.5}).drain_duration_seconds == 2.5
    mesh = parse_mesh_config({"protocolDetectionTimeout": "100ms", "enableAutoMtls": "F"})
    assert (mesh.protocol_detection_timeout_s, mesh.enable_auto_mtls) == (0.1, False)
