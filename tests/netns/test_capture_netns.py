"""``remora init`` against a real kernel: where connections land once the rules are in.

Each behaviour runs for every backend and iptables flavour that can do it: iptables-restore
on nft and on legacy, and python-iptables on legacy (IPv4 only, by design). The "Envoy" in
each pod is pod_agent.py listening on 15001/15006 and reporting ``SO_ORIGINAL_DST``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from netns_pods import A_V4, A_V6, B_V4, B_V4_EXTRA, B_V6, FLAVOURS, Flavour, Pod

FAULTY_PLAN = Path(__file__).with_name("faulty_plan.py")

pytestmark = pytest.mark.netns

DEFAULT = ["-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT", "-i", "*", "-x", ""]
INBOUND_ALL = ["-b", "*", "-d", "15090,15021,15020"]
V4_ONLY = ["--enable-ipv6=false"]


def _landed(pod: Pod) -> list[tuple[int, list[object] | None]]:
    assert pod.agent is not None
    return [(e["port"], e["orig_dst"]) for e in pod.agent.events()]


@pytest.fixture(params=FLAVOURS, ids=str)
def flavour(request: pytest.FixtureRequest) -> Flavour:
    flavour: Flavour = request.param
    return flavour


@pytest.fixture(params=[f for f in FLAVOURS if f.ipv6], ids=str)
def v6_flavour(request: pytest.FixtureRequest) -> Flavour:
    flavour: Flavour = request.param
    return flavour


def test_outbound_inbound_and_bypasses(pods: tuple[Pod, Pod], flavour: Flavour) -> None:
    """The issue's two-pod scenario, IPv4: capture, owner bypass, excluded ports and CIDRs."""
    a, b = pods
    a.init(*DEFAULT, *INBOUND_ALL, "-o", "5432", "-x", f"{B_V4_EXTRA}/32", *V4_ONLY, *flavour.flags)
    b.init(*DEFAULT, "-b", "8080", *V4_ONLY, *flavour.flags)
    a.start_agent()
    b.start_agent()

    # An app in A calling B: captured in A, the original destination intact.
    assert a.connect(B_V4, 8080)["ok"]
    assert _landed(a) == [(15001, [B_V4, 8080])]
    assert _landed(b) == []

    # Envoy's own traffic (uid 1337, or gid 1337) leaves A and is captured inbound by B.
    for uid, gid in ((1337, 1000), (1000, 1337)):
        assert a.connect(B_V4, 8080, uid=uid, gid=gid)["ok"]
        assert _landed(b) == [(15006, [B_V4, 8080])], (uid, gid)
        assert _landed(a) == []

    # B captures only its include list: 9090 reaches B's app port directly.
    assert a.connect(B_V4, 9090, uid=1337, gid=1337)["ok"]
    assert _landed(b) == [(9090, [B_V4, 9090])]

    # An excluded outbound port bypasses A; B's include list does not cover it either.
    assert a.connect(B_V4, 5432)["ok"]
    assert _landed(a) == []
    assert _landed(b) == [(5432, [B_V4, 5432])]

    # An excluded CIDR bypasses A and is captured inbound by B (8080 is in its list).
    assert a.connect(B_V4_EXTRA, 8080)["ok"]
    assert _landed(a) == []
    assert _landed(b) == [(15006, [B_V4_EXTRA, 8080])]

    # The app talking to itself over loopback is never captured.
    assert a.connect("127.0.0.1", 9090)["ok"]
    assert _landed(a) == [(9090, ["127.0.0.1", 9090])]


def test_inbound_wildcard_honours_exclusions(pods: tuple[Pod, Pod], flavour: Flavour) -> None:
    a, b = pods
    b.init(*DEFAULT, "-b", "*", "-d", "15090,9090", *V4_ONLY, *flavour.flags)
    b.start_agent()
    assert a.connect(B_V4, 8080)["ok"]
    assert a.connect(B_V4, 9090)["ok"]
    assert sorted(_landed(b), key=str) == sorted(
        [(15006, [B_V4, 8080]), (9090, [B_V4, 9090])], key=str
    )


def test_rerun_changes_nothing_and_cleanup_keeps_foreign_rules(
    pods: tuple[Pod, Pod], flavour: Flavour
) -> None:
    a, _ = pods
    mode = flavour.mode
    a.run(
        f"iptables-{mode}",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-s",
        "10.99.0.0/16",
        "-j",
        "MASQUERADE",
    )
    foreign = "-A POSTROUTING -s 10.99.0.0/16 -j MASQUERADE"
    flags = [*DEFAULT, *INBOUND_ALL, "-c", "eth9", *V4_ONLY, *flavour.flags]

    a.init(*flags)
    first = a.rules(mode)
    assert len(a.own_rules(mode)) > 15
    assert foreign in first

    a.init(*flags)
    assert a.rules(mode) == first, "a second run must leave exactly the same rules"

    a.init("--cleanup-only", *V4_ONLY, *flavour.flags)
    after = a.rules(mode)
    assert a.own_rules(mode) == []
    assert foreign in after

    a.init("--cleanup-only", *V4_ONLY, *flavour.flags)
    assert a.rules(mode) == after, "a repeated clean-up is a no-op"


def test_invalid_rule_leaves_nothing_installed(pods: tuple[Pod, Pod], flavour: Flavour) -> None:
    """Atomicity: a rule the kernel rejects (an unknown group) means no rule of ours at all."""
    a, _ = pods
    mode = flavour.mode
    a.init(*DEFAULT, *INBOUND_ALL, *V4_ONLY, *flavour.flags)  # an earlier, good run
    a.run(f"iptables-{mode}", "-t", "nat", "-A", "POSTROUTING", "-j", "MASQUERADE")
    env_bad = a.run(
        "env", "ISTIO_OUTBOUND_OWNER_GROUPS=no-such-group-remora",
        sys.executable, "-m", "initcontainer", *DEFAULT, *INBOUND_ALL, *V4_ONLY, *flavour.flags,
        check=False,
    )  # fmt: skip
    assert env_bad.returncode == 1, env_bad.stderr
    assert "capture failed" in env_bad.stderr
    assert "no-such-group-remora" in env_bad.stderr  # the message names the rejected rule
    assert a.own_rules(mode) == []
    assert "-A POSTROUTING -j MASQUERADE" in a.rules(mode)


def test_validate_proves_capture(pods: tuple[Pod, Pod], flavour: Flavour) -> None:
    a, b = pods
    assert a.init(*DEFAULT, *INBOUND_ALL, *V4_ONLY, *flavour.flags, "--validate").returncode == 0
    # Without rules, the probe is not captured: exit 126, like istio-iptables' validation.
    failed = b.init("validate", *DEFAULT, *V4_ONLY, "--probe-timeout=1s", check=False)
    assert failed.returncode == 126, failed.stderr
    assert "validation failed" in failed.stderr


def test_dual_stack(pods: tuple[Pod, Pod], v6_flavour: Flavour) -> None:
    a, b = pods
    mode = v6_flavour.mode
    flags = [*DEFAULT, *INBOUND_ALL, "--dual-stack", *v6_flavour.flags]
    a.init(*flags, "--validate")
    b.init(*flags)
    a.start_agent()
    b.start_agent()

    assert a.connect(B_V6, 8080)["ok"]
    assert _landed(a) == [(15001, [B_V6, 8080])]
    assert a.connect(B_V6, 8080, uid=1337, gid=1337)["ok"]
    assert _landed(b) == [(15006, [B_V6, 8080])]
    assert _landed(a) == []
    assert a.connect(B_V4, 8080)["ok"]
    assert _landed(a) == [(15001, [B_V4, 8080])]
    assert a.connect("::1", 9090)["ok"]
    assert _landed(a) == [(9090, ["::1", 9090])]

    # IPv6 passthrough source for Envoy's inbound cluster.
    assert "::6/128" in a.run("ip", "-6", "addr", "show", "dev", "lo").stdout

    first = (a.rules(mode, 4), a.rules(mode, 6))
    a.init(*flags)
    assert (a.rules(mode, 4), a.rules(mode, 6)) == first
    a.init("--cleanup-only", *v6_flavour.flags)
    assert a.own_rules(mode, 4) == [] and a.own_rules(mode, 6) == []


def test_ipv6_detected_from_the_pod_address(pod: Pod) -> None:
    """No IPv6 flag: the pod has fd00:240::1, so the IPv6 rules go in too."""
    result = pod.init(*DEFAULT, *INBOUND_ALL, "--log_output_level=default:debug")
    assert len(pod.own_rules("nft", 6)) > 15
    # The debug log ends with the final state of each family, as *-save prints it.
    assert "final state family=ipv6" in result.stderr
    assert "-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN" in result.stderr


def test_network_namespace_flag(pods: tuple[Pod, Pod]) -> None:
    """--network-namespace: run in one namespace (B here, never the root one), capture in A."""
    a, b = pods
    b.init(*DEFAULT, *INBOUND_ALL, *V4_ONLY, f"--network-namespace=/var/run/netns/{a.name}")
    assert len(a.own_rules("nft")) > 15
    assert b.own_rules("nft") == [] and b.own_rules("legacy") == []


def test_ipv6_failure_rolls_back_ipv4(pod: Pod) -> None:
    """Two transactions, one outcome: an IPv6 rule the kernel rejects removes the IPv4 rules."""
    result = pod.run(sys.executable, str(FAULTY_PLAN), "nft")
    assert "refused: ip6tables-nft-restore rejected the ipv6 rules" in result.stdout, result
    assert pod.own_rules("nft", 4) == []
    assert pod.own_rules("nft", 6) == []


def test_python_iptables_refuses_ipv6(pod: Pod) -> None:
    result = pod.init(
        *DEFAULT, *INBOUND_ALL, "--dual-stack", "--backend=python-iptables", check=False
    )
    assert result.returncode == 1
    assert "python-iptables #244" in result.stderr
    assert pod.own_rules("legacy", 4) == []


def test_auto_mode_follows_the_backend_in_use(pod: Pod) -> None:
    """Legacy rules on the node and none in nft: auto picks legacy, never both."""
    pod.run("iptables-legacy", "-t", "nat", "-A", "POSTROUTING", "-j", "MASQUERADE")
    result = pod.init(*DEFAULT, *INBOUND_ALL, *V4_ONLY)
    assert "mode=legacy" in result.stderr
    assert len(pod.own_rules("legacy")) > 15
    assert pod.own_rules("nft") == []
    # The clean-up finds them without being told the mode.
    pod.init("--cleanup-only", *V4_ONLY)
    assert pod.own_rules("legacy") == []


def test_dry_run_changes_nothing(pod: Pod) -> None:
    before = pod.rules("nft"), pod.rules("legacy")
    result = pod.init(*DEFAULT, *INBOUND_ALL, "--dual-stack", "--dry-run")
    assert result.stdout.startswith("# ipv4\n*nat\n")
    assert "\n# ipv6\n*nat\n" in result.stdout
    assert (pod.rules("nft"), pod.rules("legacy")) == before
    assert A_V4 and A_V6  # the pod's own addresses are never in the rules
    assert A_V4 not in result.stdout


def _without_caps(pod: Pod, caps: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """``remora init`` as root with ``caps`` removed from the bounding set (as a pod's
    securityContext would leave them out)."""
    init = [sys.executable, "-m", "initcontainer", *DEFAULT, *INBOUND_ALL, *V4_ONLY, *flags]
    return pod.run("setpriv", "--bounding-set", caps, *init, check=False)


def test_missing_capabilities_fail_with_the_fix(pod: Pod) -> None:
    result = _without_caps(pod, "-net_admin,-net_raw")
    assert result.returncode == 1
    assert "NET_ADMIN" in result.stderr and "securityContext" in result.stderr
    legacy = _without_caps(pod, "-net_raw", "--iptables-mode=legacy")
    assert legacy.returncode == 1
    assert "NET_RAW" in legacy.stderr
    assert pod.own_rules("nft") == [] and pod.own_rules("legacy") == []


def test_nft_needs_only_net_admin(pod: Pod) -> None:
    result = _without_caps(pod, "-net_raw", "--iptables-mode=nft")
    assert result.returncode == 0, result.stderr
    assert len(pod.own_rules("nft")) > 15


def test_tproxy_policy_routing_is_installed_and_removed(pod: Pod, v6_flavour: Flavour) -> None:
    mode = v6_flavour.mode
    flags = [*DEFAULT, "-m", "TPROXY", *INBOUND_ALL, "--dual-stack", *v6_flavour.flags]
    pod.init(*flags)
    pod.init(*flags)  # a re-run must not duplicate the policy rule
    for ip_family in ("-4", "-6"):
        policy = pod.run("ip", ip_family, "rule").stdout
        assert policy.count("fwmark 0x539 lookup 133") == 1, policy
        assert "local" in pod.run("ip", ip_family, "route", "show", "table", "133").stdout
    for family in (4, 6):
        assert any("-j TPROXY" in rule for rule in pod.own_rules(mode, family))
    pod.init("--cleanup-only", *v6_flavour.flags)
    assert "lookup 133" not in pod.run("ip", "rule").stdout
    assert pod.own_rules(mode, 4) == [] and pod.own_rules(mode, 6) == []


def test_dns_capture(pods: tuple[Pod, Pod], v6_flavour: Flavour) -> None:
    """DNS to the resolv.conf servers goes to the agent's 15053; the agent's own does not."""
    a, b = pods
    dns = ["--redirect-dns", f"--dns-servers={B_V4},{B_V6}", "--dual-stack"]
    a.init(*DEFAULT, *INBOUND_ALL, *dns, *v6_flavour.flags)
    a_agent, b_agent = a.start_agent(), b.start_agent()
    for server in (B_V4, B_V6):
        # An app's query is answered by the agent on 15053, inside the pod.
        assert a.connect(server, 53, udp=True)["ok"]
        assert [e["port"] for e in a_agent.events()] == [15053], server
        assert b_agent.events() == []
        # The agent itself (uid 1337) reaches the real server.
        assert a.connect(server, 53, uid=1337, gid=1337, udp=True)["ok"]
        assert [e["port"] for e in b_agent.events()] == [53], server
    # A server that is not in the list is not captured (no --capture-all-dns).
    assert a.connect(B_V4_EXTRA, 53, udp=True)["ok"]
    assert [e["port"] for e in b_agent.events()] == [53]
    assert a_agent.events() == []
