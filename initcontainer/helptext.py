"""What ``remora init --help`` says around the flags: the description, examples, exit codes.

Kept apart from the flag table (:mod:`initcontainer.flags`) and the parsers
(:mod:`initcontainer.cmdline`): prose that changes for readers, not for the code.
"""

PROG = "remora init"
USAGE = f"{PROG} [validate] [flags]"

DESCRIPTION = """\
Redirect a pod's TCP traffic to its Envoy sidecar (the init container of every meshed pod).

Installs nat (and, for TPROXY, mangle) rules so that inbound connections land on Envoy's
inbound port (15006) and outbound ones on its outbound port (15001), while Envoy's own
traffic (uid/gid 1337) and the app's loopback traffic are left alone. Flags and
environment variables are those of istio-iptables. Each IP family is applied in one
transaction; re-running replaces our rules and never touches other tools' rules; any
failure exits non-zero with none of our rules left behind.

Run as root with the capabilities NET_ADMIN and NET_RAW (nft needs only NET_ADMIN).
"""

EPILOG = """\
examples:
  # What the injector runs in every pod (Istio's defaults):
  remora init -p 15001 -z 15006 -u 1337 -m REDIRECT -i '*' -x "" -b '*' -d 15090,15021,15020

  # Show the iptables-restore input without changing anything:
  remora init --dry-run -i '*' -b '*' -d 15090,15021,15020

  # Capture only inbound port 8080, skip a database port and a CIDR outbound:
  remora init -b 8080 -i '*' -o 5432 -x 10.96.0.0/12

  # Dual-stack, with DNS capture and a proof that capture works:
  remora init -i '*' -b '*' --dual-stack --redirect-dns --validate

  # Remove everything this command installed (a no-op when repeated):
  remora init --cleanup-only

  # Only check capture (e.g. when a CNI plugin installed the rules):
  remora init validate -i '*'

backends:
  iptables-restore (default) reads iptables-{nft,legacy}-save, picks the flavour that holds
    the node's rules (override with --iptables-mode) and writes one transaction per family.
  python-iptables writes through libiptc: IPv4 and iptables-legacy only, because of an
    upstream IPv6 bug (ldx/python-iptables #244) that lets IPv6 traffic bypass capture.

exit codes: 0 ok, 1 capture failed (the message says how to fix it), 2 bad flags,
  126 rules installed but validation showed traffic is not captured.
"""
