"""Checks on the upstream URLs written in connector settings, when the connector is configured.

These catch at configuration time what can be seen in the text: a URL that is not http(s), credentials or a
fragment in it, a placeholder anywhere before the path (`http://{invoice.number}:8450/` would let an event's
values choose the host or port), and a host that is an internal address in any spelling the C library
accepts (`2130706433`, `0x7f000001`, `0177.0.0.1`, `127.1`, `0`, fullwidth dots, `[::ffff:127.0.0.1]`) or a
name reserved for local use. The rule that holds whatever the text says is applied at connect time, on the
resolved address (portal.connectors.network); this only gives an administrator the error early, at the
field's path.
"""

from __future__ import annotations

import ipaddress
import socket
import unicodedata
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationInfo

from portal.connectors.network import internal
from portal.schemas.validation import refusal

LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
LOCAL_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa")
# What IDNA (and so httpx) reads as a dot in a host name.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def authority_end(url: str) -> int:
    """Where the scheme, host and port of an absolute URL end (the start of its path, query or fragment)."""
    start = url.find("://")
    start = start + 3 if start >= 0 else 0
    ends = [i for i in (url.find(c, start) for c in "/?#") if i >= 0]
    return min(ends) if ends else len(url)


def check_url(url: str, *, allow_private_networks: bool = False, templated: bool = False) -> str:
    """The URL as given, or ValueError saying what is wrong. With `templated`, {placeholders} may appear in
    the path and query, never in the scheme, host or port."""
    if "{" in url[:authority_end(url)] or "}" in url[:authority_end(url)]:
        raise ValueError("no {placeholders} in the scheme, host or port: only in the path and query")
    if not templated and ("{" in url or "}" in url):
        raise ValueError("no {placeholders} here")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("an absolute http:// or https:// URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("no credentials in the URL; put them in headers (e.g. Authorization)")
    if parts.fragment:
        raise ValueError("no #fragment")
    if port == 0:
        raise ValueError("port 0 is not a port")
    if not allow_private_networks and host_is_internal(parts.hostname):
        raise ValueError(f"{parts.hostname} is a loopback, private or link-local address; our worker will not "
                         f"call it")
    return url


def host_is_internal(host: str) -> bool:
    """Whether a host, as written, names an internal address or a local-only name. A public name that
    resolves to an internal address passes here and is refused when connecting."""
    host = unicodedata.normalize("NFKC", host).translate(_DOTS).strip("[]").rstrip(".").lower()
    if host in LOCAL_NAMES or host.endswith(LOCAL_SUFFIXES):
        return True
    try:
        return internal(ipaddress.ip_address(host.split("%")[0]))
    except ValueError:
        pass
    try:
        # The C library's reading of an IPv4 literal: decimal, hexadecimal, octal and short forms.
        return internal(ipaddress.IPv4Address(socket.inet_aton(host)))
    except OSError:
        return False


def allow_private(info: ValidationInfo) -> bool:
    context: Any = info.context or {}
    return bool(context.get("allow_private_networks", False))


def upstream_url(url: str, info: ValidationInfo) -> str:
    """A pydantic after-validator: a URL without placeholders."""
    try:
        return check_url(url, allow_private_networks=allow_private(info))
    except ValueError as exc:
        raise refusal(str(exc)) from None


def templated_url(url: str, info: ValidationInfo) -> str:
    """A pydantic after-validator: a URL that may have {placeholders} in its path and query."""
    try:
        return check_url(url, allow_private_networks=allow_private(info), templated=True)
    except ValueError as exc:
        raise refusal(str(exc)) from None
