"""check_spf end to end: main([...]) against a real NSD serving the SPF lab zones.

The zones (tests/lab/spflab.py) are served by the shared lab NSD (fixture lab_dns).
"""

from __future__ import annotations

import re
import socket
import time

import pytest

from check_smtp_posture.plugins.check_spf import main
from tests.lab.world import DNS_SERVER_ARG

SERVER = DNS_SERVER_ARG  # the shared lab NSD: conftest.py lab_dns
SILENT_ADDRESS = "127.0.29.54"   # a UDP socket that never answers
FORWARDER_ADDRESS = "127.0.29.55"  # forwards to NSD, never answers names under slow.spf.test


@pytest.fixture(scope="module")
def spf_dns(lab_dns):
    """The shared lab NSD, which serves the SPF zones (tests/lab/spflab.py)."""
    assert lab_dns.server_arg == SERVER
    return lab_dns


def run(run_plugin, *args):
    return run_plugin(main, ["--dns-server", SERVER, *args])


def stable(line: str) -> str:
    """The first line with the (timing-dependent) dns_time value blanked."""
    return re.sub(r"dns_time=[0-9.]+s", "dns_time=Xs", line)


PERF = ("dns_lookups={lookups};8;10;0 dns_time=Xs;;;0 include_depth={depth};;;0 "
        "record_length={length}B;450;;0 void_lookups={void};;2;0")


def perf(lookups=0, depth=0, length=0, void=0) -> str:
    return PERF.format(lookups=lookups, depth=depth, length=length, void=void)


@pytest.mark.parametrize("domain, code, summary, perfdata", [
    ("ok.spf.test", 0, "ok.spf.test: policy -all, 2 DNS lookups",
     perf(2, 1, 57)),
    ("redirect.spf.test", 0, "redirect.spf.test: policy -all, 3 DNS lookups",
     perf(3, 1, 27)),
    ("at8.spf.test", 0, "at8.spf.test: policy -all, 8 DNS lookups", perf(8, 0, 27)),
    ("none.spf.test", 2, "no SPF record at none.spf.test (NODATA)", perf()),
    ("nosuch.spf.test", 2, "no SPF record at nosuch.spf.test (NXDOMAIN)", perf()),
    ("multi.spf.test", 2, "multi.spf.test has 2 SPF records (permerror)", perf()),
    ("syntax.spf.test", 2,
     "syntax.spf.test: bad CIDR length in 'ip4:192.0.2.1/33' (permerror)", perf(0, 0, 28)),
    ("plusall.spf.test", 2, "plusall.spf.test: '+all' passes every address",
     perf(1, 0, 14, 1)),
    ("plusinc.spf.test", 2, "plusall.spf.test: '+all' passes every address "
     "(reached via plusinc.spf.test: include:plusall.spf.test)", perf(2, 1, 36, 1)),
    ("neutral.spf.test", 1, "neutral.spf.test: '?all' leaves unlisted senders 'neutral'",
     perf(0, 0, 25)),
    ("noall.spf.test", 1, "noall.spf.test: no 'all' and no redirect: mail from anywhere "
     "else is 'neutral'", perf(0, 0, 20)),
    ("ptr.spf.test", 1, "ptr.spf.test: 'ptr' is deprecated (RFC 7208 §5.5)", perf(1, 0, 15)),
    ("long.spf.test", 1, "long.spf.test: SPF record is 524 bytes, over 450 (UDP/512 risk)",
     perf(0, 0, 524)),
    ("inclnone.spf.test", 2, "inclnone.spf.test: include:nothing.spf.test: nothing.spf.test "
     "has no SPF record (permerror)", perf(1, 1, 36)),
    ("at10.spf.test", 1, "at10.spf.test: 10 DNS-querying terms (threshold outside range "
     "0:8)", perf(10, 2, 45)),
    ("over.spf.test", 2, "over.spf.test: 12 DNS-querying terms, over the RFC 7208 limit of "
     "10 (permerror)", perf(12, 3, 35)),
    ("void.spf.test", 2, "void.spf.test: 3 void lookups, over the RFC 7208 limit of 2 "
     "(permerror)", perf(3, 0, 58, 3)),
    ("loop.spf.test", 2, "loop2.spf.test: include:loop.spf.test loops back to "
     "loop.spf.test (permerror)", perf(2, 1, 34)),
])
def test_record_findings(spf_dns, run_plugin, domain, code, summary, perfdata):
    result = run(run_plugin, "-D", domain)
    state = {0: "OK", 1: "WARNING", 2: "CRITICAL"}[code]
    assert stable(result.first_line) == f"SPF {state} - {summary} | {perfdata}"
    assert result.exitcode == code
    assert len(result.output.splitlines()) == 1


def test_missing_state_is_configurable(spf_dns, run_plugin):
    result = run(run_plugin, "-D", "none.spf.test", "--missing", "warning")
    assert (result.exitcode, result.first_line.split(" | ")[0]) == (
        1, "SPF WARNING - no SPF record at none.spf.test (NODATA)")


def test_missing_ok(spf_dns, run_plugin):
    result = run(run_plugin, "-D", "nosuch.spf.test", "--missing", "ok")
    assert (result.exitcode, stable(result.first_line)) == (
        0, "SPF OK - no SPF record at nosuch.spf.test (NXDOMAIN) | " + perf())


def test_ptr_state_is_configurable(spf_dns, run_plugin):
    assert run(run_plugin, "-D", "ptr.spf.test", "--ptr", "ok").exitcode == 0
    assert run(run_plugin, "-D", "ptr.spf.test", "--ptr", "critical").exitcode == 2


def test_lookup_thresholds(spf_dns, run_plugin):
    result = run(run_plugin, "-D", "at10.spf.test", "-w", "10", "-c", "10")
    assert result.exitcode == 0
    assert result.perfdata["dns_lookups"] == "10"
    assert "dns_lookups=10;10;10;0" in result.first_line
    result = run(run_plugin, "-D", "at8.spf.test", "-w", "5", "-c", "7")
    assert result.first_line.startswith(
        "SPF CRITICAL - at8.spf.test: 8 DNS-querying terms (threshold outside range 0:7)")
    assert result.exitcode == 2


def test_max_length(spf_dns, run_plugin):
    result = run(run_plugin, "-D", "long.spf.test", "--max-length", "600")
    assert result.exitcode == 0
    assert "record_length=524B;600;;0" in result.first_line


def test_check_host_for_ips_with_macro_and_explanation(spf_dns, run_plugin):
    result = run(run_plugin, "-D", "macro.spf.test", "--ip", "127.0.29.20",
                 "--ip", "127.0.29.21", "-v")
    assert result.exitcode == 0
    assert stable(result.first_line) == (
        "SPF OK - macro.spf.test: policy -all, 1 DNS lookup; "
        "check_host(127.0.29.20) = pass (matched exists:%{ir}.allow.spf.test in "
        "macro.spf.test); check_host(127.0.29.21) = fail (matched -all in macro.spf.test); "
        "macro.spf.test: exists:%{ir}.allow.spf.test depends on the sender; evaluated for a "
        "sample client | " + perf(1, 0, 56, 1))
    assert "  explanation: 127.0.29.21 is not allowed to send for macro.spf.test" in \
        result.output.splitlines()


def test_expect_sets_the_state(spf_dns, run_plugin):
    included = run(run_plugin, "-D", "ok.spf.test", "--ip", "192.0.2.9", "--expect", "pass")
    assert included.exitcode == 0
    assert "; check_host(192.0.2.9) = pass (matched include:_spf.ok.spf.test in " \
        "ok.spf.test) | " in included.first_line
    bad = run(run_plugin, "-D", "ok.spf.test", "--ip", "198.51.100.9", "--expect", "pass")
    assert bad.exitcode == 2
    assert bad.first_line.startswith(
        "SPF CRITICAL - ok.spf.test: check_host(198.51.100.9) = fail (matched -all in "
        "ok.spf.test), expected pass | ")
    several = run(run_plugin, "-D", "ok.spf.test", "--ip", "198.51.100.9", "--expect",
                  "fail,softfail")
    assert several.exitcode == 0
    good = run(run_plugin, "-D", "ok.spf.test", "--ip", "127.0.29.5", "--ip", "127.0.29.20",
               "--expect", "pass")
    assert good.exitcode == 0
    assert "check_host(127.0.29.5) = pass (matched ip4:127.0.29.0/28 in ok.spf.test); " \
        "check_host(127.0.29.20) = pass (matched mx in ok.spf.test) | " in good.first_line


def test_check_mx(spf_dns, run_plugin):
    good = run(run_plugin, "-D", "ok.spf.test", "--check-mx")
    assert stable(good.first_line) == (
        "SPF OK - ok.spf.test: policy -all, 2 DNS lookups; check_host(127.0.29.20) = pass "
        "(matched mx in ok.spf.test) [MX mx.ok.spf.test] | " + perf(2, 1, 57))
    bad = run(run_plugin, "-D", "badmx.spf.test", "--check-mx", "-4")
    assert bad.exitcode == 2
    assert bad.first_line.startswith(
        "SPF CRITICAL - badmx.spf.test: check_host(127.0.29.20) = fail (matched -all in "
        "badmx.spf.test) [MX mx.ok.spf.test], expected pass | ")
    none = run(run_plugin, "-D", "neutral.spf.test", "--check-mx", "--expect", "neutral")
    # no MX and no address: the family's MX verdict, the same in every plugin
    assert none.first_line.startswith(
        "SPF CRITICAL - neutral.spf.test: no MX and no address records; neutral.spf.test: "
        "'?all' leaves unlisted senders 'neutral' | ")


def test_verbose_levels(spf_dns, run_plugin):
    one = run(run_plugin, "-D", "ok.spf.test", "-v").output.splitlines()
    assert one[1:] == [
        "record: v=spf1 ip4:127.0.29.0/28 mx include:_spf.ok.spf.test -all",
        "DNS-querying terms: 2 (limit 10), void lookups: 0 (limit 2), include depth: 1",
    ]
    two = run(run_plugin, "-D", "ok.spf.test", "-vv").output.splitlines()
    assert two[3:] == [
        "SPF tree (as evaluated for a non-matching client):",
        "  ok.spf.test: v=spf1 ip4:127.0.29.0/28 mx include:_spf.ok.spf.test -all",
        "    _spf.ok.spf.test: v=spf1 ip4:192.0.2.0/24 ~all",
    ]
    three = run(run_plugin, "-D", "ok.spf.test", "-vvv", "--ip", "198.51.100.9").output
    assert three.splitlines()[6:] == [
        "check_host(198.51.100.9) = fail (matched -all in ok.spf.test); DNS-querying terms 2, "
        "void lookups 0",
        "  ok.spf.test: v=spf1 ip4:127.0.29.0/28 mx include:_spf.ok.spf.test -all",
        "  ip4:127.0.29.0/28: no match",
        "  mx: no match",
        "  include:_spf.ok.spf.test -> _spf.ok.spf.test",
        "    _spf.ok.spf.test: v=spf1 ip4:192.0.2.0/24 ~all",
        "    ip4:192.0.2.0/24: no match",
        "    ~all: match -> softfail",
        "  include:_spf.ok.spf.test: no match",
        "  -all: match -> fail",
    ]


def test_usage_errors_exit_3(run_plugin):
    for argv in (["-D"], [], ["-D", "x.test", "--ip", "not-an-ip"],
                 ["-D", "x.test", "--expect", "pass"],
                 ["-D", "x.test", "--ip", "192.0.2.1", "--expect", "maybe"],
                 ["-D", "x.test", "-4"], ["-D", "a b"], ["-D", "x.test", "-w", "x:y:z"],
                 ["-D", "a..b.test"], ["-D", "x" * 64 + ".test"], ["-D", "localhost"],
                 ["-D", "."], ["-D", ""], ["-D", "x.test", "--max-length", "0"],
                 ["-D", "x.test", "--missing", "unknown"]):
        result = run_plugin(main, argv)
        assert result.exitcode == 3, argv
        assert result.first_line.startswith("usage: check_spf"), argv


def test_version_and_help(run_plugin):
    assert run_plugin(main, ["-V"]).exitcode == 0
    helped = run_plugin(main, ["--help"])
    assert helped.exitcode == 0 and "--check-mx" in helped.output


@pytest.fixture
def silent_dns():
    """A UDP socket that receives queries and never answers them."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((SILENT_ADDRESS, 0))
    yield f"{SILENT_ADDRESS}:{sock.getsockname()[1]}"
    sock.close()


@pytest.mark.slow
@pytest.mark.parametrize("extra, code", [([], 2), (["--unreachable-state", "warning"], 1)])
def test_dns_server_that_never_answers(run_plugin, silent_dns, extra, code):
    started = time.monotonic()
    result = run_plugin(main, ["--dns-server", silent_dns, "-t", "1.5", "-D", "ok.spf.test",
                               "--ip", "192.0.2.1", "--expect", "pass", *extra])
    elapsed = time.monotonic() - started
    assert elapsed < 1.5 + 0.5
    state = {1: "WARNING", 2: "CRITICAL"}[code]
    assert result.exitcode == code
    # the answer asked for (--ip) first, then the record's own failure
    assert re.match(rf"SPF {state} - check_host\(192\.0\.2\.1\) = temperror \(DNS failure "
                    r"looking up TXT ok\.spf\.test: TIMEOUT \(no answer within 0\.\ds\)\), "
                    r"expected pass; temperror: DNS failure looking up TXT ok\.spf\.test: "
                    r"TIMEOUT \(no answer within 0\.\ds\) \| ",
                    result.first_line), result.first_line


@pytest.fixture(scope="module")
def dropping_dns(lab_dns):
    from tests.lab.authdns import free_udp_port
    from tests.lab.dnsdelay import DelayingDns

    forwarder = DelayingDns((FORWARDER_ADDRESS, free_udp_port(FORWARDER_ADDRESS)),
                            (lab_dns.address, lab_dns.port), drop=["slow.spf.test"])
    with forwarder:
        yield forwarder.server_arg


def test_include_that_never_answers_is_temperror_within_the_budget(run_plugin, dropping_dns):
    started = time.monotonic()
    result = run_plugin(main, ["--dns-server", dropping_dns, "-t", "1.5",
                               "-D", "slowinc.spf.test", "--ip", "192.0.2.1",
                               "--ip", "192.0.2.2"])
    assert time.monotonic() - started < 1.5 + 0.5
    assert result.exitcode == 2
    # 192.0.2.1 matches ip4 before the include is reached; 192.0.2.2 needs the include
    # both answers asked for are in the first line, the failing one first; the per-query
    # cap (half of -t) leaves time for the second address
    assert re.match(r"SPF CRITICAL - check_host\(192\.0\.2\.2\) = temperror \(DNS failure "
                    r"looking up TXT x\.slow\.spf\.test: TIMEOUT \(no answer within 0\.\ds\)\); "
                    r"check_host\(192\.0\.2\.1\) = pass \(matched ip4:192\.0\.2\.1 in "
                    r"slowinc\.spf\.test\); DNS failure looking up TXT x\.slow\.spf\.test: "
                    r"TIMEOUT", result.first_line), result.first_line
    assert result.perfdata["dns_lookups"] == "1"
