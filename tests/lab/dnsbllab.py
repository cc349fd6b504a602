"""Lab zones for check_dnsbl: a target domain and test blocklists, one per case.

The shared lab NSD (tests/lab/world.ZONES, 127.0.25.53:53) serves them; the
plugin asks it through the forwarder of tests/lab/dnsdelay.py on a free port of
127.0.28.55 (`dnsbl_forwarder`), which never answers the zone
`timeout.bl.lab.test` (the zone that times out). The benchmark
(tests/lab/bench_dnsbl.py, not a test) runs an NSD of its own for its 30 zones
on 127.0.28.56, behind a forwarder on 127.0.28.57 that adds latency
(`running_lab`).

    zone                  behaviour
    txt.bl.lab.test       lists 127.0.28.21 and 2001:db8:28::21, with TXT reasons
    second.bl.lab.test    lists 127.0.28.21 (127.0.0.4), no TXT
    clean.bl.lab.test     lists only the RFC 5782 test entry 127.0.0.2
    error.bl.lab.test     answers 127.255.255.254 to everything (declare it as error)
    broken.bl.lab.test    lists everything, 127.0.0.1 too
    parked.bl.lab.test    answers 198.51.100.7 to everything (a parked domain's wildcard)
    timeout.bl.lab.test   never answers (dropped by the forwarder)
    refused.bl.lab.test   not served: NSD answers REFUSED
    dbl.lab.test          domain list: lists dnsbl-target.lab.test
"""

from __future__ import annotations

from contextlib import contextmanager

TARGET_DOMAIN = "dnsbl-target.lab.test"
FORWARDER_ADDRESS = "127.0.28.55"
BENCH_NSD_ADDRESS = "127.0.28.56"
BENCH_FORWARDER_ADDRESS = "127.0.28.57"

V6_LISTED = "2001:db8:28::21"
V6_NIBBLES = "1.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.2.0.0.8.b.d.0.1.0.0.2"

DNSBL_ZONES: dict[str, str] = {
    TARGET_DOMAIN: f"""
        @           MX 10 mx1
        @           MX 20 mx2
        mx1         A    127.0.28.21
        mx1         AAAA {V6_LISTED}
        mx2         A    127.0.28.22
        nullmx      MX 0 .
        implicit    A    127.0.28.23
        half        MX 10 mx2
        half        MX 20 nowhere
        """,
    "txt.bl.lab.test": f"""
        2.0.0.127       A   127.0.0.2
        2.0.0.127       TXT "RFC 5782 test entry"
        21.28.0.127     A   127.0.0.2
        21.28.0.127     TXT "Listed by the lab: spam trap hits | see http://bl.lab.test/21"
        {V6_NIBBLES}    A   127.0.0.3
        {V6_NIBBLES}    TXT "lab IPv6 listing"
        """,
    "second.bl.lab.test": """
        2.0.0.127       A   127.0.0.2
        21.28.0.127     A   127.0.0.4
        """,
    "clean.bl.lab.test": """
        2.0.0.127       A   127.0.0.2
        """,
    "error.bl.lab.test": """
        *               A   127.255.255.254
        *               TXT "Error: open resolver"
        """,
    "broken.bl.lab.test": """
        *               A   127.0.0.2
        """,
    "parked.bl.lab.test": """
        *               A   198.51.100.7
        """,
    "timeout.bl.lab.test": """
        *               A   127.0.0.2
        """,
    "dbl.lab.test": f"""
        test                    A   127.0.1.2
        {TARGET_DOMAIN}         A   127.0.1.2
        {TARGET_DOMAIN}         TXT "lab domain listing"
        """,
}

TIMEOUT_ZONE = "timeout.bl.lab.test"

#: the benchmark: 30 zones, one of which lists one of the 4 addresses
BENCH_ADDRESSES = ("127.0.28.31", "127.0.28.32", "127.0.28.33", "127.0.28.34")
BENCH_ZONE_NAMES = tuple(f"bench{n:02d}.bl.lab.test" for n in range(1, 31))


def bench_zones() -> dict[str, str]:
    zones = {name: "2.0.0.127 A 127.0.0.2\n" for name in BENCH_ZONE_NAMES}
    zones[BENCH_ZONE_NAMES[6]] += '31.28.0.127 A 127.0.0.2\n31.28.0.127 TXT "bench listing"\n'
    return zones


def forwarder(address: str, upstream: tuple[str, int], *, delay: float = 0.0, drop=()):
    """An unstarted DelayingDns on a free port of `address`, in front of `upstream`."""
    from tests.lab.authdns import free_udp_port
    from tests.lab.dnsdelay import DelayingDns

    return DelayingDns((address, free_udp_port(address)), upstream, delay=delay, drop=drop)


def dnsbl_forwarder(upstream: tuple[str, int]):
    """The tests' forwarder in front of the shared lab NSD: drops the timeout zone."""
    return forwarder(FORWARDER_ADDRESS, upstream, drop=(TIMEOUT_ZONE,))


@contextmanager
def running_lab(zones: dict[str, str], nsd_address: str, forwarder_address: str, *,
                delay: float = 0.0, drop=()):
    """The benchmark's own NSD serving `zones` and the forwarder in front; yields the forwarder.

    For benchmarks only: the tests use the shared lab NSD (`dnsbl_forwarder`).
    """
    from tests.lab.authdns import LabDns, free_udp_port

    nsd = LabDns(nsd_address, free_udp_port(nsd_address))
    for origin, body in zones.items():
        nsd.add_zone(origin, body)
    nsd.start()
    try:
        with forwarder(forwarder_address, (nsd.address, nsd.port), delay=delay,
                       drop=drop) as started:
            yield started
    finally:
        nsd.stop()
