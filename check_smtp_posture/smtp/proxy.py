"""PROXY protocol headers (HAProxy's proxy-protocol.txt, version 1 text and 2 binary).

A check can send one of these first on a connection to an MTA that sits
behind a load balancer (Postfix `smtpd_upstream_proxy_protocol`) to test how
it answers. Defaults follow the Circonus SMTP check's proxy options:

- family TCP4 (TCP6 only when the addresses in use are IPv6 and no family
  was asked for, since a TCP4 header cannot carry them);
- source address and port: the connection's real local address and port;
- destination address: the connection's real peer address; destination
  port: the target port.

Every validation error is a ValueError with a one-line message meant for the
user (the plugin reports it as a usage error, exit 3).
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Union

#: the 12-byte version 2 signature
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_VERSION_PROXY = 0x21       # version 2 (high nibble), command PROXY (low nibble)
V2_FAMILY = {"TCP4": 0x11,    # AF_INET  (0x1_) + STREAM (0x_1)
             "TCP6": 0x21,    # AF_INET6 (0x2_) + STREAM (0x_1)
             "UNKNOWN": 0x00}  # AF_UNSPEC + UNSPEC: receiver uses the real endpoints
FAMILIES = ("TCP4", "TCP6", "UNKNOWN")
V1_MAX_LENGTH = 107

Port = Union[int, str]


@dataclass(frozen=True)
class Endpoints:
    """The real addresses of a connected socket, as a PROXY header would carry them."""

    family: str        # 'TCP4' or 'TCP6'
    src_addr: str      # our (local) address
    src_port: int
    dst_addr: str      # the server's address
    dst_port: int


def parse_version(version: Union[int, str]) -> int:
    text = str(version).strip().lower().lstrip("v")
    if text not in ("1", "2"):
        raise ValueError(f"PROXY protocol version must be 1 or 2, not {version!r}")
    return int(text)


def parse_family(family: str) -> str:
    norm = str(family).strip().upper()
    if norm not in FAMILIES:
        raise ValueError(f"PROXY family must be TCP4 or TCP6, not {family!r}")
    return norm


def parse_port(port: Port, what: str = "port") -> int:
    if isinstance(port, bool):
        raise ValueError(f"PROXY {what} must be a number from 0 to 65535, not {port!r}")
    if isinstance(port, str):
        text = port.strip()
        if not text.isdigit() or not text.isascii():
            raise ValueError(f"PROXY {what} must be a number from 0 to 65535, not {port!r}")
        port = int(text)
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"PROXY {what} must be a number from 0 to 65535, not {port!r}")
    return port


def parse_address(addr: str, family: str, what: str = "address"):
    """An ipaddress object of the right version for `family` ('TCP4'/'TCP6')."""
    text = str(addr).strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"PROXY {what} {addr!r} is not an IP address") from None
    want = 4 if family == "TCP4" else 6
    if ip.version != want:
        raise ValueError(f"PROXY {what} {addr!r} is IPv{ip.version}, "
                         f"but family {family} needs IPv{want}")
    return ip


def proxy_header(version: Union[int, str], family: str,
                 src_addr: str | None = None, dst_addr: str | None = None,
                 src_port: Port | None = None, dst_port: Port | None = None) -> bytes:
    """The PROXY header bytes to send before anything else on the connection.

    `version` 1 (text) or 2 (binary); `family` 'TCP4', 'TCP6' or 'UNKNOWN'
    (v1 'PROXY UNKNOWN'; v2 AF_UNSPEC, both telling the receiver to use the
    real endpoints; addresses and ports are then ignored).
    """
    version = parse_version(version)
    family = parse_family(family)
    if family == "UNKNOWN":
        return b"PROXY UNKNOWN\r\n" if version == 1 else _v2(V2_FAMILY["UNKNOWN"], b"")
    missing = [name for name, value in (("source address", src_addr),
                                        ("destination address", dst_addr),
                                        ("source port", src_port),
                                        ("destination port", dst_port)) if value is None]
    if missing:
        raise ValueError(f"PROXY {family} header needs a {', '.join(missing)}")
    src = parse_address(src_addr, family, "source address")
    dst = parse_address(dst_addr, family, "destination address")
    sport = parse_port(src_port, "source port")
    dport = parse_port(dst_port, "destination port")
    if version == 1:
        line = f"PROXY {family} {src.compressed} {dst.compressed} {sport} {dport}\r\n"
        data = line.encode("ascii")
        assert len(data) <= V1_MAX_LENGTH
        return data
    body = src.packed + dst.packed + struct.pack("!HH", sport, dport)
    return _v2(V2_FAMILY[family], body)


def _v2(family_byte: int, body: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", V2_VERSION_PROXY, family_byte, len(body)) + body


def check_proxy_options(version: Union[int, str] = 1, family: str | None = None,
                        src_addr: str | None = None, dst_addr: str | None = None,
                        src_port: Port | None = None,
                        dst_port: Port | None = None) -> None:
    """Validate user options before connecting (ValueError on the first problem).

    Whatever is None will be filled in from the connection later.
    """
    parse_version(version)
    fam = parse_family(family) if family is not None else None
    if fam != "UNKNOWN":
        if fam is None and src_addr is not None:
            fam = _family_of(src_addr)
        for addr, what in ((src_addr, "source address"), (dst_addr, "destination address")):
            if addr is not None:
                parse_address(addr, fam or _family_of(addr), what)
    for port, what in ((src_port, "source port"), (dst_port, "destination port")):
        if port is not None:
            parse_port(port, what)


def _family_of(addr: str) -> str:
    text = str(addr).strip().strip("[]")
    try:
        return "TCP6" if ipaddress.ip_address(text).version == 6 else "TCP4"
    except ValueError:
        raise ValueError(f"PROXY address {addr!r} is not an IP address") from None


def default_addresses(sock: socket.socket) -> Endpoints:
    """The real local and peer addresses of a connected TCP socket.

    An IPv4-mapped IPv6 connection (::ffff:a.b.c.d) is reported as TCP4.
    """
    local = sock.getsockname()
    peer = sock.getpeername()
    src = ipaddress.ip_address(local[0].split("%", 1)[0])
    dst = ipaddress.ip_address(peer[0].split("%", 1)[0])
    if src.version == 6 and dst.version == 6 and src.ipv4_mapped and dst.ipv4_mapped:
        src, dst = src.ipv4_mapped, dst.ipv4_mapped
    family = "TCP6" if dst.version == 6 else "TCP4"
    return Endpoints(family, str(src), int(local[1]), str(dst), int(peer[1]))


def header_for_connection(sock: socket.socket, *, version: Union[int, str] = 1,
                          family: str | None = None,
                          src_addr: str | None = None, dst_addr: str | None = None,
                          src_port: Port | None = None, dst_port: Port | None = None,
                          target_port: int | None = None) -> bytes:
    """proxy_header() with the Circonus defaults filled in from `sock`.

    `target_port` is the port the check connected to (default: the peer's port).
    """
    real = default_addresses(sock)
    if family is None:
        family = _family_of(src_addr) if src_addr is not None else (
            _family_of(dst_addr) if dst_addr is not None else real.family)
        # Circonus defaults to TCP4; keep it whenever the addresses allow
    return proxy_header(
        version, family,
        src_addr if src_addr is not None else real.src_addr,
        dst_addr if dst_addr is not None else real.dst_addr,
        src_port if src_port is not None else real.src_port,
        dst_port if dst_port is not None else (target_port if target_port is not None
                                               else real.dst_port),
    )
