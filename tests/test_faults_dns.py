"""The DNS rows of the fault matrix: each plugin against a hostile DNS server.

Every row is run the way a user runs the plugin, `--dns-server` pointing at the
scripted server of tests/lab/fakedns.py (FAULT_WORLD: one name per misbehaviour),
and must end within -t with the row's exit status and first-line fragment.
Rows whose plugin says something the DNS did not say are marked as defects.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.conftest import run_main
from tests.faultmatrix import AREAS, Fault, check_says, said
from tests.lab import fakedns

EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
#: the runner's promise: the first line is out within -t plus half a second
MARGIN = 0.5
#: what every run gets unless its case says otherwise
TIMEOUT = 3.0
QUERY_TIMEOUT = 0.5
#: the MX hosts the fakes stand for: 127.0.27.1 (fake SMTP), 192.0.2.x (documentation)
MX_SANITY = ("check_mx_sanity", "--allow-private")
DNSBL = ("check_dnsbl", "--no-default-zones", "--zone", "bl-ok.dnsfault.test")
#: refuses relaying, accepts postmaster and the null sender: an open_relay endpoint that is OK
RELAY_SCRIPT = {"RCPT TO:<postmaster@": "250 2.1.5 Ok",
                "RCPT": "554 5.7.1 Relay access denied"}


@dataclass(frozen=True)
class Case:
    row: Fault
    runs: tuple  # one argv per plugin run, the console script first
    timeout: float = TIMEOUT
    query_timeout: float | None = QUERY_TIMEOUT
    tcp: str = ""  # a name the plugin must have asked again over TCP
    probed: bool = False  # check_smtp_phases and check_open_relay reached the MX that resolves
    perf: dict = field(default_factory=dict)  # perfdata every run must show
    defect: str = ""


def _d(domain: str) -> str:
    return f"{domain}.{fakedns.FAULT_DOMAIN}"


CASES = [
    # -- the domain's own MX ------------------------------------------------------------
    Case(Fault("dns-mx-servfail", "DNS",
               "check_mx_sanity, check_smtp_phases -D, check_open_relay -D, check_dnsbl -D",
               "the MX lookup gets SERVFAIL", "CRITICAL", "MX lookup failed: SERVFAIL"),
         ((*MX_SANITY, "-D", _d("servfail")),
          ("check_smtp_phases", "-D", _d("servfail")),
          ("check_open_relay", "-D", _d("servfail")),
          (*DNSBL, "-D", _d("servfail")))),
    Case(Fault("dns-mx-refused", "DNS", "check_mx_sanity",
               "the MX lookup gets REFUSED", "CRITICAL",
               "MX lookup failed: SERVFAIL (REFUSED)"),
         ((*MX_SANITY, "-D", _d("refused")),)),
    Case(Fault("dns-mx-silent", "DNS",
               "check_mx_sanity, check_smtp_phases -D, check_open_relay -D",
               "the DNS server never answers the MX query (--query-timeout 0.5)", "CRITICAL",
               "MX lookup failed: TIMEOUT (no answer within 0.5s)"),
         ((*MX_SANITY, "-D", _d("silent")),
          ("check_smtp_phases", "-D", _d("silent")),
          ("check_open_relay", "-D", _d("silent")))),
    Case(Fault("dns-mx-silent-default-cap", "DNS", "check_mx_sanity",
               "the DNS server never answers, no --query-timeout (-t 2)", "CRITICAL",
               "MX lookup failed: TIMEOUT (no answer within 1.0s)"),
         ((*MX_SANITY, "-D", _d("silent")),), timeout=2.0, query_timeout=None),
    Case(Fault("dns-mx-truncated", "DNS", "check_mx_sanity",
               "the UDP answer to the MX query is truncated (TC), the full one comes over TCP",
               "OK", "truncated.dnsfault.test: 1 MX, 1 address (0 IPv6), FCrDNS ok"),
         ((*MX_SANITY, "-D", _d("truncated")),), tcp=_d("truncated")),
    Case(Fault("dns-mx-truncated-phases", "DNS", "check_smtp_phases -D",
               "the UDP answer to the MX query is truncated (TC), the full one comes over TCP",
               "OK", "smtp.dnsfault.test[127.0.27.1], banner 220"),
         (("check_smtp_phases", "-D", _d("truncated")),), tcp=_d("truncated"), probed=True),
    Case(Fault("dns-mx-truncated-relay", "DNS", "check_open_relay -D",
               "the UDP answer to the MX query is truncated (TC), the full one comes over TCP",
               "OK", "smtp.dnsfault.test[127.0.27.1]: 16 relay probes refused"),
         (("check_open_relay", "-D", _d("truncated")),), tcp=_d("truncated"), probed=True),
    Case(Fault("dns-mx-nxdomain", "DNS", "check_mx_sanity",
               "the domain does not exist (NXDOMAIN): an answer, not a failure", "CRITICAL",
               "nowhere.dnsfault.test does not exist (NXDOMAIN)"),
         ((*MX_SANITY, "-D", _d("nowhere")),)),
    Case(Fault("dns-mx-nodata", "DNS", "check_mx_sanity",
               "no MX records (NODATA), an AAAA record", "WARNING",
               "no MX, implicit MX from address records"),
         ((*MX_SANITY, "-D", _d("nodata")),)),
    Case(Fault("dns-mx-wrong-type", "DNS",
               "check_mx_sanity, check_smtp_phases -D, check_open_relay -D, check_dnsbl -D",
               "the MX query is answered with an A record", "CRITICAL", "MX lookup failed"),
         ((*MX_SANITY, "-D", _d("wrongtype")),
          ("check_smtp_phases", "-D", _d("wrongtype")),
          ("check_open_relay", "-D", _d("wrongtype")),
          (*DNSBL, "-D", _d("wrongtype")))),
    Case(Fault("dns-mx-other-name", "DNS", "check_mx_sanity",
               "the MX query is answered with the MX records of another name", "CRITICAL",
               "MX lookup failed"),
         ((*MX_SANITY, "-D", _d("othername")),)),
    Case(Fault("dns-mx-wrong-id", "DNS", "check_mx_sanity",
               "the reply to the MX query carries another message ID", "CRITICAL",
               "MX lookup failed: TIMEOUT"),
         ((*MX_SANITY, "-D", _d("wrongid")),)),
    Case(Fault("dns-mx-garbage", "DNS", "check_mx_sanity, check_open_relay -D",
               "the reply to the MX query is garbage after a valid-looking header", "CRITICAL",
               "MX lookup failed: TIMEOUT"),
         ((*MX_SANITY, "-D", _d("garbage")),
          ("check_open_relay", "-D", _d("garbage")))),
    # -- the MX hosts' addresses ----------------------------------------------------------
    Case(Fault("dns-mx-host-servfail", "DNS",
               "check_mx_sanity, check_smtp_phases -D, check_open_relay -D, check_dnsbl -D, "
               "check_spf --check-mx",
               "one MX host's address lookups get SERVFAIL, the other MX host resolves",
               "CRITICAL", "servfail-host.dnsfault.test: lookup failed (A: SERVFAIL"),
         ((*MX_SANITY, "-D", _d("mixed")),
          ("check_smtp_phases", "-D", _d("mixed")),
          ("check_open_relay", "-D", _d("mixed")),
          (*DNSBL, "-D", _d("mixed")),
          ("check_spf", "--check-mx", "-D", _d("mixed"))), probed=True),
    Case(Fault("dns-mx-host-a-servfail", "DNS", "check_mx_sanity",
               "the MX host's A lookup gets SERVFAIL, its AAAA lookup answers", "CRITICAL",
               "a-servfail.dnsfault.test: lookup failed (A: SERVFAIL"),
         ((*MX_SANITY, "-D", _d("target-servfail")),), perf={"address_count": "1"}),
    Case(Fault("dns-mx-host-silent", "DNS", "check_mx_sanity, check_smtp_phases -D",
               "the MX host's address lookups are never answered", "CRITICAL",
               "silent-host.dnsfault.test: lookup failed (A: TIMEOUT"),
         ((*MX_SANITY, "-D", _d("target-silent")),
          ("check_smtp_phases", "-D", _d("target-silent")))),
    Case(Fault("dns-host-cname-loop", "DNS", "check_mx_sanity, check_dnsbl -H",
               "the MX target (the -H host) is a CNAME loop", "CRITICAL",
               "loop1.dnsfault.test: lookup failed (A: SERVFAIL (The CNAME chain is too long"),
         ((*MX_SANITY, "-D", _d("target-loop")),
          (*DNSBL, "-H", _d("loop1")))),
    Case(Fault("dns-host-servfail", "DNS", "check_dnsbl -H, check_smtp_phases -H",
               "the -H host's address lookups get SERVFAIL", "CRITICAL",
               "servfail-host.dnsfault.test: lookup failed (A: SERVFAIL"),
         ((*DNSBL, "-H", _d("servfail-host")),
          ("check_smtp_phases", "-H", _d("servfail-host")))),
    # -- reverse DNS ------------------------------------------------------------------------
    Case(Fault("dns-ptr-servfail", "DNS", "check_mx_sanity",
               "the PTR lookup of an MX address gets SERVFAIL: FCrDNS undecided", "OK",
               "FCrDNS undecided"),
         ((*MX_SANITY, "-D", _d("ptr-servfail")),)),
    Case(Fault("dns-ptr-nxdomain", "DNS", "check_mx_sanity",
               "an MX address has no PTR record (NXDOMAIN)", "WARNING",
               "no FCrDNS for 192.0.2.14 (no PTR)"),
         ((*MX_SANITY, "-D", _d("ptr-nxdomain")),)),
    # -- the SPF record ------------------------------------------------------------------
    Case(Fault("dns-txt-servfail", "DNS", "check_spf", "the TXT lookup gets SERVFAIL",
               "CRITICAL", "temperror: DNS failure looking up TXT servfail.dnsfault.test: "
                           "SERVFAIL"),
         (("check_spf", "-D", _d("servfail")),)),
    Case(Fault("dns-txt-refused", "DNS", "check_spf", "the TXT lookup gets REFUSED",
               "CRITICAL", "temperror: DNS failure looking up TXT refused.dnsfault.test: "
                           "SERVFAIL (REFUSED)"),
         (("check_spf", "-D", _d("refused")),)),
    Case(Fault("dns-txt-silent", "DNS", "check_spf",
               "the DNS server never answers the TXT query (--query-timeout 0.5)", "CRITICAL",
               "temperror: DNS failure looking up TXT silent.dnsfault.test: TIMEOUT"),
         (("check_spf", "-D", _d("silent")),)),
    Case(Fault("dns-txt-silent-past-deadline", "DNS", "check_spf",
               "the DNS server never answers, --query-timeout 5 longer than -t 1.5",
               "CRITICAL", "temperror: DNS failure looking up TXT silent.dnsfault.test: "
                           "TIMEOUT"),
         (("check_spf", "-D", _d("silent")),), timeout=1.5, query_timeout=5.0),
    Case(Fault("dns-txt-truncated", "DNS", "check_spf",
               "the UDP answer to the TXT query is truncated (TC), the full one comes over TCP",
               "OK", "truncated.dnsfault.test: policy -all"),
         (("check_spf", "-D", _d("truncated")),), tcp=_d("truncated")),
    Case(Fault("dns-txt-huge", "DNS", "check_spf",
               "41 TXT records, about 4 KB: too long for UDP, asked again over TCP", "OK",
               "huge.dnsfault.test: policy -all"),
         (("check_spf", "-D", _d("huge")),), tcp=_d("huge")),
    Case(Fault("dns-txt-nxdomain", "DNS", "check_spf",
               "the domain does not exist (NXDOMAIN)", "CRITICAL",
               "no SPF record at nowhere.dnsfault.test (NXDOMAIN)"),
         (("check_spf", "-D", _d("nowhere")),)),
    Case(Fault("dns-txt-nodata", "DNS", "check_spf", "no TXT records (NODATA)", "CRITICAL",
               "no SPF record at nodata.dnsfault.test (NODATA)"),
         (("check_spf", "-D", _d("nodata")),)),
    Case(Fault("dns-txt-wrong-type", "DNS", "check_spf --missing ok",
               "the TXT query is answered with an A record", "CRITICAL",
               "temperror: DNS failure looking up TXT wrongtype.dnsfault.test"),
         (("check_spf", "--missing", "ok", "-D", _d("wrongtype")),)),
    Case(Fault("dns-txt-other-name", "DNS", "check_spf",
               "the TXT query is answered with the TXT record of another name", "CRITICAL",
               "temperror: DNS failure looking up TXT othername.dnsfault.test"),
         (("check_spf", "-D", _d("othername")),)),
    Case(Fault("dns-txt-wrong-id", "DNS", "check_spf",
               "the reply to the TXT query carries another message ID", "CRITICAL",
               "temperror: DNS failure looking up TXT wrongid.dnsfault.test: TIMEOUT"),
         (("check_spf", "-D", _d("wrongid")),)),
    Case(Fault("dns-txt-garbage", "DNS", "check_spf",
               "the reply to the TXT query is garbage after a valid-looking header",
               "CRITICAL",
               "temperror: DNS failure looking up TXT garbage.dnsfault.test: TIMEOUT"),
         (("check_spf", "-D", _d("garbage")),)),
    Case(Fault("dns-include-servfail", "DNS", "check_spf",
               "the TXT lookup of an include: target gets SERVFAIL", "CRITICAL",
               "DNS failure looking up TXT servfail.dnsfault.test: SERVFAIL"),
         (("check_spf", "-D", _d("include-servfail")),)),
    Case(Fault("dns-include-silent", "DNS", "check_spf",
               "the TXT lookup of an include: target is never answered", "CRITICAL",
               "DNS failure looking up TXT silent.dnsfault.test: TIMEOUT"),
         (("check_spf", "-D", _d("include-silent")),)),
    Case(Fault("dns-include-cname-loop", "DNS", "check_spf",
               "an include: target is a CNAME loop", "CRITICAL",
               "DNS failure looking up TXT loop1.dnsfault.test"),
         (("check_spf", "-D", _d("include-loop")),)),
    Case(Fault("dns-include-nxdomain", "DNS", "check_spf",
               "an include: target does not exist (NXDOMAIN)", "CRITICAL",
               "nowhere.dnsfault.test has no SPF record (permerror)"),
         (("check_spf", "-D", _d("include-nxdomain")),)),
    # -- blocklist zones -------------------------------------------------------------------
    Case(Fault("dns-zone-servfail", "DNS", "check_dnsbl --ip",
               "the blocklist zone answers SERVFAIL", "OK",
               "no usable zone; 1 zone unusable: bl-servfail.dnsfault.test (SERVFAIL"),
         (("check_dnsbl", "--no-default-zones", "--zone", "bl-servfail.dnsfault.test",
           "--ip", fakedns.LISTED),)),
    Case(Fault("dns-zone-silent", "DNS", "check_dnsbl --ip",
               "the blocklist zone never answers", "OK",
               "no usable zone; 1 zone unusable: bl-silent.dnsfault.test (timed out)"),
         (("check_dnsbl", "--no-default-zones", "--zone", "bl-silent.dnsfault.test",
           "--ip", fakedns.LISTED),)),
    Case(Fault("dns-zone-truncated", "DNS", "check_dnsbl --ip",
               "the zone's UDP answers are truncated (TC), the full ones come over TCP",
               "WARNING", "192.0.2.99 listed on bl-truncated.dnsfault.test (127.0.0.2 "
                          "\"listed by the fake\")"),
         (("check_dnsbl", "--no-default-zones", "--zone", "bl-truncated.dnsfault.test",
           "--ip", fakedns.LISTED),), tcp="99.2.0.192.bl-truncated.dnsfault.test"),
    Case(Fault("dns-zone-wrong-type", "DNS", "check_dnsbl --ip",
               "the zone answers the A query with a TXT record", "OK",
               "1 zone unusable: bl-wrongtype.dnsfault.test"),
         (("check_dnsbl", "--no-default-zones", "--zone", "bl-wrongtype.dnsfault.test",
           "--ip", fakedns.LISTED),)),
    Case(Fault("dns-zone-other-name", "DNS", "check_dnsbl --ip",
               "the zone answers with an A record of another name", "OK",
               "1 zone unusable: bl-othername.dnsfault.test"),
         (("check_dnsbl", "--no-default-zones", "--zone", "bl-othername.dnsfault.test",
           "--ip", fakedns.LISTED),)),
    Case(Fault("dns-zone-garbage", "DNS", "check_dnsbl --ip --strict",
               "the zone answers garbage after a valid-looking header", "WARNING",
               "no usable zone; 1 zone unusable: bl-garbage.dnsfault.test (timed out)"),
         (("check_dnsbl", "--no-default-zones", "--zone", "bl-garbage.dnsfault.test",
           "--strict", "--ip", fakedns.LISTED),)),
]

MATRIX = [case.row for case in CASES]

#: row id -> the whole line a user reads for the fault, for each run (tests.faultmatrix)
SAYS: dict[str, tuple[str, ...]] = {
    "dns-mx-servfail": (
        "MX_SANITY CRITICAL - servfail.dnsfault.test: MX lookup failed: SERVFAIL",
        "SMTP_PHASES CRITICAL - MX lookup failed: SERVFAIL",
        "OPEN_RELAY CRITICAL - MX lookup failed: SERVFAIL",
        "DNSBL CRITICAL - MX lookup failed: SERVFAIL",
    ),
    "dns-mx-refused": (
        "MX_SANITY CRITICAL - refused.dnsfault.test: MX lookup failed: SERVFAIL (REFUSED)",
    ),
    "dns-mx-silent": (
        "MX_SANITY CRITICAL - silent.dnsfault.test: MX lookup failed: TIMEOUT (no answer "
        "within {N}s)",
        "SMTP_PHASES CRITICAL - MX lookup failed: TIMEOUT (no answer within {N}s)",
        "OPEN_RELAY CRITICAL - MX lookup failed: TIMEOUT (no answer within {N}s)",
    ),
    "dns-mx-silent-default-cap": (
        "MX_SANITY CRITICAL - silent.dnsfault.test: MX lookup failed: TIMEOUT (no answer "
        "within {N}s)",
    ),
    "dns-mx-truncated": (
        "MX_SANITY OK - truncated.dnsfault.test: 1 MX, 1 address (0 IPv6), FCrDNS ok",
    ),
    "dns-mx-truncated-phases": (
        "SMTP_PHASES OK - smtp.dnsfault.test[127.0.27.1], banner 220, no STARTTLS, {N}s",
    ),
    "dns-mx-truncated-relay": (
        "OPEN_RELAY OK - smtp.dnsfault.test[127.0.27.1]: 16 relay probes refused, <> to "
        "postmaster accepted, {N}s",
    ),
    "dns-mx-nxdomain": (
        "MX_SANITY CRITICAL - nowhere.dnsfault.test does not exist (NXDOMAIN)",
    ),
    "dns-mx-nodata": (
        "MX_SANITY WARNING - nodata.dnsfault.test: no MX, implicit MX from address records; "
        "no FCrDNS for 2001:db8::25 (no PTR)",
    ),
    "dns-mx-wrong-type": (
        "MX_SANITY CRITICAL - wrongtype.dnsfault.test: MX lookup failed: ERROR (the answer "
        "does not match the question)",
        "SMTP_PHASES CRITICAL - MX lookup failed: ERROR (the answer does not match the "
        "question)",
        "OPEN_RELAY CRITICAL - MX lookup failed: ERROR (the answer does not match the "
        "question)",
        "DNSBL CRITICAL - MX lookup failed: ERROR (the answer does not match the question)",
    ),
    "dns-mx-other-name": (
        "MX_SANITY CRITICAL - othername.dnsfault.test: MX lookup failed: ERROR (the answer "
        "does not match the question)",
    ),
    "dns-mx-wrong-id": (
        "MX_SANITY CRITICAL - wrongid.dnsfault.test: MX lookup failed: TIMEOUT (no answer "
        "within {N}s)",
    ),
    "dns-mx-garbage": (
        "MX_SANITY CRITICAL - garbage.dnsfault.test: MX lookup failed: TIMEOUT (no answer "
        "within {N}s)",
        "OPEN_RELAY CRITICAL - MX lookup failed: TIMEOUT (no answer within {N}s)",
    ),
    "dns-mx-host-servfail": (
        "MX_SANITY CRITICAL - mixed.dnsfault.test: servfail-host.dnsfault.test: lookup "
        "failed (A: SERVFAIL; AAAA: SERVFAIL)",
        "SMTP_PHASES CRITICAL - servfail-host.dnsfault.test: lookup failed (A: SERVFAIL; "
        "AAAA: SERVFAIL)",
        "OPEN_RELAY CRITICAL - servfail-host.dnsfault.test: lookup failed (A: SERVFAIL; "
        "AAAA: SERVFAIL)",
        "DNSBL CRITICAL - 1 address not listed on 1 zone; servfail-host.dnsfault.test: "
        "lookup failed (A: SERVFAIL; AAAA: SERVFAIL)",
        "SPF CRITICAL - mixed.dnsfault.test: check_host(127.0.27.1) = pass (matched "
        "ip4:127.0.27.0/24 in mixed.dnsfault.test) [MX smtp.dnsfault.test]; "
        "servfail-host.dnsfault.test: lookup failed (A: SERVFAIL; AAAA: SERVFAIL)",
    ),
    "dns-mx-host-a-servfail": (
        "MX_SANITY CRITICAL - target-servfail.dnsfault.test: a-servfail.dnsfault.test: "
        "lookup failed (A: SERVFAIL); no FCrDNS for 2001:db8::25 (no PTR)",
    ),
    "dns-mx-host-silent": (
        "MX_SANITY CRITICAL - target-silent.dnsfault.test: silent-host.dnsfault.test: lookup "
        "failed (A: TIMEOUT (no answer within {N}s); AAAA: TIMEOUT (no answer within {N}s))",
        "SMTP_PHASES CRITICAL - silent-host.dnsfault.test: lookup failed (A: TIMEOUT (no "
        "answer within {N}s); AAAA: TIMEOUT (no answer within {N}s))",
    ),
    "dns-host-cname-loop": (
        "MX_SANITY CRITICAL - target-loop.dnsfault.test: loop1.dnsfault.test: lookup failed "
        "(A: SERVFAIL (The CNAME chain is too long.); AAAA: SERVFAIL (The CNAME chain is too "
        "long.))",
        "DNSBL CRITICAL - loop1.dnsfault.test: lookup failed (A: SERVFAIL (The CNAME chain "
        "is too long.); AAAA: SERVFAIL (The CNAME chain is too long.))",
    ),
    "dns-host-servfail": (
        "DNSBL CRITICAL - servfail-host.dnsfault.test: lookup failed (A: SERVFAIL; AAAA: "
        "SERVFAIL)",
        "SMTP_PHASES CRITICAL - servfail-host.dnsfault.test: lookup failed (A: SERVFAIL; "
        "AAAA: SERVFAIL)",
    ),
    "dns-ptr-servfail": (
        "MX_SANITY OK - ptr-servfail.dnsfault.test: 1 MX, 1 address (0 IPv6), FCrDNS "
        "undecided for 192.0.2.11 (PTR lookup SERVFAIL)",
    ),
    "dns-ptr-nxdomain": (
        "MX_SANITY WARNING - ptr-nxdomain.dnsfault.test: no FCrDNS for 192.0.2.14 (no PTR)",
    ),
    "dns-txt-servfail": (
        "SPF CRITICAL - temperror: DNS failure looking up TXT servfail.dnsfault.test: "
        "SERVFAIL",
    ),
    "dns-txt-refused": (
        "SPF CRITICAL - temperror: DNS failure looking up TXT refused.dnsfault.test: "
        "SERVFAIL (REFUSED)",
    ),
    "dns-txt-silent": (
        "SPF CRITICAL - temperror: DNS failure looking up TXT silent.dnsfault.test: TIMEOUT "
        "(no answer within {N}s)",
    ),
    "dns-txt-silent-past-deadline": (
        "SPF CRITICAL - temperror: DNS failure looking up TXT silent.dnsfault.test: TIMEOUT "
        "(no answer within {N}s)",
    ),
    "dns-txt-truncated": (
        "SPF OK - truncated.dnsfault.test: policy -all, 0 DNS lookups",
    ),
    "dns-txt-huge": (
        "SPF OK - huge.dnsfault.test: policy -all, 0 DNS lookups",
    ),
    "dns-txt-nxdomain": (
        "SPF CRITICAL - no SPF record at nowhere.dnsfault.test (NXDOMAIN)",
    ),
    "dns-txt-nodata": (
        "SPF CRITICAL - no SPF record at nodata.dnsfault.test (NODATA)",
    ),
    "dns-txt-wrong-type": (
        "SPF CRITICAL - temperror: DNS failure looking up TXT wrongtype.dnsfault.test: ERROR "
        "(the answer does not match the question)",
    ),
    "dns-txt-other-name": (
        "SPF CRITICAL - temperror: DNS failure looking up TXT othername.dnsfault.test: ERROR "
        "(the answer does not match the question)",
    ),
    "dns-txt-wrong-id": (
        "SPF CRITICAL - temperror: DNS failure looking up TXT wrongid.dnsfault.test: TIMEOUT "
        "(no answer within {N}s)",
    ),
    "dns-txt-garbage": (
        "SPF CRITICAL - temperror: DNS failure looking up TXT garbage.dnsfault.test: TIMEOUT "
        "(no answer within {N}s)",
    ),
    "dns-include-servfail": (
        "SPF CRITICAL - DNS failure looking up TXT servfail.dnsfault.test: SERVFAIL",
    ),
    "dns-include-silent": (
        "SPF CRITICAL - DNS failure looking up TXT silent.dnsfault.test: TIMEOUT (no answer "
        "within {N}s)",
    ),
    "dns-include-cname-loop": (
        "SPF CRITICAL - DNS failure looking up TXT loop1.dnsfault.test: SERVFAIL (The CNAME "
        "chain is too long.)",
    ),
    "dns-include-nxdomain": (
        "SPF CRITICAL - include-nxdomain.dnsfault.test: include:nowhere.dnsfault.test: "
        "nowhere.dnsfault.test has no SPF record (permerror)",
    ),
    "dns-zone-servfail": (
        "DNSBL OK - no usable zone; 1 zone unusable: bl-servfail.dnsfault.test (SERVFAIL)",
    ),
    "dns-zone-silent": (
        "DNSBL OK - no usable zone; 1 zone unusable: bl-silent.dnsfault.test (timed out)",
    ),
    "dns-zone-truncated": (
        "DNSBL WARNING - 192.0.2.99 listed on bl-truncated.dnsfault.test (127.0.0.2 \"listed "
        "by the fake\")",
    ),
    "dns-zone-wrong-type": (
        "DNSBL OK - no usable zone; 1 zone unusable: bl-wrongtype.dnsfault.test (ERROR (the "
        "answer does not match the question))",
    ),
    "dns-zone-other-name": (
        "DNSBL OK - no usable zone; 1 zone unusable: bl-othername.dnsfault.test (ERROR (the "
        "answer does not match the question))",
    ),
    "dns-zone-garbage": (
        "DNSBL WARNING - no usable zone; 1 zone unusable: bl-garbage.dnsfault.test (timed "
        "out)",
    ),
}


@pytest.fixture(scope="module")
def fake_dns():
    with fakedns.FakeDns(fakedns.fault_world()) as server:
        yield server


def _run(argv: tuple, case: Case, dns_server: str, smtp_port: int | None):
    script, *args = argv
    main = importlib.import_module(f"check_smtp_posture.plugins.{script}").main
    args += ["--dns-server", dns_server, "-t", f"{case.timeout:g}"]
    if case.query_timeout is not None:
        args += ["--query-timeout", f"{case.query_timeout:g}"]
    if smtp_port is not None and script in ("check_smtp_phases", "check_open_relay"):
        args += ["-p", smtp_port]
    started = time.monotonic()
    result = run_main(main, args)
    return result, time.monotonic() - started


def _param(case: Case):
    marks = [pytest.mark.xfail(strict=True, reason=case.defect)] if case.defect else []
    return pytest.param(case, id=case.row.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in CASES])
def test_dns_fault(case, fake_dns, fake_smtp):
    probing = any(argv[0] in ("check_smtp_phases", "check_open_relay") for argv in case.runs)
    smtp = fake_smtp(RELAY_SCRIPT) if probing else None
    before = len(fake_dns.queries)
    lines = []
    for argv in case.runs:
        result, elapsed = _run(argv, case, fake_dns.server_arg, smtp.port if smtp else None)
        where = f"{' '.join(argv)}:\n{result.output}"
        assert result.exitcode == EXIT[case.row.state], where
        assert result.first_line.split(" - ", 1)[0].endswith(" " + case.row.state), where
        assert case.row.message in result.first_line, where
        lines.append((argv[0], said(argv[0], result.output)))
        assert elapsed < case.timeout + MARGIN, f"{elapsed:.2f}s: {where}"
        for label, value in case.perf.items():
            assert result.perfdata.get(label) == value, where
    check_says(SAYS, case.row.id, lines)
    if smtp is not None:  # nothing to probe when the MX lookup failed
        assert smtp.wait_ended()
        assert bool(smtp.sessions) == case.probed, smtp.commands
    if case.tcp:  # the fallback really went over TCP
        assert fake_dns.asked(case.tcp, transport="tcp", since=before), fake_dns.queries[before:]


def test_rows_are_well_formed():
    ids = [row.id for row in MATRIX]
    assert len(ids) == len(set(ids))
    for case in CASES:
        assert case.row.area == "DNS" and case.row.area in AREAS
        assert case.row.state in EXIT and case.row.message and case.runs
        assert case.row.id.startswith("dns-")


# -- the fake itself: each rule does what the rows say it does ----------------------------


def _ask(server, name, rdtype, tcp=False):
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return query, dns.query.tcp(query, server.address, port=server.port, timeout=2)
    return query, dns.query.udp(query, server.address, port=server.port, timeout=2)


def test_fake_answers_truncates_and_falls_back_to_tcp(fake_dns):
    _, plain = _ask(fake_dns, _d("mixed"), "MX")
    assert sorted(r.to_text() for r in plain.answer[0]) == [
        "10 smtp.dnsfault.test.", "20 servfail-host.dnsfault.test."]
    for name in (_d("truncated"), _d("huge")):
        _, udp = _ask(fake_dns, name, "TXT")
        assert udp.flags & dns.flags.TC and not udp.answer
        _, tcp = _ask(fake_dns, name, "TXT", tcp=True)
        assert not tcp.flags & dns.flags.TC and tcp.answer
    _, huge = _ask(fake_dns, _d("huge"), "TXT", tcp=True)
    assert len(huge.to_wire()) > 4000


@pytest.mark.parametrize("name, rdtype, rcode, answer", [
    (_d("nowhere"), "MX", "NXDOMAIN", []),
    (_d("nodata"), "MX", "NOERROR", []),
    (_d("servfail"), "TXT", "SERVFAIL", []),
    (_d("refused"), "MX", "REFUSED", []),
    (_d("wrongtype"), "MX", "NOERROR", ["wrongtype.dnsfault.test. 300 IN A 192.0.2.66"]),
    ("99.2.0.192.bl-wrongtype.dnsfault.test", "A", "NOERROR",
     ['99.2.0.192.bl-wrongtype.dnsfault.test. 300 IN TXT "an answer of the wrong type"']),
    (_d("othername"), "TXT", "NOERROR",
     ['not-othername.dnsfault.test. 300 IN TXT "v=spf1 +all"']),
    (_d("loop1"), "A", "NOERROR", ["loop1.dnsfault.test. 300 IN CNAME loop2.dnsfault.test.",
                                   "loop2.dnsfault.test. 300 IN CNAME loop1.dnsfault.test."]),
])
def test_fake_rules_answer_as_scripted(fake_dns, name, rdtype, rcode, answer):
    _, reply = _ask(fake_dns, name, rdtype)
    assert dns.rcode.to_text(reply.rcode()) == rcode
    assert [rrset.to_text() for rrset in reply.answer] == answer


@pytest.mark.parametrize("name", [_d("silent"), _d("wrongid"), _d("garbage")])
def test_fake_gives_no_usable_reply(fake_dns, name):
    import socket

    query = dns.message.make_query(name, "MX")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.5)
        sock.sendto(query.to_wire(), (fake_dns.address, fake_dns.port))
        try:
            wire = sock.recv(65535)
        except socket.timeout:
            assert name == _d("silent")
            return
    assert name != _d("silent")
    if name == _d("wrongid"):
        reply = dns.message.from_wire(wire)
        assert reply.id != query.id and reply.answer
    else:
        assert wire[:2] == query.to_wire()[:2]  # its ID: it looks like the reply
        with pytest.raises(dns.exception.DNSException):
            dns.message.from_wire(wire)
