"""PROXY protocol headers (HAProxy's proxy-protocol.txt, version 1 text and 2 binary).

A check can send one of these first on a connection to an MTA that sits
behind a load balancer (Postfix `smtpd_upstream_proxy_protocol`) to test how
it answers. `ProxySpec` holds what the user asked; what is left open comes
from the connection, as the Circonus SMTP check documents for its options:

- family: the connection's (TCP4, or TCP6 for an IPv6 connection), unless
  asked for or implied by a given address;
- source address and port: the connection's real local address and port;
- destination address: the connection's real peer address; destination
  port: the target port.

Every validation error is a ValueError with a one-line message meant for the
user (the plugin reports it as a usage error, exit 3).
"""

from __future__ import annotations

import ipaddress
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


def describe_header(header: bytes) -> str:
    """One readable line for a header made here: the v1 line itself; v2 decoded."""
    if header.startswith(b"PROXY "):
        return header.decode("ascii", "replace").rstrip("\r\n")
    family_byte = header[13] if len(header) > 13 else None
    family = next((name for name, byte in V2_FAMILY.items() if byte == family_byte), "?")
    body = header[16:]
    size = {"TCP4": 4, "TCP6": 16}.get(family)
    if size is None or len(body) < 2 * size + 4:
        return f"PROXY v2 {family} ({len(header)} bytes, binary)"
    src = ipaddress.ip_address(body[:size])
    dst = ipaddress.ip_address(body[size:2 * size])
    sport, dport = struct.unpack("!HH", body[2 * size:2 * size + 4])
    if family == "TCP6":
        return (f"PROXY v2 TCP6 [{src}]:{sport} -> [{dst}]:{dport} "
                f"({len(header)} bytes, binary)")
    return f"PROXY v2 TCP4 {src}:{sport} -> {dst}:{dport} ({len(header)} bytes, binary)"


def _v2(family_byte: int, body: bytes) -> bytes:
    return V2_SIGNATURE + struct.pack("!BBH", V2_VERSION_PROXY, family_byte, len(body)) + body


@dataclass(frozen=True)
class ProxySpec:
    """What the user asked of the PROXY header; the rest comes from the connection.

    Validated when made (ValueError with a one-line message: a usage error).
    `header()` fills in what is None: the family from the connection (TCP6
    for an IPv6 connection), the connection's real local address and port as
    the source, its real peer address as the destination and the target port
    as the destination port.
    """

    version: int = 1
    family: str | None = None
    src_addr: str | None = None
    dst_addr: str | None = None
    src_port: Port | None = None
    dst_port: Port | None = None

    def __post_init__(self):
        object.__setattr__(self, "version", parse_version(self.version))
        fam = parse_family(self.family) if self.family is not None else None
        object.__setattr__(self, "family", fam)
        if fam != "UNKNOWN":
            for addr, what in ((self.src_addr, "source address"),
                               (self.dst_addr, "destination address")):
                if addr is not None:
                    parse_address(addr, fam or _family_of(addr), what)
            given = [_family_of(a) for a in (self.src_addr, self.dst_addr) if a is not None]
            if fam is None and len(set(given)) > 1:
                raise ValueError("PROXY source and destination addresses are of different "
                                 "families")
        for port, what in ((self.src_port, "source port"),
                           (self.dst_port, "destination port")):
            if port is not None:
                parse_port(port, what)

    def header(self, local: tuple, peer: tuple, target_port: int | None = None) -> bytes:
        """The header for a connection from `local` to `peer` (socket address tuples)."""
        real = connection_endpoints(local, peer)
        family = self.family or next(
            (_family_of(a) for a in (self.src_addr, self.dst_addr) if a is not None),
            real.family)
        src, dst = self.src_addr, self.dst_addr
        if src is None or dst is None:
            if family != "UNKNOWN" and family != real.family:
                raise ValueError(f"a PROXY {family} header on a {real.family} connection "
                                 "needs both addresses given")
            src = real.src_addr if src is None else src
            dst = real.dst_addr if dst is None else dst
        return proxy_header(
            self.version, family, src, dst,
            real.src_port if self.src_port is None else self.src_port,
            self.dst_port if self.dst_port is not None else (
                target_port if target_port is not None else real.dst_port))


def _family_of(addr: str) -> str:
    text = str(addr).strip().strip("[]")
    try:
        return "TCP6" if ipaddress.ip_address(text).version == 6 else "TCP4"
    except ValueError:
        raise ValueError(f"PROXY address {addr!r} is not an IP address") from None


def connection_endpoints(local: tuple, peer: tuple) -> Endpoints:
    """The real addresses of a connection from its socket address tuples.

    An IPv4-mapped IPv6 connection (::ffff:a.b.c.d) is reported as TCP4.
    """
    src = ipaddress.ip_address(local[0].split("%", 1)[0])
    dst = ipaddress.ip_address(peer[0].split("%", 1)[0])
    if src.version == 6 and dst.version == 6 and src.ipv4_mapped and dst.ipv4_mapped:
        src, dst = src.ipv4_mapped, dst.ipv4_mapped
    family = "TCP6" if dst.version == 6 else "TCP4"
    return Endpoints(family, str(src), int(local[1]), str(dst), int(peer[1]))
