"""Fault matrix rows of check_dane: DNSSEC failures, hostile endpoints, bad arguments.

DNS rows run through the lab's real validating resolver (unbound) to the signed
dane.test of the lab NSD (tests/lab/danelab.py), or against a resolver that does
not validate or does not answer; TLS rows against the lab Postfix's DANE endpoints
and a scripted server that breaks the handshake. Each must end within -t with the
row's exit status and first-line fragment, never a traceback.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from check_smtp_posture.plugins.check_dane import main
from tests.conftest import run_main
from tests.faultmatrix import Fault, check_says, said
from tests.lab import danelab

EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
TIMEOUT = 4.0
MARGIN = 0.5
#: a loopback address where no DNS server listens (ICMP port unreachable: refused)
SINK_DNS = "127.0.25.250:53"


@dataclass(frozen=True)
class Case:
    row: Fault
    argv: tuple
    lab: bool = True  # needs the lab resolver and Postfix


def _lab(*argv) -> tuple:
    return (*argv, "--dns-server", danelab.RESOLVER_ARG, "--secure-name", danelab.SECURE_PROBE,
            "--bogus-name", danelab.BOGUS_PROBE, "--helo-name", "monitor.posture.test")


PLUGIN = "check_dane"
CASES = [
    Case(Fault("dane-resolver-not-validating", "DNS", PLUGIN,
               "the DNS server does not validate DNSSEC (no AD flag on a signed name)",
               "UNKNOWN", "the resolver does not validate DNSSEC: dane.test came back "
                          "without the AD flag"),
         ("-D", "ee.dane.test", "--dns-server", "127.0.25.53", "--secure-name", "dane.test",
          "--bogus-name", danelab.BOGUS_PROBE)),
    Case(Fault("dane-resolver-answers-bogus", "DNS", PLUGIN,
               "the resolver answers a name whose signatures are broken", "UNKNOWN",
               "whose signatures are broken, was answered"),
         ("-D", "ee.dane.test", "--dns-server", danelab.RESOLVER_ARG, "--secure-name",
          "dane.test", "--bogus-name", "ee.dane.test")),
    Case(Fault("dane-resolver-down", "DNS", PLUGIN,
               "no resolver listens at --dns-server", "CRITICAL",
               "resolver check: lookup of dane.test failed:"),
         ("-D", "ee.dane.test", "--dns-server", SINK_DNS, "--secure-name", "dane.test",
          "--query-timeout", "1"), lab=False),
    Case(Fault("dane-tlsa-bogus", "DNS", PLUGIN,
               "the TLSA RRset's signature is broken (the resolver says DNSSEC Bogus)",
               "CRITICAL", "failed: SERVFAIL (DNSSEC Bogus (6)"),
         _lab("-D", "bogus.dane.test")),
    Case(Fault("dane-tlsa-servfail", "DNS", PLUGIN,
               "the TLSA lookup gets SERVFAIL (a lame delegation)", "CRITICAL",
               "TLSA lookup of _25._tcp.mx.servfail.dane.test failed: SERVFAIL: DANE "
               "senders will defer mail"),
         _lab("-D", "servfail.dane.test")),
    Case(Fault("dane-mx-unsigned", "DNS", PLUGIN,
               "the MX records are not signed (an insecure delegation)", "OK",
               "DANE not applicable: the MX records of unsigned.dane.test are not signed"),
         _lab("-D", "unsigned.dane.test")),
    Case(Fault("dane-starttls-missing", "TLS", PLUGIN,
               "TLSA records published, the MX offers no STARTTLS", "CRITICAL",
               "TLSA published but STARTTLS not offered"),
         _lab("-D", "notls.dane.test")),
    Case(Fault("dane-connect-refused", "TLS", PLUGIN,
               "TLSA records published, the MX refuses the connection", "CRITICAL",
               "connect: connection refused (TLSA published: DANE senders will defer mail)"),
         _lab("-D", "refused.dane.test")),
    Case(Fault("dane-key-changed", "TLS", PLUGIN,
               "the certificate's key changed, the TLSA record did not", "CRITICAL",
               "RSA certificate matches none of 1 usable TLSA record"),
         _lab("-D", "rolled.dane.test")),
    Case(Fault("dane-second-key-unmatched", "TLS", PLUGIN,
               "an RSA and an ECDSA certificate, a TLSA record for the ECDSA key only",
               "CRITICAL", "RSA certificate matches none of 1 usable TLSA record"),
         _lab("-D", "dual.dane.test")),
    Case(Fault("dane-hostname-address", "arguments", PLUGIN,
               "-H given an address (TLSA records belong to names)", "UNKNOWN",
               "-H/--hostname needs a host name, not the address 192.0.2.1: TLSA records "
               "belong to names"),
         ("-H", "192.0.2.1"), lab=False),
    Case(Fault("dane-no-target", "arguments", PLUGIN, "neither -D nor -H", "UNKNOWN",
               "-D/--domain or -H/--hostname is required"),
         ("--missing", "ok"), lab=False),
    Case(Fault("dane-bad-secure-name", "arguments", PLUGIN,
               "--secure-name is not a domain name", "UNKNOWN",
               "argument --secure-name: bad domain name 'a..b'"),
         ("-D", "ee.dane.test", "--secure-name", "a..b"), lab=False),
]
MATRIX = [case.row for case in CASES]

#: row id -> the whole line a user reads for the fault, for each run (tests.faultmatrix)
SAYS: dict[str, tuple[str, ...]] = {
    "dane-resolver-not-validating": (
        "DANE UNKNOWN - the resolver does not validate DNSSEC: dane.test came back without "
        "the AD flag (use --dns-server with a validating resolver)",
    ),
    "dane-resolver-answers-bogus": (
        "DANE UNKNOWN - the resolver does not validate DNSSEC: ee.dane.test, whose "
        "signatures are broken, was answered (NODATA) (use --dns-server with a validating "
        "resolver)",
    ),
    "dane-resolver-down": (
        "DANE CRITICAL - resolver check: lookup of dane.test failed: TIMEOUT (no answer "
        "within {N}s)",
    ),
    "dane-tlsa-bogus": (
        "DANE CRITICAL - TLSA lookup of _25._tcp.mx.bogus.dane.test failed: SERVFAIL (DNSSEC "
        "Bogus (6){DETAIL}): DANE senders will defer mail",
    ),
    "dane-tlsa-servfail": (
        "DANE CRITICAL - TLSA lookup of _25._tcp.mx.servfail.dane.test failed: SERVFAIL: "
        "DANE senders will defer mail",
    ),
    "dane-mx-unsigned": (
        "DANE OK - DANE not applicable: the MX records of unsigned.dane.test are not signed "
        "(insecure)",
    ),
    "dane-starttls-missing": (
        "DANE CRITICAL - mx.notls.dane.test[127.0.25.11]: TLSA published but STARTTLS not "
        "offered: DANE senders will defer mail",
    ),
    "dane-connect-refused": (
        "DANE CRITICAL - mx.refused.dane.test[127.0.25.12] connect: connection refused (TLSA "
        "published: DANE senders will defer mail)",
    ),
    "dane-key-changed": (
        "DANE CRITICAL - mx.rolled.dane.test[127.0.25.9]: RSA certificate matches none of 1 "
        "usable TLSA record",
    ),
    "dane-second-key-unmatched": (
        "DANE CRITICAL - mx.dual.dane.test[127.0.25.10]: RSA certificate matches none of 1 "
        "usable TLSA record",
    ),
    "dane-hostname-address": (
        "check_dane: error: -H/--hostname needs a host name, not the address 192.0.2.1: TLSA "
        "records belong to names",
    ),
    "dane-no-target": (
        "check_dane: error: -D/--domain or -H/--hostname is required",
    ),
    "dane-bad-secure-name": (
        "check_dane: error: argument --secure-name: bad domain name 'a..b'",
    ),
}


@pytest.fixture
def dane_lab(request):
    if request.param:
        request.getfixturevalue("lab_resolver")
        request.getfixturevalue("lab_postfix")


@pytest.mark.parametrize("case, dane_lab", [
    pytest.param(c, c.lab, id=c.row.id, marks=[pytest.mark.lab] if c.lab else [])
    for c in CASES], indirect=["dane_lab"])
def test_row(case, dane_lab):
    started = time.monotonic()
    run = run_main(main, [*case.argv, "-t", str(TIMEOUT)])
    elapsed = time.monotonic() - started
    assert "Traceback" not in run.output
    assert run.exitcode == EXIT[case.row.state], run.output
    if case.row.area == "arguments":
        assert run.first_line.startswith("usage: check_dane"), run.output
        assert f"check_dane: error: {case.row.message}" in run.output, run.output
    else:
        assert run.first_line.startswith(f"DANE {case.row.state} - "), run.output
        assert case.row.message in run.first_line, run.output
    check_says(SAYS, case.row.id, [(PLUGIN, said(PLUGIN, run.output))])
    assert elapsed < TIMEOUT + MARGIN
