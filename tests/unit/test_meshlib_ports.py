"""meshlib.ports: the sockets our HTTP servers listen on."""

from __future__ import annotations

import asyncio
import socket

import pytest
from leaks import open_fds

from meshlib.ports import free_port, tcp_server_socket


def test_free_port_can_be_bound() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_accepted_connections_get_tcp_nodelay(host: str) -> None:
    """Without IPPROTO_TCP asyncio leaves Nagle on: answers then wait for a delayed ACK."""

    async def scenario() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=tcp_server_socket(host, 0))
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection(host, port)
        try:
            return await asyncio.wait_for(seen, 5)
        finally:
            writer.close()
            server.close()
            await server.wait_closed()

    assert asyncio.run(scenario()) == 1


def test_a_taken_port_raises_and_closes_the_socket() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        before = open_fds()
        with pytest.raises(OSError):
            tcp_server_socket("127.0.0.1", port)
        assert open_fds() == before
