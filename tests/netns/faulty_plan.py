"""Install a plan whose IPv6 half ends with a rule the kernel rejects, via the real backend.

Run by test_capture_netns.py inside a test namespace: IPv4 is applied first and succeeds,
IPv6 fails, and the backend must then remove the IPv4 rules too. Prints the error.
"""

from __future__ import annotations

import sys

from initcontainer.backend_restore import RestoreBackend
from initcontainer.config import CaptureConfig, CidrSelection, PortSelection
from initcontainer.errors import CaptureError
from initcontainer.plan import CapturePlan, build_plan
from initcontainer.rules import Rule

UNKNOWN_GROUP = Rule(
    "nat", "ISTIO_OUTPUT", ("-m", "owner", "--gid-owner", "no-such-group-remora", "-j", "RETURN")
)


def main() -> int:
    config = CaptureConfig(
        ipv6=True,
        outbound_cidrs=CidrSelection(everything=True),
        inbound_ports=PortSelection(everything=True),
    )
    plan = build_plan(config)
    faulty = CapturePlan(ipv4=plan.ipv4, ipv6=(*(plan.ipv6 or ()), UNKNOWN_GROUP))
    try:
        RestoreBackend("nft" if sys.argv[1] == "nft" else "legacy").install(faulty)
    except CaptureError as error:
        print(f"refused: {error.message}")
        return 0
    print("installed")
    return 1


if __name__ == "__main__":
    sys.exit(main())
