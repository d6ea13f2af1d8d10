"""Local TCP ports: picking a free one (tests, benchmarks, local runs) and binding a server's."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` (IPv4) right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tcp_server_socket(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket for an asyncio/uvicorn server on ``host:port``.

    The protocol must be given as IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections
    only when their ``proto`` says TCP, and without it every answer written in two parts
    (headers, then body) waits for the client's delayed ACK: ~40 ms per request instead of ~1 ms.
    The caller maps ``OSError`` (port taken, address missing) to an error of its own.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock
