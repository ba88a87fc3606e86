"""The HTTP client every outgoing connector call goes through (webhook, status patch, pull import), and the
rule that keeps an API key from aiming it at internal services.

The rule is applied where the connection is made, to the address actually connected to: the host is resolved
here, every address it resolves to is checked with `ipaddress`, and the socket is opened to a checked address
(the Host header and the TLS server name stay the configured host's). So no spelling of an address
(`2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`, `0`, `[::ffff:127.0.0.1]`, a name that resolves to
10.0.0.5) and no DNS answer that changes between a check and the connection can reach loopback, private,
link-local, multicast, reserved or unspecified addresses. Redirects are never followed, and proxies from the
environment are not used (a proxy would connect on our behalf, past the check).

`PORTAL_CONNECTORS_ALLOW_PRIVATE_NETWORKS=1` turns the rule off, for an on-premise upstream on the same network.

It is built from httpcore's public parts: a network backend that wraps httpcore's own anyio backend, under an
httpcore connection pool, behind an httpx transport.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import httpcore
import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# IPv6 prefixes that carry an IPv4 address in their last 32 bits and are translated to it on the way
# (RFC 6052 NAT64, the well-known and the local-use prefix): the IPv4 address is what gets reached.
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))


class RefusedAddress(httpcore.ConnectError):
    """The host resolves only to addresses connectors may not call. A ConnectError, so the connectors report
    it like any connection that failed (the worker retries and, in the end, gives the delivery up)."""


def internal(address: Address) -> bool:
    """Whether an address is one a tenant must not make our servers call: loopback, private, link-local,
    multicast, reserved, unspecified, shared (CGNAT) or otherwise not globally reachable, including an IPv4
    address dressed as IPv6 (mapped, 6to4, Teredo, NAT64)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is None and any(address in prefix for prefix in _NAT64):
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and internal(embedded):
            return True
    return (address.is_loopback or address.is_private or address.is_link_local or address.is_multicast
            or address.is_reserved or address.is_unspecified or not address.is_global)


async def resolve(host: str, port: int) -> list[Address]:
    """Every address the host resolves to, in the resolver's order (an address literal resolves to itself,
    whatever spelling the C library accepts for it)."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%")[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself and connects only to addresses that pass `internal`, never to the name."""

    def __init__(self, allow_private_networks: bool = False) -> None:
        self.allow_private_networks = allow_private_networks
        self._backend = httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} took longer than {timeout} s") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        usable = addresses if self.allow_private_networks else [a for a in addresses if not internal(a)]
        if not usable:
            shown = ", ".join(str(a) for a in addresses[:4])
            raise RefusedAddress(f"{host} is {shown}: a loopback, private, link-local or otherwise internal "
                                 f"address, which connectors do not call")
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in usable:
            try:
                return await self._backend.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("connectors do not connect to unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


# httpcore's exceptions as the httpx ones the connectors catch; the most specific class wins.
_EXCEPTIONS: dict[type[Exception], type[httpx.HTTPError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout, httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout, httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.TimeoutException: httpx.TimeoutException, httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError, httpcore.WriteError: httpx.WriteError,
    httpcore.NetworkError: httpx.NetworkError, httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError, httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol, httpcore.ProxyError: httpx.ProxyError,
}


@contextmanager
def _as_httpx_errors() -> Iterator[None]:
    try:
        yield
    except Exception as exc:
        for kind in type(exc).__mro__:
            if kind in _EXCEPTIONS:
                raise _EXCEPTIONS[kind](str(exc)) from exc
        raise


class _ResponseStream(httpx.AsyncByteStream):
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        if hasattr(self._stream, "aclose"):
            await self._stream.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport over an httpcore pool whose connections are made by GuardedBackend."""

    def __init__(self, *, allow_private_networks: bool, max_connections: int | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(), max_connections=max_connections,
            network_backend=GuardedBackend(allow_private_networks))

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port,
                             target=request.url.raw_path),
            headers=request.headers.raw, content=request.stream, extensions=request.extensions)
        with _as_httpx_errors():
            response = await self._pool.handle_async_request(core_request)
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_ResponseStream(response.stream), extensions=response.extensions)

    async def aclose(self) -> None:
        await self._pool.aclose()


def connector_client(*, allow_private_networks: bool, timeout: float = 10.0, max_connections: int | None = None,
                     ssl_context: ssl.SSLContext | None = None) -> httpx.AsyncClient:
    """The client for connectors' upstream calls: guarded connections, no redirects, no proxies."""
    transport = GuardedTransport(allow_private_networks=allow_private_networks, max_connections=max_connections,
                                 ssl_context=ssl_context)
    return httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(timeout), follow_redirects=False,
                             trust_env=False)
