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
