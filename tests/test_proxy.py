"""PROXY protocol headers: exact bytes from the HAProxy spec, and the usage errors."""

from __future__ import annotations

import socket

import pytest

from check_smtp_posture.smtp.proxy import ProxySpec, connection_endpoints, proxy_header

# the v2 signature, spelled out from proxy-protocol.txt section 2.2
SIG = bytes([0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A])


def test_v1_tcp4():
    assert (proxy_header(1, "TCP4", "192.0.2.10", "198.51.100.25", 56324, 25)
            == b"PROXY TCP4 192.0.2.10 198.51.100.25 56324 25\r\n")


def test_v1_tcp6_uses_compressed_form():
    assert (proxy_header("v1", "tcp6", "2001:db8:0:0::1", "[2001:db8::25]", 1, 587)
            == b"PROXY TCP6 2001:db8::1 2001:db8::25 1 587\r\n")


def test_v1_unknown():
    assert proxy_header(1, "UNKNOWN") == b"PROXY UNKNOWN\r\n"


def test_v1_longest_header_fits_107_bytes():
    full = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    header = proxy_header(1, "TCP6", full, full, 65535, 65535)
    assert len(header) == 104 <= 107


def test_v2_tcp4():
    expected = (SIG
                + b"\x21"               # version 2, command PROXY
                + b"\x11"               # AF_INET, STREAM
                + b"\x00\x0c"           # 12 bytes of addresses follow
                + bytes([192, 0, 2, 10])
                + bytes([198, 51, 100, 25])
                + bytes([0xDC, 0x04])   # 56324
                + bytes([0x00, 0x19]))  # 25
    header = proxy_header(2, "TCP4", "192.0.2.10", "198.51.100.25", 56324, "25")
    assert header == expected
    assert len(header) == 16 + 12


def test_v2_tcp6():
    src = bytes([0x20, 0x01, 0x0D, 0xB8] + [0] * 11 + [0x01])
    dst = bytes([0x20, 0x01, 0x0D, 0xB8] + [0] * 11 + [0x25])
    expected = (SIG + b"\x21" + b"\x21" + b"\x00\x24"    # AF_INET6/STREAM, 36 bytes
                + src + dst + b"\x01\xbb" + b"\x02\x4b")  # 443, 587
    assert proxy_header(2, "TCP6", "2001:db8::1", "2001:db8::25", 443, 587) == expected


def test_v2_unknown_is_unspec_with_no_addresses():
    assert proxy_header(2, "UNKNOWN") == SIG + b"\x21\x00\x00\x00"


@pytest.mark.parametrize("args, message", [
    ((1, "TCP4", "2001:db8::1", "192.0.2.1", 1, 25), "is IPv6, but family TCP4 needs IPv4"),
    ((2, "TCP6", "2001:db8::1", "192.0.2.1", 1, 25), "is IPv4, but family TCP6 needs IPv6"),
    ((1, "TCP4", "192.0.2.1", "192.0.2.2", 65536, 25), "source port must be a number"),
    ((2, "TCP4", "192.0.2.1", "192.0.2.2", 1, -1), "destination port must be a number"),
    ((1, "TCP4", "192.0.2.1", "192.0.2.2", "1x", 25), "source port must be a number"),
    ((1, "TCP4", "192.0.2.1", "192.0.2.2", True, 25), "source port must be a number"),
    ((1, "UDP4", "192.0.2.1", "192.0.2.2", 1, 25), "family must be TCP4 or TCP6"),
    ((3, "TCP4", "192.0.2.1", "192.0.2.2", 1, 25), "version must be 1 or 2"),
    ((1, "TCP4", "mx1.posture.test", "192.0.2.2", 1, 25), "is not an IP address"),
    ((1, "TCP4", "192.0.2.1", None, 1, 25), "needs a destination address"),
])
def test_errors_are_one_line_value_errors(args, message):
    with pytest.raises(ValueError, match=message) as info:
        proxy_header(*args)
    assert "\n" not in str(info.value)


def test_proxy_spec_validates_what_the_user_gave():
    ProxySpec(1, None, "192.0.2.1", None, None, 25)
    ProxySpec(2, "TCP6", None, "2001:db8::1", "1234", None)
    with pytest.raises(ValueError, match="family TCP4 needs IPv4"):
        ProxySpec(1, "TCP4", "::1")
    with pytest.raises(ValueError, match="source port"):
        ProxySpec(2, "TCP4", src_port=70000)
    with pytest.raises(ValueError, match="different families"):
        ProxySpec(1, None, "192.0.2.1", "2001:db8::1")


@pytest.fixture(params=[("127.0.27.201", "127.0.27.202"), ("::1", "::1")],
                ids=["ipv4", "ipv6"])
def connected_pair(request):
    server_addr, client_addr = request.param
    family = socket.AF_INET6 if ":" in server_addr else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.bind((server_addr, 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname()[:2], timeout=2,
                                      source_address=(client_addr, 0))
    accepted, _ = server.accept()
    yield client, server.getsockname()[1]
    for s in (accepted, client, server):
        s.close()


def test_connection_defaults_real_addresses_and_the_connection_family(connected_pair):
    client, port = connected_pair
    local, peer = client.getsockname(), client.getpeername()
    real = connection_endpoints(local, peer)
    sport = local[1]
    assert (real.src_addr, real.dst_addr, real.src_port, real.dst_port) == (
        local[0], peer[0], sport, port)
    family = "TCP6" if ":" in peer[0] else "TCP4"
    assert real.family == family
    assert (ProxySpec(1).header(local, peer, 25)
            == f"PROXY {family} {local[0]} {peer[0]} {sport} 25\r\n".encode())


@pytest.mark.parametrize("connected_pair", [("127.0.27.201", "127.0.27.202")], indirect=True,
                         ids=["ipv4"])
def test_v2_with_a_given_source_on_an_ipv4_connection(connected_pair):
    client, _port = connected_pair
    local, peer = client.getsockname(), client.getpeername()
    assert (ProxySpec(2, src_addr="192.0.2.7", dst_port=2525).header(local, peer, 25)
            == SIG + b"\x21\x11\x00\x0c" + bytes([192, 0, 2, 7, 127, 0, 27, 201])
            + local[1].to_bytes(2, "big") + (2525).to_bytes(2, "big"))
    with pytest.raises(ValueError, match="TCP6 header on a TCP4 connection"):
        ProxySpec(1, family="TCP6").header(local, peer, 25)
