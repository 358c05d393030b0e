"""Helpers for testing code that uses Trellis: a guard that keeps tests off the network.

Tests of a flow should never reach a real model provider or the internet: they should use
the simulator (``sim:...``), :class:`~trellis.models.function.FunctionModel` or
:class:`~trellis.models.function.TestModel`. :func:`forbid_network` makes an accidental
connection fail at once, loudly, instead of hanging on a timeout or spending money::

    from trellis.testing import forbid_network

    with forbid_network():
        result = flow.run_sync({...}, models={"small": "sim:small"})

Or for a whole pytest session, in ``conftest.py``::

    from trellis.testing import install_network_guard, uninstall_network_guard

    def pytest_configure(config):
        install_network_guard()

    def pytest_unconfigure(config):
        uninstall_network_guard()

The guard patches ``socket.socket.connect``, ``socket.socket.connect_ex``,
``socket.create_connection`` and ``socket.getaddrinfo``. Loopback addresses
(``127.0.0.0/8``, ``::1``, ``localhost``), the unspecified addresses used to bind a local
server (``0.0.0.0``, ``::``) and Unix domain sockets stay allowed, so a test may still
start and talk to a local HTTP server.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = [
    "NetworkBlockedError",
    "forbid_network",
    "install_network_guard",
    "is_network_guard_installed",
    "uninstall_network_guard",
]

_MESSAGE = "Trellis tests must never reach a real model or the internet: attempted connection to"


class NetworkBlockedError(RuntimeError):
    """A test tried to reach a non-loopback address while the network guard was on."""


_lock = threading.Lock()
_originals: dict[str, Any] | None = None


def _host_text(host: Any) -> str | None:
    if host is None:
        return None
    if isinstance(host, bytes | bytearray):
        return bytes(host).decode("ascii", "replace")
    return str(host)


def _is_local_host(host: Any) -> bool:
    """Whether ``host`` (a name or an address, as given to a socket call) stays local."""
    text = _host_text(host)
    if text is None or text == "":
        return True  # getaddrinfo(None, port): the local / passive address
    name = text.strip().strip("[]").rstrip(".").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    name = name.split("%", 1)[0]  # IPv6 zone index
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False  # any other host name would need a DNS lookup: not local
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified


def _describe(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{_host_text(address[0])}:{address[1]}"
    return repr(address)


def _blocked(address: Any) -> NetworkBlockedError:
    return NetworkBlockedError(
        f"{_MESSAGE} {_describe(address)}. Use the simulator ('sim:small'), "
        "tl.FunctionModel or tl.TestModel instead of a real provider; only loopback "
        "addresses and Unix sockets are allowed."
    )


def _check_address(family: int, address: Any) -> None:
    unix = getattr(socket, "AF_UNIX", None)
    if unix is not None and family == unix:
        return
    if isinstance(address, str | bytes | bytearray):
        return  # a filesystem path (Unix socket) or an abstract socket name
    if isinstance(address, tuple) and address and _is_local_host(address[0]):
        return
    raise _blocked(address)


def install_network_guard() -> None:
    """Block connections to non-loopback addresses until :func:`uninstall_network_guard`.

    Idempotent: installing twice keeps one guard.
    """
    global _originals
    with _lock:
        if _originals is not None:
            return
        originals: dict[str, Any] = {
            "connect": socket.socket.connect,
            "connect_ex": socket.socket.connect_ex,
            "create_connection": socket.create_connection,
            "getaddrinfo": socket.getaddrinfo,
        }
        real_connect: Callable[..., Any] = originals["connect"]
        real_connect_ex: Callable[..., Any] = originals["connect_ex"]
        real_create_connection: Callable[..., Any] = originals["create_connection"]
        real_getaddrinfo: Callable[..., Any] = originals["getaddrinfo"]

        def guarded_connect(self: socket.socket, address: Any, /) -> None:
            _check_address(self.family, address)
            real_connect(self, address)

        def guarded_connect_ex(self: socket.socket, address: Any, /) -> int:
            _check_address(self.family, address)
            result: int = real_connect_ex(self, address)
            return result

        def guarded_create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
            _check_address(socket.AF_INET, address)
            sock: socket.socket = real_create_connection(address, *args, **kwargs)
            return sock

        def guarded_getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if not _is_local_host(host):
                raise _blocked((_host_text(host), port))
            return real_getaddrinfo(host, port, *args, **kwargs)

        setattr(socket.socket, "connect", guarded_connect)  # noqa: B010
        setattr(socket.socket, "connect_ex", guarded_connect_ex)  # noqa: B010
        setattr(socket, "create_connection", guarded_create_connection)  # noqa: B010
        setattr(socket, "getaddrinfo", guarded_getaddrinfo)  # noqa: B010
        _originals = originals


def uninstall_network_guard() -> None:
    """Restore the socket functions patched by :func:`install_network_guard` (if any)."""
    global _originals
    with _lock:
        originals = _originals
        if originals is None:
            return
        setattr(socket.socket, "connect", originals["connect"])  # noqa: B010
        setattr(socket.socket, "connect_ex", originals["connect_ex"])  # noqa: B010
        setattr(socket, "create_connection", originals["create_connection"])  # noqa: B010
        setattr(socket, "getaddrinfo", originals["getaddrinfo"])  # noqa: B010
        _originals = None


def is_network_guard_installed() -> bool:
    """Whether the guard is currently installed."""
    return _originals is not None


@contextmanager
def forbid_network() -> Iterator[None]:
    """Block non-loopback connections inside the ``with`` block.

    If a guard was already installed (e.g. for the whole test session), it stays
    installed on exit.
    """
    already = is_network_guard_installed()
    install_network_guard()
    try:
        yield
    finally:
        if not already:
            uninstall_network_guard()
