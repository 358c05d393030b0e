"""The network guard: tests can never reach a real model or the internet, loopback works."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from trellis.testing import (
    NetworkBlockedError,
    forbid_network,
    install_network_guard,
    is_network_guard_installed,
    uninstall_network_guard,
)

PUBLIC_IP = ("93.184.216.34", 80)


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"hello from loopback"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def local_http_server() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_guard_is_installed_for_the_whole_session() -> None:
    assert is_network_guard_installed()


def test_provider_keys_are_not_in_the_environment() -> None:
    assert not os.environ.get("OPENAI_API_KEY")
    assert not os.environ.get("ANTHROPIC_API_KEY")


def test_connect_to_public_ip_fails_loudly_and_quickly() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(10)
    started = time.perf_counter()
    try:
        with pytest.raises(NetworkBlockedError) as info:
            sock.connect(PUBLIC_IP)
    finally:
        sock.close()
    assert time.perf_counter() - started < 0.5
    message = str(info.value)
    assert "Trellis tests must never reach a real model or the internet" in message
    assert "93.184.216.34:80" in message
    assert isinstance(info.value, RuntimeError)


def test_connect_ex_to_public_ip_is_blocked() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock,
        pytest.raises(NetworkBlockedError),
    ):
        sock.connect_ex(PUBLIC_IP)


def test_create_connection_to_public_ip_is_blocked() -> None:
    started = time.perf_counter()
    with pytest.raises(NetworkBlockedError, match=re.escape("93.184.216.34:80")):
        socket.create_connection(PUBLIC_IP, timeout=10)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize("host", ["example.com", "api.openai.com", "api.anthropic.com"])
def test_hostname_fails_before_any_dns_lookup(host: str) -> None:
    started = time.perf_counter()
    with pytest.raises(NetworkBlockedError, match=re.escape(host)):
        socket.create_connection((host, 443), timeout=10)
    with pytest.raises(NetworkBlockedError, match=re.escape(host)):
        socket.getaddrinfo(host, 443)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(NetworkBlockedError, match=re.escape(host)):
            sock.connect((host, 443))
    finally:
        sock.close()
    assert time.perf_counter() - started < 0.5


def test_ipv6_public_address_is_blocked() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    try:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        pytest.skip("cannot create an IPv6 socket")
    try:
        with pytest.raises(NetworkBlockedError):
            sock.connect(("2606:2800:220:1:248:1893:25c8:1946", 80, 0, 0))
    finally:
        sock.close()


async def test_asyncio_open_connection_is_blocked() -> None:
    with pytest.raises(NetworkBlockedError):
        await asyncio.wait_for(asyncio.open_connection(*PUBLIC_IP), timeout=5)
    with pytest.raises(NetworkBlockedError):
        await asyncio.wait_for(asyncio.open_connection("example.com", 80), timeout=5)


def test_loopback_http_server_works(local_http_server: int) -> None:
    conn = socket.create_connection(("127.0.0.1", local_http_server), timeout=5)
    with conn:
        conn.sendall(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    assert data.startswith(b"HTTP/1.0 200")
    assert data.endswith(b"hello from loopback")


def test_localhost_name_resolves_and_connects(local_http_server: int) -> None:
    infos = socket.getaddrinfo("localhost", local_http_server, type=socket.SOCK_STREAM)
    assert infos
    with socket.create_connection(("localhost", local_http_server), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert conn.recv(4096).startswith(b"HTTP/1.0 200")


async def test_asyncio_loopback_server_works() -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        writer.write(b"echo:" + line)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\n")
        await writer.drain()
        assert await reader.readline() == b"echo:ping\n"
        writer.close()
        await writer.wait_closed()


def test_unix_socket_is_allowed() -> None:
    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no Unix sockets")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "s.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(path)
            peer, _ = server.accept()
            with peer:
                client.sendall(b"x")
                assert peer.recv(1) == b"x"
        finally:
            client.close()
            server.close()


def test_uninstall_restores_and_forbid_network_reinstalls() -> None:
    guarded = socket.socket.connect
    uninstall_network_guard()
    try:
        assert not is_network_guard_installed()
        assert socket.socket.connect is not guarded
        with forbid_network():
            assert is_network_guard_installed()
            with pytest.raises(NetworkBlockedError):
                socket.create_connection(PUBLIC_IP, timeout=10)
        assert not is_network_guard_installed()
    finally:
        install_network_guard()
    assert is_network_guard_installed()
    # Nested use keeps a guard that was already installed.
    with forbid_network():
        pass
    assert is_network_guard_installed()
    with pytest.raises(NetworkBlockedError):
        socket.create_connection(PUBLIC_IP, timeout=10)


def test_install_is_idempotent() -> None:
    install_network_guard()
    install_network_guard()
    uninstall_network_guard()
    try:
        assert not is_network_guard_installed()
    finally:
        install_network_guard()
