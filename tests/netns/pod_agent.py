"""A stand-in for a pod's processes, run inside a test network namespace.

``serve PORT...``: listen on every port (IPv4 and IPv6), print ``ready``, then one JSON line
per accepted connection: the port it arrived on, the family, the peer and the original
destination (``SO_ORIGINAL_DST``: for a connection that was not redirected, simply the
address and port it was sent to; null when conntrack has no entry). It plays Envoy
(15001, 15006) and the app's servers at once, so a test can see where a connection landed.

``serve ... --udp PORT``: also receive datagrams on PORT (DNS), one JSON line each.

``connect HOST PORT [--uid N] [--gid N] [--udp]``: connect (or send one datagram) as that uid/gid (set in this child, before
the socket exists, as an app container would run), print a JSON result, exit 0 on success.

Run only by tests/netns, through ``ip netns exec``; never sends traffic anywhere else.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import socket
import sys

from initcontainer.probe import original_destination


def serve(ports: list[int], udp_ports: list[int]) -> None:
    selector = selectors.DefaultSelector()
    for kind, port_list in ((socket.SOCK_STREAM, ports), (socket.SOCK_DGRAM, udp_ports)):
        for port in port_list:
            for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
                listener = socket.socket(family, kind)
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                listener.bind((host, port))
                if kind == socket.SOCK_STREAM:
                    listener.listen(64)
                selector.register(listener, selectors.EVENT_READ, port)
    print("ready", flush=True)
    while True:
        for key, _ in selector.select():
            ready = key.fileobj
            assert isinstance(ready, socket.socket)
            if ready.type == socket.SOCK_DGRAM:
                _, sender = ready.recvfrom(512)
                event = {"port": key.data, "proto": "udp", "peer": sender[0]}
                print(json.dumps(event), flush=True)
                continue
            conn, peer = ready.accept()
            with conn:
                try:
                    orig: list[object] | None = list(original_destination(conn))
                except OSError:  # not NATed: there is no original destination
                    orig = None
                event = {
                    "port": key.data,
                    "family": 4 if conn.family == socket.AF_INET else 6,
                    "peer": peer[0],
                    "orig_dst": orig,
                }
            print(json.dumps(event), flush=True)


def connect(
    host: str, port: int, *, uid: int | None, gid: int | None, timeout: float, udp: bool
) -> int:
    if gid is not None:
        os.setgroups([])
        os.setgid(gid)
    if uid is not None:
        os.setuid(uid)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if udp:  # one datagram, as a DNS query would be
        with socket.socket(family, socket.SOCK_DGRAM) as client:
            client.sendto(b"probe", (host, port))
        print(json.dumps({"ok": True}), flush=True)
        return 0
    with socket.socket(family, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        try:
            client.connect((host, port))
        except OSError as error:
            print(json.dumps({"ok": False, "error": str(error)}), flush=True)
            return 1
        print(json.dumps({"ok": True, "local": client.getsockname()[0]}), flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser("serve")
    serve_parser.add_argument("ports", type=int, nargs="+")
    serve_parser.add_argument("--udp", type=int, action="append", default=[])
    connect_parser = sub.add_parser("connect")
    connect_parser.add_argument("host")
    connect_parser.add_argument("port", type=int)
    connect_parser.add_argument("--uid", type=int)
    connect_parser.add_argument("--gid", type=int)
    connect_parser.add_argument("--timeout", type=float, default=3.0)
    connect_parser.add_argument("--udp", action="store_true")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args.ports, args.udp)
        return 0
    return connect(
        args.host, args.port, uid=args.uid, gid=args.gid, timeout=args.timeout, udp=args.udp
    )


if __name__ == "__main__":
    sys.exit(main())
