"""Linter units and check_spf's Contexts/Summary over in-memory zones (no server)."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import nagiosplugin
import pytest
from nagiosplugin.state import Critical, Ok, Unknown, Warn

from check_smtp_posture.deadline import Deadline
from check_smtp_posture.nagios import runner
from check_smtp_posture.plugins import check_spf
from check_smtp_posture.spf import ZoneDns, check_host, lint
from check_smtp_posture.spf import linter as L
from check_smtp_posture.spf.evaluate import SpfResult


def kinds(report):
    return sorted(f.kind for f in report.findings)


# -- linter ---------------------------------------------------------------------

def test_lint_counts_the_worst_case_tree():
    dns = ZoneDns({
        "d.example": [("TXT", "v=spf1 a mx include:i.example ip4:192.0.2.0/24 -all"),
                      ("MX", (10, "mx.d.example")), ("A", "192.0.2.1")],
        "mx.d.example": [("A", "192.0.2.2")],
        "i.example": [("TXT", "v=spf1 exists:x.i.example include:j.example ~all")],
        "j.example": [("TXT", "v=spf1 a:nothing.example ?all")],
    })
    report = lint(dns, "d.example")
    assert (report.status, report.dns_lookups, report.void_lookups, report.include_depth) == \
        ("ok", 6, 2, 2)
    assert (report.policy, report.policy_term) == ("-", "-all")
    assert kinds(report) == []
    assert report.record_length == len("v=spf1 a mx include:i.example ip4:192.0.2.0/24 -all")


def test_lint_terms_after_all_and_ignored_redirect_are_not_followed():
    dns = ZoneDns({"d.example": [("TXT", "v=spf1 -all a include:x.example redirect=r.example")]})
    report = lint(dns, "d.example")
    assert report.dns_lookups == 0
    assert kinds(report) == [L.REDIRECT_IGNORED]


def test_lint_redirect_chain_sets_the_policy():
    dns = ZoneDns({"d.example": [("TXT", "v=spf1 a redirect=r.example")],
                   "r.example": [("TXT", "v=spf1 mx ?all")],
                   "d2.example": [("TXT", "v=spf1 redirect=r2.example")],
                   "r2.example": [("TXT", "v=spf1 mx")]})
    report = lint(dns, "d.example")
    assert (report.policy, report.dns_lookups, report.include_depth) == ("?", 3, 0)
    assert kinds(report) == [L.NEUTRAL_ALL]
    assert kinds(lint(dns, "d2.example")) == [L.NO_ALL]


@pytest.mark.parametrize("zone, expected", [
    ({"d.example": [("TXT", "v=spf1 -all"), ("TXT", "v=spf1 +all")]}, [L.MULTIPLE]),
    ({"d.example": [("TXT", "v=spf1 ip4:1.2.3.4/33")]}, [L.SYNTAX]),
    ({"d.example": [("TXT", "v=spf1 include:n.example -all")]}, [L.INCLUDE_NONE]),
    ({"d.example": [("TXT", "v=spf1 redirect=n.example")]}, [L.INCLUDE_NONE]),
    ({"d.example": [("TXT", "v=spf1 include:d.example -all")]}, [L.LOOP]),
    ({"d.example": [("TXT", "v=spf1 redirect=D.example")]}, [L.LOOP]),
    ({"d.example": [("TXT", "v=spf1 a:t.example -all")], "t.example": [("TIMEOUT", True)]},
     [L.DNS_FAILURE]),
    ({"d.example": [("TXT", "v=spf1 +all")]}, [L.PLUS_ALL]),
    ({"d.example": [("TXT", "v=spf1 all")]}, [L.PLUS_ALL]),
    ({"d.example": [("TXT", "v=spf1 ip4:0.0.0.0/0 ip6:::/0 -all")]}, [L.PLUS_ALL, L.PLUS_ALL]),
    ({"d.example": [("TXT", "v=spf1 -ip4:0.0.0.0/0")]}, [L.NO_ALL]),
    ({"d.example": [("TXT", "v=spf1 ptr:d.example -all")]}, [L.PTR]),
    ({"d.example": [("TXT", "v=spf1 exists:%{p}.d.example -all")]}, [L.MACRO_TARGET, L.PTR]),
    ({"d.example": [("TXT", "v=spf1 " + "a " * 11 + "-all"), ("A", "192.0.2.1")]},
     [L.LOOKUP_LIMIT]),
    ({"d.example": [("TXT", "v=spf1 a:a.example mx:b.example exists:c.example -all")]},
     [L.VOID_LIMIT]),
    ({"d.example": [("TXT", "v=spf1 mx -all")] + [("MX", (i, f"m{i}.example"))
                                                  for i in range(11)]},
     [L.MX_LIMIT, L.VOID_LIMIT]),
    ({"d.example": [("TXT", "v=spf1 -all x=" + "y" * 450)]}, [L.LONG]),
])
def test_lint_findings(zone, expected):
    assert kinds(lint(ZoneDns(zone), "d.example")) == sorted(expected)


def test_lint_status_of_the_domain_itself():
    assert lint(ZoneDns({}), "d.example").status == "none"
    assert lint(ZoneDns({"d.example": [("TIMEOUT", True)]}), "d.example").status == \
        "temperror"
    assert lint(ZoneDns({}), "x" * 64 + ".example").status == "none"


def test_lint_keeps_counting_past_the_limit():
    zone = {f"l{i}.example": [("TXT", f"v=spf1 include:l{i + 1}.example -all")]
            for i in range(14)}
    zone["l14.example"] = [("TXT", "v=spf1 -all")]
    report = lint(ZoneDns(zone), "l0.example")
    assert (report.dns_lookups, report.include_depth) == (14, 14)
    assert report.permerror


# -- contexts and summary ---------------------------------------------------------

OPTION = {Ok: "ok", Warn: "warning", Critical: "critical", Unknown: "unknown"}


def run_check(zone: dict, domain: str = "d.example", *, ips=(), expect=None, warning="8",
              critical="10", verbose=0, missing=Critical, ptr=Warn, dns_failure=Critical,
              max_length=450):
    """The check main() builds, from the real parser, over an in-memory zone."""
    argv = ["-D", domain, "-w", warning, "-c", critical, "--missing", OPTION[missing],
            "--ptr", OPTION[ptr], "--unreachable-state", OPTION[dns_failure],
            "--max-length", str(max_length)] + ["-v"] * verbose
    for ip in ips:
        argv += ["--ip", ip]
    if expect:
        argv += ["--expect", ",".join(expect)]
    options = check_spf.options_from(check_spf.build_parser().parse_args(argv))
    check = check_spf.build_check(options, Deadline(5), lookup=ZoneDns(zone))
    out = io.StringIO()
    with redirect_stdout(out):
        code = runner.execute(check, verbose=verbose, timeout=5)
    return code, out.getvalue()


GOOD = {"d.example": [("TXT", "v=spf1 ip4:192.0.2.0/24 mx -all"),
                      ("MX", (10, "mx.d.example"))],
        "mx.d.example": [("A", "192.0.2.25"), ("A", "198.51.100.25")]}


def test_ok_summary_and_perfdata():
    code, out = run_check(GOOD)
    assert (code, out) == (0, "SPF OK - d.example: policy -all, 1 DNS lookup | "
                              "dns_lookups=1;8;10;0 dns_time=0.000000s;;;0 include_depth=0;;;0 "
                              "record_length=31B;450;;0 void_lookups=0;;2;0\n")


def test_problems_are_listed_worst_first():
    zone = {"d.example": [("TXT", "v=spf1 ptr include:p.example ?all")],
            "p.example": [("TXT", "v=spf1 +all")]}
    code, out = run_check(zone)
    assert code == 2
    assert out.split(" | ")[0] == (
        "SPF CRITICAL - p.example: '+all' passes every address (reached via d.example: "
        "include:p.example); d.example: 'ptr' is deprecated (RFC 7208 §5.5); d.example: "
        "'?all' leaves unlisted senders 'neutral'")


@pytest.mark.parametrize("state, code", [(Ok, 0), (Warn, 1), (Critical, 2)])
def test_ptr_state_option(state, code):
    zone = {"d.example": [("TXT", "v=spf1 ptr -all")]}
    assert run_check(zone, ptr=state)[0] == code


@pytest.mark.parametrize("state, code", [(Warn, 1), (Critical, 2), (Unknown, 3)])
def test_dns_failure_state_option(state, code):
    zone = {"d.example": [("TIMEOUT", True)]}
    result = run_check(zone, dns_failure=state)
    assert result[0] == code
    assert result[1].startswith(f"SPF {str(state).upper()} - temperror: DNS failure looking "
                                "up TXT d.example: timeout | ")


def test_dns_lookup_thresholds_and_rfc_limit():
    zone = {"d.example": [("TXT", "v=spf1 " + "a " * 9 + "-all"), ("A", "192.0.2.1")]}
    assert run_check(zone)[1].startswith(
        "SPF WARNING - d.example: 9 DNS-querying terms (threshold outside range 0:8) | ")
    assert run_check(zone, warning="9")[0] == 0
    assert run_check(zone, critical="5")[0] == 2
    zone["d.example"][0] = ("TXT", "v=spf1 " + "a " * 11 + "-all")
    code, out = run_check(zone, warning="20", critical="20")
    assert code == 2
    assert out.startswith("SPF CRITICAL - d.example: 11 DNS-querying terms, over the RFC 7208 "
                          "limit of 10 (permerror) | ")


def test_check_host_context_expect():
    code, out = run_check(GOOD, ips=["192.0.2.7", "203.0.113.1"], expect=("pass",))
    assert code == 2
    # every address asked about is answered in the first line, the failing one first
    assert out.split(" | ")[0] == (
        "SPF CRITICAL - d.example: check_host(203.0.113.1) = fail (matched -all in d.example), "
        "expected pass; check_host(192.0.2.7) = pass (matched ip4:192.0.2.0/24 in d.example)")
    code, out = run_check(GOOD, ips=["192.0.2.7", "203.0.113.1"])
    assert code == 0
    assert out.split(" | ")[0] == (
        "SPF OK - d.example: policy -all, 1 DNS lookup; check_host(192.0.2.7) = pass "
        "(matched ip4:192.0.2.0/24 in d.example); check_host(203.0.113.1) = fail "
        "(matched -all in d.example)")


def test_check_host_temperror_uses_the_dns_failure_state():
    zone = {"d.example": [("TXT", "v=spf1 a:t.example -all")], "t.example": [("TIMEOUT", True)]}
    code, out = run_check(zone, ips=["192.0.2.1"], expect=("fail",), dns_failure=Warn)
    assert code == 1
    assert "check_host(192.0.2.1) = temperror (DNS failure looking up A t.example: timeout), " \
           "expected fail" in out


def test_check_host_context_direct():
    ctx = check_spf.CheckHostContext(expect=None)
    metric = nagiosplugin.Metric("x", (SpfResult("permerror", "d.example", "192.0.2.1",
                                                 reason="boom"), None), context="check_host")
    result = ctx.evaluate(metric, None)
    assert (result.state, result.hint) == (Critical, "check_host(192.0.2.1) = permerror (boom)")


def test_record_context_missing_state():
    code, out = run_check({}, missing=Warn)
    assert (code, out.split(" | ")[0]) == (1, "SPF WARNING - no SPF record at d.example "
                                              "(NXDOMAIN)")


def test_verbose_lists_findings_and_explanations():
    zone = {"d.example": [("TXT", "v=spf1 ptr -all exp=e.d.example")],
            "e.d.example": [("TXT", "%{i} may not send")]}
    code, out = run_check(zone, ips=["192.0.2.1"], verbose=1)
    assert out.splitlines()[1:] == [
        "warning: d.example: 'ptr' is deprecated (RFC 7208 §5.5)",
        "record: v=spf1 ptr -all exp=e.d.example",
        "DNS-querying terms: 1 (limit 10), void lookups: 0 (limit 2), include depth: 0",
        "finding: d.example: 'ptr' is deprecated (RFC 7208 §5.5)",
        "check_host(192.0.2.1) = fail (matched -all in d.example); DNS-querying terms 1, "
        "void lookups 1",
        "  explanation: 192.0.2.1 may not send",
    ]


def test_engine_and_plugin_agree_on_check_host():
    dns = ZoneDns(GOOD)
    assert check_host(dns, "198.51.100.25", "d.example").result == "pass"


def test_the_answer_asked_for_stays_in_the_first_line_beside_worse_findings():
    # a deprecated ptr (WARNING) must not push check_host() for --ip out of the status line
    zone = {"d.example": [("TXT", "v=spf1 ptr ip4:192.0.2.0/24 -all")]}
    code, out = run_check(zone, ips=["192.0.2.7"])
    assert code == 1
    assert out.split(" | ")[0] == (
        "SPF WARNING - check_host(192.0.2.7) = pass (matched ip4:192.0.2.0/24 in d.example); "
        "d.example: 'ptr' is deprecated (RFC 7208 §5.5)")


def test_failed_lookup_of_the_domain_by_a_mechanism_is_not_hidden():
    zone = {"d.example": [("TXT", "v=spf1 a -all"), ("A", "TIMEOUT")]}
    code, out = run_check(zone)
    assert (code, out.split(" | ")[0]) == (
        2, "SPF CRITICAL - DNS failure looking up A d.example: timeout")
