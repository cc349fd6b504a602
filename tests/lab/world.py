"""The lab's fixed world: the default mail domain, its servers and addresses.

`make demo` and the lab tests share this picture. Address plan (loopback only):

  127.0.25.53:53   the lab's authoritative DNS (NSD): the only NSD of the test
                   suite, shared by concurrent sessions (sharedlock.SharedDns,
                   fixture `lab_dns`); serves every zone in ZONES
  127.0.25.1:25    mx1.posture.test, Postfix instance "mx1"
  127.0.25.2:25    mx2.posture.test, Postfix instance "mx2"
  127.0.25.3-.49   more lab Postfix/Dovecot endpoints as issues need them
  127.0.25.60      Carbon (tests/lab/carbon.py), fed by the lab Icinga's GraphiteWriter
  127.0.25.61      InfluxDB (tests/lab/influx.py), fed by the lab Icinga's InfluxdbWriter
  127.0.27.0/24    scripted misbehaving SMTP servers (tests/lab/fakesmtp.py), the
                   phases.test MX host (.1); .54/.55 a silent and a refusing DNS server
  127.0.28.0/24    addresses named by the check_mx_sanity and check_dnsbl zones
                   (mxlab.py, dnsbllab.py); .55 the DNSBL tests' forwarder (no answer
                   for timeout.bl.lab.test), .98/.99 silent DNS sockets;
                   .56/.57 the DNSBL benchmark's own NSD and forwarder (not tests)
  127.0.29.0/24    addresses named by the check_spf zones (spflab.py); .54 a silent
                   DNS socket, .55 the SPF tests' forwarder (no answer for slow.spf.test)

sts.test: the check_mta_sts domains (mtastslab.py), whose policy hosts are the lab
nginx on 127.0.25.80:443 (nginx.py); nothing listens on 127.0.25.81:443.

loop.test, lossy.test, junky.test, monitor.test: the round-trip lab (roundtriplab.py),
its MX hosts the lab Postfix on 127.0.25.13-.16 and its mailbox the lab Dovecot (.3).

dkim.test: check_dkim's selectors, one per case (dkimlab.py).
dmarclab (a lab top-level domain, so a DMARC tree walk ends in a zone the lab serves):
check_dmarc's records, one name per case (dmarclab.py); its report destinations' MX is
the lab Postfix on 127.0.25.21 (endpoint dmarcreports).

dane.test (DNSSEC-signed) and its unsigned child unsigned.dane.test: danelab.py; the
validating resolver that trusts dane.test listens on 127.0.25.54 (unbound.py).

Reverse zones: 25.0.127.in-addr.arpa (here), 28.0.127.in-addr.arpa,
28.10.in-addr.arpa and 2001:db8:28::/64 (mxlab.py), 29.0.127.in-addr.arpa (spflab.py).

One NSD serves all test zones. To add zones, put them in a data module (or
here) and add that module's dict to ZONES below; never start another NSD in a
test. Where a test needs what NSD does not do (a zone that never answers,
latency), put a tests/lab/dnsdelay.DelayingDns on a free port in front of the
shared NSD. Only benchmarks (tests/lab/bench_*.py) start NSDs of their own.

Never 127.0.0.1:25: a system MTA may own it.
"""

from __future__ import annotations

from tests.lab.danelab import dane_zones
from tests.lab.dkimlab import DKIM_ZONES
from tests.lab.dmarclab import DMARC_ZONES
from tests.lab.dnsbllab import DNSBL_ZONES
from tests.lab.mtastslab import MTASTS_ZONES
from tests.lab.mxlab import MX_ZONES
from tests.lab.phaseslab import PHASES_ZONES
from tests.lab.roundtriplab import ROUNDTRIP_ZONES
from tests.lab.spflab import SPF_ZONES
from tests.lab.verdictlab import VERDICT_ZONES

LAB_DOMAIN = "posture.test"
DNS_ADDRESS = "127.0.25.53"
DNS_PORT = 53
DNS_SERVER_ARG = f"{DNS_ADDRESS}:{DNS_PORT}"

#: 16 MX of one domain, on the lab Postfix's mx1 and mx2 (the output size test)
SIZE_DOMAIN = "size.posture.test"
SIZE_MX = [(f"mx{n:02d}.{SIZE_DOMAIN}", "127.0.25.1" if n % 2 else "127.0.25.2")
           for n in range(1, 17)]
SIZE_RECORDS = "\n".join(
    f"        size      MX {n * 10} {name}.\n        {name}. A {address}"
    for n, (name, address) in enumerate(SIZE_MX, 1))

MX1 = ("mx1.posture.test", "127.0.25.1")
MX2 = ("mx2.posture.test", "127.0.25.2")

#: the posture.test world: origin -> zone body (records only; LabDns adds SOA/NS)
POSTURE_ZONES: dict[str, str] = {
    LAB_DOMAIN: f"""
        @        MX 10 mx1
        @        MX 20 mx2
        @        TXT "v=spf1 ip4:127.0.25.0/24 mx -all"
        mx1      A  {MX1[1]}
        mx2      A  {MX2[1]}
        mail     A  {MX1[1]}
        ; more lab Postfix endpoints (tests/lab/postfix.py ENDPOINTS)
        submit     A  127.0.25.3
        authfirst  A  127.0.25.4
        notls      A  127.0.25.5
        openrelay  A  127.0.25.6
        percentrelay A 127.0.25.7
        routerelay A  127.0.25.8
        ; the Graphite test's domain (tests/test_graphite.py), whose mx1 it moves
        graph      MX 10 mx1.graph
        graph      MX 20 mx2.graph
        graph      TXT "v=spf1 ip4:127.0.25.0/24 mx -all"
        mx1.graph  A  127.0.25.1
        mx2.graph  A  127.0.25.2
        ; 16 MX for the output size test (tests/test_output_size.py)
        size       TXT "v=spf1 ip4:127.0.25.0/24 -all"
""" + SIZE_RECORDS + "\n",
    "25.0.127.in-addr.arpa": f"""
        1   PTR {MX1[0]}.
        2   PTR {MX2[0]}.
        3   PTR submit.posture.test.
        4   PTR authfirst.posture.test.
        5   PTR notls.posture.test.
        6   PTR openrelay.posture.test.
        7   PTR percentrelay.posture.test.
        8   PTR routerelay.posture.test.
        ; the round-trip lab (roundtriplab.py)
        13  PTR mx1.loop.test.
        14  PTR mx2.loop.test.
        15  PTR drop.loop.test.
        16  PTR mx.monitor.test.
        """,
    # A test blocklist: lists 127.0.0.2 (the conventional test entry) only.
    "dnsbl.posture.test": """
        2.0.0.127  A   127.0.0.2
        2.0.0.127  TXT "lab test entry"
        """,
}


def _union(*parts: dict[str, str]) -> dict[str, str]:
    """The parts' zones as one dict, refusing an origin defined twice.

    An origin under another part's origin is refused too: the inner zone would
    hide the outer one's records below it (NSD answers from the closest zone).
    """
    zones: dict[str, str] = {}
    owner: dict[str, int] = {}
    for index, part in enumerate(parts):
        for origin, body in part.items():
            name = origin.lower().rstrip(".")
            if name in owner:
                raise ValueError(f"lab zone {name} is defined twice")
            for other, other_index in owner.items():
                if other_index != index and (name.endswith("." + other)
                                             or other.endswith("." + name)):
                    raise ValueError(f"lab zone {name} overlaps lab zone {other}")
            owner[name] = index
            zones[origin] = body
    return zones


#: every zone the lab DNS serves (the first one is its readiness probe)
ZONES: dict[str, str] = _union(POSTURE_ZONES, MX_ZONES, DNSBL_ZONES, SPF_ZONES, PHASES_ZONES,
                               VERDICT_ZONES, dane_zones(), MTASTS_ZONES, ROUNDTRIP_ZONES,
                               DKIM_ZONES, DMARC_ZONES)


def lab_dns(workdir=None):
    """An unstarted LabDns serving the world's zones."""
    from tests.lab.authdns import LabDns

    dns = LabDns(DNS_ADDRESS, DNS_PORT, workdir)
    for origin, body in ZONES.items():
        dns.add_zone(origin, body)
    return dns
