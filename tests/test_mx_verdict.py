"""The MX verdict table of check_smtp_posture(7), through every plugin that resolves MX.

One lab domain per case (tests/lab/verdictlab.py), each run through
check_smtp_phases -D, check_mx_sanity, check_dnsbl -D and check_spf --check-mx
against the real lab NSD and Postfix: the same exit status and the same phrase
in the first line from all four. And one wording of a failed DNS answer, whichever
library meets it.
"""

from __future__ import annotations

from dataclasses import replace

import nagiosplugin
import pytest
from nagiosplugin.state import Critical, Ok, Warn

from check_smtp_posture import dane, dnsbl, targets
from check_smtp_posture.dnslookup import SERVFAIL, DnsAnswer, ValidatorProof
from check_smtp_posture.nagios.contexts import MxContext
from check_smtp_posture.plugins import check_dnsbl, check_mx_sanity, check_smtp_phases, check_spf
from check_smtp_posture.spf.adapter import DnsClientLookup
from tests.lab.verdictlab import UNSERVED, VERDICT_DOMAIN


def resolution(kind, *problems, detail=""):
    good = targets.Target(10, "mx1.example", ("192.0.2.1",))
    bad = [targets.Target(20, f"mx{n}.example", problem=p, detail=d)
           for n, (p, d) in enumerate(problems, 2)]
    return targets.Resolution("d.example", kind, (good, *bad), detail=detail)


@pytest.mark.parametrize("res, options, state, hint", [
    (resolution(targets.MX), {}, Ok, None),
    (resolution(targets.NULL), {}, Ok, "null MX (RFC 7505): d.example accepts no mail"),
    (resolution(targets.NULL), {"expect_mail": True}, Critical,
     "null MX (RFC 7505): d.example accepts no mail"),
    (resolution(targets.NXDOMAIN), {"unreachable": "warning"}, Critical,
     "d.example does not exist (NXDOMAIN)"),
    (resolution(targets.FAILED, detail="TIMEOUT (x)"), {}, Critical,
     "MX lookup failed: TIMEOUT (x)"),
    (resolution(targets.FAILED, detail="SERVFAIL"), {"unreachable": "warning"}, Warn,
     "MX lookup failed: SERVFAIL"),
    # the worst first, every problem named
    (resolution(targets.IMPLICIT, (targets.LOOKUP_FAILED, "AAAA: SERVFAIL")),
     {"unreachable": "warning"}, Warn,
     "no MX, implicit MX from address records; mx2.example: lookup failed (AAAA: SERVFAIL)"),
    (resolution(targets.MX, (targets.LOOKUP_FAILED, "A: TIMEOUT"), (targets.ALIAS, "to x")),
     {"unreachable": "warning"}, Critical,
     "mx3.example: CNAME (to x); mx2.example: lookup failed (A: TIMEOUT)"),
])
def test_the_verdict_of_each_case(res, options, state, hint):
    result = MxContext(**options).evaluate(nagiosplugin.Metric("mx", res, context="mx"), None)
    assert (result.state, result.hint) == (state, hint)


# plugin name, main, arguments that keep its own findings out of the way
PLUGINS = [
    ("SMTP_PHASES", check_smtp_phases.main, ["--no-starttls"]),
    ("MX_SANITY", check_mx_sanity.main, ["--allow-private"]),
    ("DNSBL", check_dnsbl.main, ["--no-default-zones", "--zone", "dnsbl.posture.test"]),
    ("SPF", check_spf.main, ["--check-mx"]),
]

# domain (under verdict.test unless absolute), extra arguments, exit status, phrase
CASES = [
    ("good", [], 0, None),
    ("null", [], 0, f"null MX (RFC 7505): null.{VERDICT_DOMAIN} accepts no mail"),
    ("mixed", [], 2, "null MX mixed with other MX records"),
    ("implicit", [], 1, "no MX, implicit MX from address records"),
    ("nohost", [], 2, "no MX and no address records"),
    ("nx", [], 2, f"nx.{VERDICT_DOMAIN} does not exist (NXDOMAIN)"),
    (f"mx.{UNSERVED}", [], 2, "MX lookup failed: SERVFAIL"),
    (f"mx.{UNSERVED}", ["--unreachable-state", "warning"], 1, "MX lookup failed: SERVFAIL"),
    ("literal", [], 2, "127.0.25.1: IP literal"),
    ("cname", [], 2, f"alias.cname.{VERDICT_DOMAIN}: CNAME (to mx1.posture.test)"),
    ("dangling", [], 2, f"gone.dangling.{VERDICT_DOMAIN}: NXDOMAIN"),
    ("noaddr", [], 2, f"host.noaddr.{VERDICT_DOMAIN}: no address"),
    ("lookupfail", [], 2, f"mx.{UNSERVED}: lookup failed (A: SERVFAIL"),
    ("lookupfail", ["--unreachable-state", "warning"], 1, f"mx.{UNSERVED}: lookup failed"),
]


@pytest.mark.lab
@pytest.mark.parametrize("name, main, own", PLUGINS, ids=[p[0] for p in PLUGINS])
@pytest.mark.parametrize("case, extra, exitcode, phrase", CASES,
                         ids=[f"{c[0]}{'-' + c[1][-1] if c[1] else ''}" for c in CASES])
def test_every_plugin_gives_the_same_mx_verdict(lab, lab_dns, run_plugin, name, main, own,
                                                case, extra, exitcode, phrase):
    domain = case if "." in case else f"{case}.{VERDICT_DOMAIN}"
    run = run_plugin(main, ["-D", domain, "--dns-server", lab_dns.server_arg, "-t", "5",
                            *own, *extra])
    assert run.exitcode == exitcode, run.output
    state = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][exitcode]
    assert run.first_line.startswith(f"{name} {state} - "), run.output
    if phrase is not None:
        assert phrase in run.first_line, run.output


# -- one wording of a failed DNS answer ------------------------------------------------

#: what a validating resolver says of a name whose signatures are broken
BOGUS = DnsAnswer("d.example", "A", SERVFAIL, detail="REFUSED", extended_code=6,
                  extended_error="DNSSEC Bogus (6): signature expired")
BOGUS_WORDING = "SERVFAIL (REFUSED; DNSSEC Bogus (6): signature expired)"


class FailingClient:
    """A DnsClient whose every answer is BOGUS, asked about the name and type given."""

    dnssec = True

    def query(self, name, rdtype):
        return replace(BOGUS, qname=name, rdtype=rdtype)


def test_a_failed_dns_answer_reads_the_same_in_every_library():
    client = FailingClient()
    mx = targets.resolve_mx(client, "d.example")
    tlsa = dane.host_tlsa(client, targets.Target(10, "mx.d.example", authenticated=True), 25)
    zone = dnsbl.ZoneSpec("bl.example")
    spf = DnsClientLookup(client).query("d.example", "TXT")
    proof = ValidatorProof(client.query(".", "SOA"), client.query("bogus.example", "A"))
    assert BOGUS.failure() == BOGUS_WORDING
    assert mx.detail == BOGUS_WORDING
    assert tlsa.why == f"TLSA lookup of _25._tcp.mx.d.example failed: {BOGUS_WORDING}"
    assert dnsbl.classify(zone, BOGUS)[2] == BOGUS_WORDING
    assert spf.detail == BOGUS_WORDING
    assert proof.problem == f"lookup of . failed: {BOGUS_WORDING}"
