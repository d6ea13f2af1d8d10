"""Interface names: the webhook admits exactly the names the init container accepts."""

from __future__ import annotations

import pytest

from initcontainer.config import ConfigError, parse_interfaces
from injector import annotations as A
from injector.annotations import AnnotationError, pod_settings
from injector.config import default_config
from meshlib.ifnames import interface_name_problem

GOOD = ["eth0", "net1", "tap0", "k6t-eth0", "veth+", "br_int.100", "wg@x", "a" * 15]
BAD = [
    "",
    "a" * 16,
    "eth:0",  # an alias label, not an interface (the kernel refuses ':')
    "eth/0",
    "eth 0",
    "eth\t0",
    "eth!0",
    "eth'0",
    'eth"0',
    ".",
    "..",
    "-i",
    "éth0",  # not ASCII: 15 characters could be more than the kernel's 15 bytes
]


@pytest.mark.parametrize("name", GOOD)
def test_good_names(name: str) -> None:
    assert interface_name_problem(name) is None


@pytest.mark.parametrize("name", BAD)
def test_bad_names_say_why(name: str) -> None:
    assert interface_name_problem(name)


@pytest.mark.parametrize("name", [n for n in GOOD + BAD if n.strip() and "," not in n])
@pytest.mark.parametrize("annotation", [A.EXCLUDE_INTERFACES, A.KUBEVIRT_INTERFACES])
def test_admission_and_the_init_container_agree(annotation: str, name: str) -> None:
    try:
        pod_settings({annotation: name}, default_config())
        admitted = True
    except AnnotationError as exc:
        assert "is not a network interface name" in str(exc)
        admitted = False
    try:
        parse_interfaces(name, "-c")
        accepted = True
    except ConfigError as exc:
        assert "is not a valid interface name" in str(exc)
        accepted = False
    assert admitted == accepted, name
