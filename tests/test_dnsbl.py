"""check_dnsbl: zone data, answer validation, Context/Summary units, end-to-end lab runs."""

from __future__ import annotations

import re
import time

import nagiosplugin
import pytest
from nagiosplugin.state import Critical, Ok, Warn

from check_smtp_posture import dnsbl
from check_smtp_posture.dnsbl import Lookup, ZoneHealth
from check_smtp_posture.dnslookup import DnsAnswer
from check_smtp_posture.plugins import check_dnsbl as bl
from check_smtp_posture.plugins.check_dnsbl import DnsblFacts, main
from tests.lab.dnsbllab import TARGET_DOMAIN, TIMEOUT_ZONE, dnsbl_forwarder

ZONE = dnsbl.ZoneSpec("bl.example", errors=dnsbl._nets("127.255.255.0/24"))


# --------------------------------------------------------------------------- zone data


def test_query_names_ipv4_ipv6_domain():
    assert dnsbl.query_name("192.0.2.99", ZONE) == "99.2.0.192.bl.example"
    assert dnsbl.query_name("2001:db8:1:2::ab", ZONE) == (
        "b.a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.bl.example")
    dzone = dnsbl.ZoneSpec("dbl.example", dnsbl.DOMAIN)
    assert dnsbl.query_name("example.org", dzone) == "example.org.dbl.example"


def test_builtin_zones_carry_documented_errors():
    zen = dnsbl.parse_zone("ZEN.spamhaus.org.")
    assert zen.name == "zen.spamhaus.org"
    assert zen.error_answer("127.255.255.254") and zen.error_answer("127.255.255.252")
    assert not zen.error_answer("127.0.0.2")
    dbl = next(z for z in dnsbl.DEFAULT_DOMAIN_ZONES if z.name == "dbl.spamhaus.org")
    assert dbl.error_answer("127.0.1.255") and not dbl.error_answer("127.0.1.2")
    assert dnsbl.parse_zone("multi.uribl.com", "domain").error_answer("127.0.0.1")
    custom = dnsbl.parse_zone("bl.lab=127.0.0.250,127.0.1.0/24")
    assert custom.error_answer("127.0.1.7") and custom.error_answer("127.0.0.250")
    assert not custom.error_answer("127.0.0.2")
    with pytest.raises(ValueError):
        dnsbl.parse_zone("bl.lab=nonsense")
    with pytest.raises(ValueError):
        dnsbl.parse_zone("=127.0.0.1")


def test_zones_file(tmp_path):
    path = tmp_path / "zones"
    path.write_text("# comment\nbl.one\n\nbl.two 127.255.255.254 127.0.1.0/24  # err\n"
                    "domain dbl.three\n")
    zones = dnsbl.read_zones_file(str(path))
    assert [(z.name, z.kind) for z in zones] == [
        ("bl.one", "ip"), ("bl.two", "ip"), ("dbl.three", "domain")]
    assert zones[1].error_answer("127.0.1.9")
    path.write_text("bl.one bad-answer\n")
    with pytest.raises(ValueError, match=":1: bad error answer"):
        dnsbl.read_zones_file(str(path))


def answer(status, *records):
    return DnsAnswer("q", "A", status, tuple(records))


@pytest.mark.parametrize("ans, outcome", [
    (answer("NXDOMAIN"), dnsbl.CLEAN),
    (answer("NODATA"), dnsbl.CLEAN),
    (answer("NOERROR", "127.0.0.2"), dnsbl.LISTED),
    (answer("NOERROR", "127.0.0.2", "127.0.0.10"), dnsbl.LISTED),
    (answer("NOERROR", "127.255.255.254"), dnsbl.ERROR_ANSWER),
    (answer("NOERROR", "198.51.100.7"), dnsbl.INVALID_ANSWER),
    (answer("NOERROR", "127.0.0.2", "10.0.0.1"), dnsbl.INVALID_ANSWER),
    (answer("TIMEOUT"), dnsbl.TIMED_OUT),
    (answer("SERVFAIL"), dnsbl.FAILED),
])
def test_classify(ans, outcome):
    assert dnsbl.classify(ZONE, ans)[0] == outcome


def lookup(subject, outcome, canary=False, codes=("127.0.0.2",), zone=ZONE, **kw):
    return Lookup(zone, subject, dnsbl.query_name(subject, zone), canary=canary,
                  outcome=outcome, codes=codes, **kw)


def test_zone_health():
    assert dnsbl.zone_health(ZONE, [lookup("127.0.0.1", dnsbl.CLEAN, True),
                                 lookup("192.0.2.1", dnsbl.LISTED)]).state == dnsbl.ZONE_OK
    broken = dnsbl.zone_health(ZONE, [lookup("127.0.0.1", dnsbl.LISTED, True),
                                   lookup("192.0.2.1", dnsbl.LISTED)])
    assert (broken.state, broken.detail) == (dnsbl.BROKEN, "lists test address 127.0.0.1 "
                                                        "(127.0.0.2)")
    timed = dnsbl.zone_health(ZONE, [lookup("127.0.0.1", dnsbl.TIMED_OUT, True),
                                  lookup("192.0.2.1", dnsbl.SKIPPED)])
    assert (timed.state, timed.detail) == (dnsbl.UNUSABLE, "timed out")
    err = dnsbl.zone_health(ZONE, [lookup("127.0.0.1", dnsbl.ERROR_ANSWER, True,
                                       detail="error answer 127.255.255.254")])
    assert (err.state, err.detail) == (dnsbl.UNUSABLE, "error answer 127.255.255.254")


# --------------------------------------------------------------------------- contexts, summary


def facts_with(lookups, zones=None):
    facts = DnsblFacts(subjects=list(dict.fromkeys(lk.subject for lk in lookups
                                                   if not lk.canary)), lookups=lookups)
    facts.zones = zones or {ZONE.name: ZoneHealth(ZONE)}
    return facts


def run_check(facts, *, warning="0", critical="1", strict=False):
    class Fixed(nagiosplugin.Resource):
        name = "DNSBL"

        def probe(self):
            yield nagiosplugin.Metric("zones", facts, context="zones")
            yield nagiosplugin.Metric("listed", len(facts.listings), min=0, context="listed")

    check = nagiosplugin.Check(Fixed(), bl.ZonesContext(strict=strict),
                               bl.ListedContext(warning, critical), bl.DnsblSummary())
    check()
    return check


def test_listing_thresholds_default_one_warns_two_critical():
    one = facts_with([lookup("192.0.2.1", dnsbl.LISTED, reason="spam")])
    check = run_check(one)
    assert check.state == Warn
    assert check.summary_str == '192.0.2.1 listed on bl.example (127.0.0.2 "spam")'
    two = facts_with([lookup("192.0.2.1", dnsbl.LISTED), lookup("192.0.2.2", dnsbl.LISTED)])
    assert run_check(two).state == Critical
    assert run_check(two, warning="5", critical="10").state == Ok
    assert run_check(facts_with([lookup("192.0.2.1", dnsbl.CLEAN)])).summary_str == (
        "1 address not listed on 1 zone")


def test_broken_zone_listings_do_not_count_and_strict_warns():
    zones = {ZONE.name: ZoneHealth(ZONE, dnsbl.BROKEN, "lists test address 127.0.0.1 (127.0.0.2)")}
    facts = facts_with([lookup("127.0.0.1", dnsbl.LISTED, True),
                        lookup("192.0.2.1", dnsbl.LISTED)], zones)
    assert facts.listings == []
    check = run_check(facts)
    assert check.state == Ok
    assert check.summary_str == ("no usable zone; 1 zone unusable: bl.example (lists test "
                                 "address 127.0.0.1 (127.0.0.2))")
    strict = run_check(facts, strict=True)
    assert strict.state == Warn
    assert strict.summary_str == ("no usable zone; 1 zone unusable: bl.example (lists test "
                                  "address 127.0.0.1 (127.0.0.2))")


def test_verbose_names_zone_address_code_reason():
    check = run_check(facts_with([lookup("192.0.2.1", dnsbl.LISTED, reason="trap hit")]))
    assert check.verbose_str[0] == ("listed: zone bl.example, address 192.0.2.1, "
                                    "code 127.0.0.2, reason: trap hit")


# --------------------------------------------------------------------------- usage


@pytest.mark.parametrize("argv", [
    [],
    ["--zone", "bl.lab.test"],
    ["--ip", "300.1.2.3"],
    ["--ip", "192.0.2.1", "--domain-zone", "dbl.lab.test"],
    ["--ip", "192.0.2.1", "--no-default-zones"],
    ["--ip", "192.0.2.1", "--zone", "bl.lab=127.0.0.x"],
    ["--ip", "192.0.2.1", "--concurrency", "0"],
    ["--ip", "192.0.2.1", "-w", "x:y:z"],
    ["--ip", "192.0.2.1", "--zones-file", "/nonexistent/zones"],
    ["-H", ""],
    ["-H", "a..b"],
    ["-D", ".."],
])
def test_usage_errors_exit_3(run_plugin, argv):
    run = run_plugin(main, argv)
    assert run.exitcode == 3
    assert run.first_line.startswith("usage: check_dnsbl")


def test_ipv4_mapped_address_is_asked_as_ipv4():
    from check_smtp_posture.nagios.cli import ip_address

    assert ip_address("::ffff:192.0.2.1") == "192.0.2.1"
    assert ip_address(" 2001:DB8::1 ") == "2001:db8::1"


def test_list_zones(run_plugin):
    run = run_plugin(main, ["--list-zones", "--domain-zone", "default", "--zone", "bl.lab"])
    assert run.exitcode == 0
    lines = run.output.splitlines()
    assert lines[0] == "ip\tzen.spamhaus.org\t127.255.255.0/24\tSpamhaus SBL+XBL+CSS+PBL"
    assert "ip\tbl.lab\t-\t" in lines
    assert any(line.startswith("domain\tmulti.uribl.com\t127.0.0.1/32") for line in lines)


# --------------------------------------------------------------------------- lab


@pytest.fixture(scope="module")
def lab(lab_dns):
    """The shared lab NSD behind the forwarder that never answers TIMEOUT_ZONE."""
    with dnsbl_forwarder((lab_dns.address, lab_dns.port)) as forwarder:
        yield forwarder


def run_lab(run_plugin, lab, *argv, timeout="3"):
    return run_plugin(main, ["--dns-server", lab.server_arg, "-t", timeout,
                             "--no-default-zones", *argv])


def status(run) -> str:
    return re.sub(r"query_time=[0-9.]+s;", "query_time=T;", run.first_line)


def perf(listed, checked, unusable, w="0", c="1"):
    return (f"listed={listed};{w};{c};0 queries_unanswered=0;;;0 query_time=T;;;0 "
            f"zones_checked={checked};;;0 zones_unusable={unusable};;;0")


LISTING_21 = ('127.0.28.21 listed on txt.bl.lab.test (127.0.0.2 "Listed by the lab: spam trap '
              'hits see http://bl.lab.test/21")')
LISTING_V6 = '2001:db8:28::21 listed on txt.bl.lab.test (127.0.0.3 "lab IPv6 listing")'


@pytest.mark.lab
@pytest.mark.parametrize("argv, exitcode, line", [
    (["-D", TARGET_DOMAIN, "--zone", "clean.bl.lab.test"], 0,
     "DNSBL OK - 3 addresses not listed on 1 zone | " + perf(0, 1, 0)),
    (["-D", TARGET_DOMAIN, "-4", "--zone", "txt.bl.lab.test"], 1,
     f"DNSBL WARNING - {LISTING_21} | " + perf(1, 1, 0)),
    (["-D", TARGET_DOMAIN, "--zone", "txt.bl.lab.test"], 2,
     f"DNSBL CRITICAL - {LISTING_21}; {LISTING_V6} | " + perf(2, 1, 0)),
    (["-H", "2001:db8:28::21", "--zone", "txt.bl.lab.test", "--zone", "clean.bl.lab.test"], 1,
     f"DNSBL WARNING - {LISTING_V6} | " + perf(1, 2, 0)),
    (["--ip", "127.0.28.21", "--zone", "txt.bl.lab.test", "--zone", "second.bl.lab.test",
      "-w", "1", "-c", "2"], 1,
     f"DNSBL WARNING - {LISTING_21}; 127.0.28.21 listed on second.bl.lab.test (127.0.0.4) | "
     + perf(2, 2, 0, "1", "2")),
    # the documented error answer: zone unusable, not a listing
    (["--ip", "127.0.28.22", "--zone", "error.bl.lab.test=127.255.255.252/30",
      "--zone", "clean.bl.lab.test"], 0,
     "DNSBL OK - 1 address not listed on 1 zone; 1 zone unusable: error.bl.lab.test "
     "(error answer 127.255.255.254) | " + perf(0, 2, 1)),
    (["--ip", "127.0.28.22", "--zone", "error.bl.lab.test=127.255.255.252/30", "--strict"], 1,
     "DNSBL WARNING - no usable zone; 1 zone unusable: error.bl.lab.test (error answer "
     "127.255.255.254) | "
     + perf(0, 1, 1)),
    # undeclared, the same answer is caught by the 127.0.0.1 test entry
    (["--ip", "127.0.28.22", "--zone", "error.bl.lab.test"], 0,
     "DNSBL OK - no usable zone; 1 zone unusable: error.bl.lab.test (lists test address "
     "127.0.0.1 (127.255.255.254)) | " + perf(0, 1, 1)),
    (["--ip", "127.0.28.21", "--zone", "broken.bl.lab.test", "--zone", "clean.bl.lab.test"], 0,
     "DNSBL OK - 1 address not listed on 1 zone; 1 zone unusable: broken.bl.lab.test (lists "
     "test address 127.0.0.1 (127.0.0.2)) | " + perf(0, 2, 1)),
    (["--ip", "127.0.28.21", "--zone", "parked.bl.lab.test", "--zone", "clean.bl.lab.test"], 0,
     "DNSBL OK - 1 address not listed on 1 zone; 1 zone unusable: parked.bl.lab.test (answer "
     "outside 127.0.0.0/8: 198.51.100.7) | " + perf(0, 2, 1)),
    (["--ip", "127.0.28.21", "--zone", "refused.bl.lab.test", "--zone", "clean.bl.lab.test"],
     0, "DNSBL OK - 1 address not listed on 1 zone; 1 zone unusable: refused.bl.lab.test "
        "(SERVFAIL (REFUSED)) | " + perf(0, 2, 1)),
    (["-D", TARGET_DOMAIN, "-4", "--zone", "clean.bl.lab.test", "--domain-zone",
      "dbl.lab.test"], 1,
     f'DNSBL WARNING - {TARGET_DOMAIN} listed on dbl.lab.test (127.0.1.2 "lab domain '
     'listing") | ' + perf(1, 2, 0)),
    (["-D", f"nullmx.{TARGET_DOMAIN}", "--zone", "clean.bl.lab.test"], 0,
     f"DNSBL OK - null MX (RFC 7505): nullmx.{TARGET_DOMAIN} accepts no mail | "
     + perf(0, 0, 0)),
    (["-D", f"implicit.{TARGET_DOMAIN}", "--zone", "clean.bl.lab.test"], 1,
     "DNSBL WARNING - 1 address not listed on 1 zone; no MX, implicit MX from address "
     "records | " + perf(0, 1, 0)),
    (["-D", f"gone.{TARGET_DOMAIN}", "--zone", "clean.bl.lab.test"], 2,
     f"DNSBL CRITICAL - gone.{TARGET_DOMAIN} does not exist (NXDOMAIN) | " + perf(0, 0, 0)),
    # NXDOMAIN is an answer about the domain, not a failure to get one
    (["-D", f"gone.{TARGET_DOMAIN}", "--zone", "clean.bl.lab.test", "--unreachable-state",
      "warning"], 2,
     f"DNSBL CRITICAL - gone.{TARGET_DOMAIN} does not exist (NXDOMAIN) | " + perf(0, 0, 0)),
    (["-H", f"nowhere.{TARGET_DOMAIN}", "--zone", "clean.bl.lab.test"], 2,
     f"DNSBL CRITICAL - nowhere.{TARGET_DOMAIN}: NXDOMAIN | " + perf(0, 0, 0)),
])
def test_lab_cases(run_plugin, lab, argv, exitcode, line):
    run = run_lab(run_plugin, lab, *argv)
    assert status(run) == line, run.output
    assert run.exitcode == exitcode


@pytest.mark.lab
def test_lab_verbose_per_listing(run_plugin, lab):
    run = run_lab(run_plugin, lab, "-D", TARGET_DOMAIN, "--zone", "txt.bl.lab.test",
                  "--zone", "error.bl.lab.test=127.255.255.254", "-v")
    assert run.output.splitlines()[1:] == [
        "listed: zone txt.bl.lab.test, address 127.0.28.21, code 127.0.0.2, reason: Listed by "
        "the lab: spam trap hits see http://bl.lab.test/21",
        "listed: zone txt.bl.lab.test, address 2001:db8:28::21, code 127.0.0.3, reason: lab "
        "IPv6 listing",
        "unusable: zone error.bl.lab.test: error answer 127.255.255.254",
        "asked 2 zones about 3 subjects: 127.0.28.21, 2001:db8:28::21, 127.0.28.22",
    ]


@pytest.mark.lab
def test_lab_zone_that_never_answers_is_a_note_within_the_query_cap(run_plugin, lab):
    started = time.monotonic()
    run = run_lab(run_plugin, lab, "-D", TARGET_DOMAIN, "--zone", TIMEOUT_ZONE,
                  "--zone", "clean.bl.lab.test", timeout="2")
    elapsed = time.monotonic() - started
    assert status(run) == ("DNSBL OK - 3 addresses not listed on 1 zone; 1 zone unusable: "
                           f"{TIMEOUT_ZONE} (timed out) | " + perf(0, 2, 1))
    assert run.exitcode == 0
    assert elapsed < 1.5  # default per-query cap: half of -t
    strict = run_lab(run_plugin, lab, "--ip", "127.0.28.22", "--zone", TIMEOUT_ZONE,
                     "--strict", "--query-timeout", "0.3")
    assert strict.exitcode == 1
    assert status(strict) == (f"DNSBL WARNING - no usable zone; 1 zone unusable: {TIMEOUT_ZONE} "
                              "(timed out) | "
                              + perf(0, 1, 1))


@pytest.mark.lab
@pytest.mark.parametrize("concurrency, unanswered, unusable", [
    # one at a time, the dead zone's first query spends the budget: nothing else is asked
    ("1", 24, 0),
    # concurrently, the other zones answer meanwhile (three listings, broken and parked
    # unusable); only the dead zone's 4 queries are cut off
    ("16", 4, 2),
])
def test_lab_deadline_holds_whatever_the_number_of_zones(run_plugin, lab, concurrency,
                                                          unanswered, unusable):
    zones = []
    for name in ["txt", "second", "clean", "broken", "parked"]:
        zones += ["--zone", f"{name}.bl.lab.test"]
    started = time.monotonic()
    run = run_lab(run_plugin, lab, "-D", TARGET_DOMAIN, "--zone", TIMEOUT_ZONE, *zones,
                  "--query-timeout", "30", "--concurrency", concurrency, timeout="1.5")
    elapsed = time.monotonic() - started
    assert elapsed < 1.5 + 0.5
    # Cut off by -t, not by --query-timeout: the run did not finish, and no zone is
    # blamed for it (a healthy zone is never reported "timed out" for lack of time).
    assert run.first_line.startswith("DNSBL CRITICAL - "), run.output
    if not unusable:  # (with three listings first, the line is cut before the reason)
        assert (f"timeout after 1.5s: {unanswered} of 24 blocklist queries not answered in "
                "time (raise -t or --concurrency)") in run.first_line
    assert "(timed out)" not in run.first_line and "not listed" not in run.first_line
    assert run.perfdata["queries_unanswered"] == str(unanswered)
    assert run.perfdata["zones_unusable"] == str(unusable)
    assert run.exitcode == 2
    warn = run_lab(run_plugin, lab, "--ip", "127.0.28.22", "--zone", TIMEOUT_ZONE,
                   "--query-timeout", "30", "--unreachable-state", "warning", timeout="1")
    assert warn.exitcode == 1, warn.output
    assert warn.first_line.startswith("DNSBL WARNING - timeout after 1s: 2 of 2 blocklist")


@pytest.mark.lab
def test_lab_very_verbose_lists_every_query(run_plugin, lab):
    run = run_lab(run_plugin, lab, "--ip", "127.0.28.21", "--zone", "second.bl.lab.test",
                  "--zone", "error.bl.lab.test=127.255.255.254", "-vv")
    lines = [re.sub(r"\[\d+ ms\]", "[T]", x) for x in run.output.splitlines()]
    assert lines[-4:] == [
        "  1.0.0.127.second.bl.lab.test: clean [T]",
        "  21.28.0.127.second.bl.lab.test: listed 127.0.0.4 [T]",
        "  1.0.0.127.error.bl.lab.test: error answer 127.255.255.254 [T]",
        "  21.28.0.127.error.bl.lab.test: error answer 127.255.255.254 [T]",
    ]
