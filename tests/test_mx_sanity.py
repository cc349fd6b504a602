"""check_mx_sanity: Context/Summary units and end-to-end runs against the lab NSD."""

from __future__ import annotations

import json
import re
import time

import nagiosplugin
import pytest
from nagiosplugin.state import Critical, Ok, Warn

from check_smtp_posture import targets
from check_smtp_posture.nagios.contexts import MxContext
from check_smtp_posture.plugins import check_mx_sanity as mx
from check_smtp_posture.plugins.check_mx_sanity import AddressFact, ChangeFact, MxFacts, main
from tests.lab.mxlab import MX_DOMAIN

PERF = ("address_count={a};;;0 dns_time={t}s;;;0 fcrdns_failures={f};;;0 "
        "ipv6_address_count={v6};;;0 mx_count={m};;;0")


# --------------------------------------------------------------------------- units


def good_facts(kind=targets.MX, *, duplicates=(), authenticated=None, change=None,
               problem="") -> MxFacts:
    res = targets.Resolution("example", kind, (
        targets.Target(10, "mx1.example", ("192.0.2.1", "2001:db8::1"), problem=problem),
        targets.Target(20, "mx2.example", ("192.0.2.2",))),
        duplicates=duplicates, authenticated=authenticated)
    return MxFacts(res, [AddressFact(a, "global", ("mx.example",), True) for a in res.addresses],
                   change=change)


def test_scope_context_warns_unless_allowed():
    facts = good_facts()
    facts.addresses[2].scope = "loopback"
    assert mx.AddressScopeContext().judge(facts) == (
        Warn, "non-public address 192.0.2.2 (loopback)")
    assert mx.AddressScopeContext(allow_private=True).judge(facts) == (Ok, "")


def test_fcrdns_context_state_is_configurable():
    facts = good_facts()
    facts.addresses[0].fcrdns = False
    facts.addresses[0].detail = "no PTR"
    assert mx.FcrdnsContext().judge(facts) == (Warn, "no FCrDNS for 192.0.2.1 (no PTR)")
    assert mx.FcrdnsContext(state="critical").judge(facts)[0] == Critical
    assert mx.FcrdnsContext(state="ok").judge(facts)[0] == Ok
    # an undecided FCrDNS (lookup failed) is not a failure
    facts.addresses[0].fcrdns = None
    assert mx.FcrdnsContext().judge(facts) == (Ok, "")


def test_ipv6_redundancy_duplicates_dnssec_contexts():
    v4 = good_facts()
    del v4.addresses[1]
    assert mx.Ipv6Context(require=True).judge(v4) == (Critical, "no MX reachable over IPv6")
    assert mx.Ipv6Context().judge(v4) == (Ok, "")
    assert mx.Ipv6Context(require=True).judge(good_facts()) == (Ok, "")
    assert mx.RedundancyContext(min_mx=3, min_addresses=4).judge(good_facts()) == (
        Warn, "2 MX, fewer than 3; 3 distinct addresses, fewer than 4")
    assert mx.RedundancyContext(min_mx=2, min_addresses=3).judge(good_facts()) == (Ok, "")
    assert mx.DuplicatesContext().judge(good_facts(duplicates=("mx1.example",))) == (
        Warn, "duplicate MX target mx1.example")
    assert mx.DnssecContext().judge(good_facts()) == (Ok, "")
    assert mx.DnssecContext(require=True).judge(good_facts(authenticated=True)) == (
        Ok, "DNSSEC authenticated")
    assert mx.DnssecContext(require=True).judge(good_facts(authenticated=False)) == (
        Critical, "answer not DNSSEC-authenticated")
    assert mx.DnssecContext().judge(good_facts(authenticated=False)) == (
        Ok, "answer not DNSSEC-authenticated")


def test_changes_context():
    ctx = mx.ChangesContext()
    assert ctx.judge(good_facts()) == (Ok, "")
    assert ctx.judge(good_facts(change=ChangeFact("state", recorded=True))) == (
        Ok, "MX set recorded as baseline")
    assert ctx.judge(good_facts(change=ChangeFact("state", ("a",), ("b", "c")))) == (
        Warn, "MX set changed: added a; missing b, c")
    assert ctx.judge(good_facts(change=ChangeFact("expected", (), ("b",)))) == (
        Warn, "MX set differs from expected: missing b")


def _check_for(facts):
    class Fixed(nagiosplugin.Resource):
        name = "MX_SANITY"

        def probe(self):
            yield nagiosplugin.Metric("mx", facts.resolution, context="mx")
            for ctx in mx.CONTEXT_NAMES:
                yield nagiosplugin.Metric(ctx, facts, context=ctx)

    ctxs = [MxContext(), mx.AddressScopeContext(), mx.DuplicatesContext(),
            mx.FcrdnsContext(), mx.Ipv6Context(), mx.RedundancyContext(), mx.ChangesContext(),
            mx.DnssecContext()]
    check = nagiosplugin.Check(Fixed(), *ctxs, mx.MxSummary(1))
    check()
    return check


def test_summary_ok_and_problem_order():
    check = _check_for(good_facts(authenticated=True))
    assert check.summary_str == ("example: 2 MX, 3 addresses (1 IPv6), FCrDNS ok; "
                                 "DNSSEC authenticated")
    facts = good_facts(duplicates=("mx2.example",), problem=targets.TARGET_NXDOMAIN)
    check = _check_for(facts)
    # the worst state comes first
    assert check.summary_str == ("example: mx1.example: NXDOMAIN; "
                                 "duplicate MX target mx2.example")
    verbose = check.verbose_str
    assert "  10 mx1.example [NXDOMAIN]" in verbose
    assert "      192.0.2.1: FCrDNS ok" in verbose


def test_address_scope():
    assert mx.address_scope("127.0.28.1") == "loopback"
    assert mx.address_scope("10.1.2.3") == "private"
    assert mx.address_scope("fe80::1") == "link-local"
    assert mx.address_scope("100.64.0.1") == "reserved"  # shared space, not global
    assert mx.address_scope("8.8.8.8") == "global"
    assert mx.address_scope("2a00:1450:4001::1") == "global"


# --------------------------------------------------------------------------- usage


@pytest.mark.parametrize("argv", [
    [],
    ["-D", "x.test", "--expect-mx", "a", "--state-file", "/tmp/x"],
    ["-D", "x.test", "--accept-changes"],
    ["-D", "x.test", "-4", "--require-ipv6"],
    ["-D", "x.test", "--min-mx", "-1"],
    ["-D", "x.test", "-w", "nonsense"],
    ["-D", "bad name"],
    ["-D", ".."],
    ["-D", "a..b"],
    ["-D", "a" * 64 + ".test"],
])
def test_usage_errors_exit_3_with_usage_on_stdout(run_plugin, argv):
    run = run_plugin(main, argv)
    assert run.exitcode == 3
    assert run.first_line.startswith("usage: check_mx_sanity")


# --------------------------------------------------------------------------- lab


@pytest.fixture(scope="module")
def lab(lab_dns):
    """The shared lab NSD; it serves the MX zones (tests/lab/mxlab.py)."""
    return lab_dns


def run_lab(run_plugin, lab, name, *extra, allow_private=True):
    argv = ["-D", f"{name}.{MX_DOMAIN}", "--dns-server", lab.server_arg, "-t", "5"]
    if allow_private:
        argv.append("--allow-private")
    return run_plugin(main, argv + list(extra))


def status(run) -> str:
    """The first line without the dns_time value, which varies."""
    return re.sub(r"dns_time=[0-9.]+s;", "dns_time=T;", run.first_line)


def perf(a, v6, m, f=0):
    return PERF.format(a=a, v6=v6, m=m, f=f, t="T").replace("Ts", "T")


@pytest.mark.lab
@pytest.mark.parametrize("name, extra, exitcode, line", [
    ("good", [], 0, "MX_SANITY OK - good.mx.lab.test: 2 MX, 3 addresses (1 IPv6), FCrDNS ok"
     " | " + perf(3, 1, 2)),
    ("nullmx", [], 0, "MX_SANITY OK - null MX (RFC 7505): nullmx.mx.lab.test accepts no mail"
     " | " + perf(0, 0, 0)),
    ("nullmx", ["--expect-mail"], 2, "MX_SANITY CRITICAL - null MX (RFC 7505): "
     "nullmx.mx.lab.test accepts no mail | " + perf(0, 0, 0)),
    ("mixed", [], 2, "MX_SANITY CRITICAL - mixed.mx.lab.test: null MX mixed with other MX "
     "records | " + perf(2, 1, 1)),
    ("implicit", [], 1, "MX_SANITY WARNING - implicit.mx.lab.test: no MX, implicit MX from "
     "address records | " + perf(1, 0, 1)),
    ("bare", [], 2, "MX_SANITY CRITICAL - bare.mx.lab.test: no MX and no address records | "
     + perf(0, 0, 0)),
    ("nxdomain", [], 2, "MX_SANITY CRITICAL - nxdomain.mx.lab.test does not exist (NXDOMAIN)"
     " | " + perf(0, 0, 0)),
    ("literal", [], 2, "MX_SANITY CRITICAL - literal.mx.lab.test: 127.0.28.11: IP literal | "
     + perf(0, 0, 1)),
    ("cname", [], 2, "MX_SANITY CRITICAL - cname.mx.lab.test: alias.cname.mx.lab.test: CNAME "
     "(to mx1.good.mx.lab.test) | " + perf(2, 1, 1)),
    ("noaddr", [], 2, "MX_SANITY CRITICAL - noaddr.mx.lab.test: host.noaddr.mx.lab.test: "
     "no address | " + perf(0, 0, 1)),
    ("dangling", [], 2, "MX_SANITY CRITICAL - dangling.mx.lab.test: gone.dangling.mx.lab.test:"
     " NXDOMAIN | " + perf(0, 0, 1)),
    ("dup", [], 1, "MX_SANITY WARNING - dup.mx.lab.test: duplicate MX target "
     "mx1.good.mx.lab.test | " + perf(2, 1, 1)),
    ("nofcrdns", [], 1, "MX_SANITY WARNING - nofcrdns.mx.lab.test: no FCrDNS for 127.0.28.14 "
     "(PTR elsewhere.mx.lab.test does not resolve back), 127.0.28.16 (no PTR) | "
     + perf(2, 0, 2, f=2)),
    ("nofcrdns", ["--fcrdns", "critical"], 2, "MX_SANITY CRITICAL - nofcrdns.mx.lab.test: no "
     "FCrDNS for 127.0.28.14 (PTR elsewhere.mx.lab.test does not resolve back), 127.0.28.16 "
     "(no PTR) | " + perf(2, 0, 2, f=2)),
    ("v4only", ["--require-ipv6"], 2, "MX_SANITY CRITICAL - v4only.mx.lab.test: no MX "
     "reachable over IPv6 | " + perf(1, 0, 1)),
    ("good", ["--require-ipv6"], 0, "MX_SANITY OK - good.mx.lab.test: 2 MX, 3 addresses "
     "(1 IPv6), FCrDNS ok | " + perf(3, 1, 2)),
    ("good", ["-4"], 0, "MX_SANITY OK - good.mx.lab.test: 2 MX, 2 addresses (0 IPv6), "
     "FCrDNS ok | " + perf(2, 0, 2)),
    ("good", ["--min-mx", "3"], 1, "MX_SANITY WARNING - good.mx.lab.test: 2 MX, fewer than 3"
     " | " + perf(3, 1, 2)),
    ("samehost", ["--min-addresses", "2"], 1, "MX_SANITY WARNING - samehost.mx.lab.test: "
     "1 distinct address, fewer than 2 | " + perf(1, 0, 2)),
    ("good", ["--expect-mx", "mx1.good.mx.lab.test,mx3.good.mx.lab.test"], 1,
     "MX_SANITY WARNING - good.mx.lab.test: MX set differs from expected: added "
     "mx2.good.mx.lab.test; missing mx3.good.mx.lab.test | " + perf(3, 1, 2)),
    ("good", ["--expect-mx", "MX2.good.mx.lab.test.,mx1.good.mx.lab.test"], 0,
     "MX_SANITY OK - good.mx.lab.test: 2 MX, 3 addresses (1 IPv6), FCrDNS ok | "
     + perf(3, 1, 2)),
    ("good", ["--dnssec"], 0, "MX_SANITY OK - good.mx.lab.test: 2 MX, 3 addresses (1 IPv6), "
     "FCrDNS ok; answer not DNSSEC-authenticated | " + perf(3, 1, 2)),
    ("good", ["--require-dnssec"], 2, "MX_SANITY CRITICAL - good.mx.lab.test: answer not "
     "DNSSEC-authenticated | " + perf(3, 1, 2)),
])
def test_lab_cases(run_plugin, lab, name, extra, exitcode, line):
    run = run_lab(run_plugin, lab, name, *extra)
    assert status(run) == line, run.output
    assert run.exitcode == exitcode


@pytest.mark.lab
def test_lab_private_addresses_warn_without_allow_private(run_plugin, lab):
    run = run_lab(run_plugin, lab, "private", allow_private=False)
    assert run.exitcode == 1
    assert status(run) == ("MX_SANITY WARNING - private.mx.lab.test: non-public address "
                           "10.28.0.1 (private) | " + perf(1, 0, 1))
    run = run_lab(run_plugin, lab, "good", allow_private=False)
    assert run.exitcode == 1
    assert "127.0.28.11 (loopback), 2001:db8:28::11 (private)" in run.first_line


@pytest.mark.lab
def test_lab_verbose_lists_targets_and_addresses(run_plugin, lab):
    run = run_lab(run_plugin, lab, "nofcrdns", "-v")
    lines = run.output.splitlines()
    assert lines[1:] == [
        "warning: no FCrDNS for 127.0.28.14 (PTR elsewhere.mx.lab.test does not resolve "
        "back), 127.0.28.16 (no PTR)",
        "MX of nofcrdns.mx.lab.test: mx",
        "  10 mx.nofcrdns.mx.lab.test",
        "      127.0.28.14 loopback: FCrDNS FAILED (PTR elsewhere.mx.lab.test does not "
        "resolve back)",
        "  20 mx2.nofcrdns.mx.lab.test",
        "      127.0.28.16 loopback: FCrDNS FAILED (no PTR)",
    ]


@pytest.mark.lab
def test_lab_state_file_warns_until_accepted(run_plugin, lab, tmp_path):
    state = tmp_path / "mx.state"
    args = ["--state-file", state]
    first = run_lab(run_plugin, lab, "moving", *args)
    assert first.exitcode == 0
    assert first.first_line.startswith("MX_SANITY OK - moving.mx.lab.test: 1 MX, 2 addresses "
                                       "(1 IPv6), FCrDNS ok; MX set recorded as baseline | ")
    assert json.loads(state.read_text()) == {"mx:moving.mx.lab.test": ["mx1.good.mx.lab.test"]}
    original = lab.zones[f"{MX_DOMAIN}."]
    lab.zones[f"{MX_DOMAIN}."] = original.replace(
        "moving          MX 10 mx1.good",
        "moving          MX 20 mx2.good\nmoving          MX 30 mx.v4only")
    lab.reload()
    try:
        for _ in range(2):  # stays WARNING on every run until acknowledged
            run = run_lab(run_plugin, lab, "moving", *args)
            assert run.exitcode == 1, run.output
            assert run.first_line.startswith(
                "MX_SANITY WARNING - moving.mx.lab.test: MX set changed: added "
                "mx.v4only.mx.lab.test, mx2.good.mx.lab.test; missing mx1.good.mx.lab.test | ")
        accept = run_lab(run_plugin, lab, "moving", *args, "--accept-changes")
        assert accept.exitcode == 0
        assert "MX set recorded as baseline" in accept.first_line
        after = run_lab(run_plugin, lab, "moving", *args)
        assert after.exitcode == 0
        assert "recorded" not in after.first_line
    finally:
        lab.zones[f"{MX_DOMAIN}."] = original
        lab.reload()


@pytest.mark.lab
def test_lab_broken_state_file_is_unknown(run_plugin, lab, tmp_path):
    state = tmp_path / "missing-dir" / "mx.state"
    run = run_lab(run_plugin, lab, "good", "--state-file", state)
    assert run.exitcode == 3
    assert run.first_line.startswith(f"MX_SANITY UNKNOWN - good.mx.lab.test: state file {state}")


@pytest.mark.lab
def test_lab_corrupt_state_file_is_a_warning_and_started_afresh(run_plugin, lab, tmp_path):
    state = tmp_path / "mx.state"
    state.write_text("{not json")
    run = run_lab(run_plugin, lab, "good", "--state-file", state)
    assert run.exitcode == 1, run.output
    assert (f"state file {state} was corrupt and has been started afresh"
            in run.first_line)
    assert json.loads(state.read_text()) == {
        "mx:good.mx.lab.test": ["mx1.good.mx.lab.test", "mx2.good.mx.lab.test"]}
    assert run_lab(run_plugin, lab, "good", "--state-file", state).exitcode == 0


@pytest.mark.lab
def test_lab_state_file_locked_by_another_run_is_unknown_within_the_timeout(run_plugin, lab,
                                                                           tmp_path):
    import fcntl

    state = tmp_path / "mx.state"
    with open(state, "w") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)  # another run, stuck
        started = time.monotonic()
        run = run_lab(run_plugin, lab, "good", "--state-file", state, "-t", "1")
        elapsed = time.monotonic() - started
    assert elapsed < 1.5
    assert run.exitcode == 3, run.output
    assert run.first_line.startswith(
        f"MX_SANITY UNKNOWN - good.mx.lab.test: state file {state} is locked by another run")
