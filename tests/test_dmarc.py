"""check_dmarc and the DMARC library (RFC 9989): the record grammar, the tree walk, the
report destinations, and the plugin end to end against the lab NSD (tests/lab/dmarclab.py)
and the lab Postfix (endpoint dmarcreports)."""

from __future__ import annotations

import functools
import json
import re

import pytest

from check_smtp_posture import dmarc
from check_smtp_posture.plugins.check_dmarc import main
from tests.conftest import run_main
from tests.lab.dmarclab import GONE_ADDRESS
from tests.lab.world import DNS_SERVER_ARG

DAY = 86400
NOW = 1_780_000_000  # the injected clock: 2026-05-28


# -- the library, no DNS -----------------------------------------------------------


@pytest.mark.parametrize("domain, walk", [
    ("example.com", ["example.com", "com"]),
    ("a.b.example.com", ["a.b.example.com", "b.example.com", "example.com", "com"]),
    # more than 8 labels: after the domain itself, straight to the 7 rightmost
    ("1.2.3.4.5.6.7.8.9.10", ["1.2.3.4.5.6.7.8.9.10", "4.5.6.7.8.9.10", "5.6.7.8.9.10",
                              "6.7.8.9.10", "7.8.9.10", "8.9.10", "9.10", "10"]),
])
def test_tree_walk_asks_at_most_eight_names(domain, walk):
    assert dmarc.tree_walk(domain) == walk
    assert len(dmarc.tree_walk(domain)) <= dmarc.MAX_QUERIES


def test_record_every_tag():
    record = dmarc.parse_record("v=DMARC1; p=reject; sp=quarantine; np=none; adkim=s; "
                                "aspf=r; fo=0:1:d:s; psd=n; t=n; "
                                "rua=mailto:a@example.org,mailto:b%40x@example.net!10m; "
                                "ruf=https://example.org/r;")
    assert record.errors == [] and record.unknown == [] and record.removed == []
    assert (record.p, record.sp, record.np, record.psd, record.testing) == \
        ("reject", "quarantine", "none", "n", False)
    assert [u.address for u in record.rua] == ["a@example.org", "b@x@example.net"]
    assert record.rua[1].size == "10m"
    assert [(u.scheme, u.address) for u in record.ruf] == [("https", "")]


def test_record_defaults_sp_from_p_and_np_from_sp():
    record = dmarc.parse_record("v=DMARC1; p=quarantine; sp=reject")
    assert (record.p, record.sp, record.np) == ("quarantine", "reject", "reject")
    # p is no longer required (RFC 9989 §4.7): without it, none
    assert dmarc.parse_record("v=DMARC1; rua=mailto:a@example.org").p == "none"


@pytest.mark.parametrize("text, errors", [
    ("v=DMARC1; p=rejekt", ["p=rejekt is not one of none, quarantine, reject"]),
    ("v=DMARC1; p=reject; p=none", ["tag p given twice"]),
    ("v=DMARC1; p=reject; rua", ["'rua' is not tag=value"]),
    ("v=DMARC1; p=reject; fo=2", ["fo=2 is not a list of 0, 1, d, s"]),
    ("v=DMARC1; p=reject; t=maybe", ["t=maybe is not one of y, n"]),
    ("v=DMARC1; p=reject; psd=x", ["psd=x is not one of y, n, u"]),
    ("v=DMARC1; p=reject; rua=a@example.org", ["rua: 'a@example.org' is not a URI"]),
    ("v=DMARC1; p=reject; rua=mailto:nobody", ["rua: 'mailto:nobody' is not a mailto: URI "
                                               "with an address"]),
    ("v=DMARC1; p=reject; rua=mailto:a@example.org!big", ["rua: bad size suffix in "
                                                          "'mailto:a@example.org!big'"]),
    ("v=DMARC1; p=rej\ufffdct", ["p= holds bytes that are not UTF-8"]),
    # an address that would break the output line or inject an SMTP command at RCPT
    ("v=DMARC1; p=reject; rua=mailto:a%0D%0ADATA@example.org",
     ["rua: 'mailto:a%0D%0ADATA@example.org' is not a mailto: URI with an address"]),
    ("v=DMARC1; p=reject; rua=mailto:a%20b@example.org",
     ["rua: 'mailto:a%20b@example.org' is not a mailto: URI with an address"]),
    ("v=DMARC1; p=reject; rua=mailto:a%3Eb@example.org",
     ["rua: 'mailto:a%3Eb@example.org' is not a mailto: URI with an address"]),
])
def test_record_syntax_errors(text, errors):
    assert dmarc.parse_record(text).errors == errors


def test_record_removed_and_unknown_tags_are_notes():
    record = dmarc.parse_record("v=DMARC1; p=reject; pct=0; rf=afrf; ri=3600; bimi=x")
    assert record.valid
    assert [tag for tag, _value, _note in record.removed] == ["pct", "rf", "ri"]
    assert "RFC 7489 receivers apply the policy to that percentage" in record.removed[0][2]
    assert record.unknown == ["bimi"]


@pytest.mark.parametrize("text, dmarc_record", [
    ("v=DMARC1; p=reject", True), ("v=DMARC1", True), ("v = DMARC1 ;p=none", True),
    ("v=dmarc1; p=reject", False), ("v=DMARC10; p=reject", False),
    (" p=reject; v=DMARC1", False), ("v=spf1 -all", False),
])
def test_only_records_that_begin_with_v_dmarc1_count(text, dmarc_record):
    assert dmarc.is_dmarc(text) is dmarc_record


def test_authorisation_name():
    assert dmarc.authorisation_name("Example.COM.", "reports.example.net") == \
        "example.com._report._dmarc.reports.example.net"


# -- the plugin against the lab NSD ------------------------------------------------


@pytest.fixture(scope="module")
def dmarc_dns(lab_dns):
    """The shared lab NSD, which serves the dmarclab zone (tests/lab/dmarclab.py)."""
    assert lab_dns.server_arg == DNS_SERVER_ARG
    return lab_dns


def run(*args, now=None):
    plugin = main if now is None else functools.partial(main, now=lambda: now)
    return run_main(plugin, ["--dns-server", DNS_SERVER_ARG, *args])


def stable(line: str) -> str:
    """The first line with the (timing-dependent) dns_time value blanked."""
    return re.sub(r"dns_time=[0-9.]+s", "dns_time=Xs", line)


def perf(queries=2, rank=None) -> str:
    text = f"dns_queries={queries};;;0 dns_time=Xs;;;0"
    return text + (f" policy_rank={rank};;;0;2" if rank is not None else "")


@pytest.mark.lab
@pytest.mark.parametrize("domain, code, summary, perfdata", [
    ("good", 0, "good.dmarclab: policy reject, non-existent subdomains reject, "
                "2 report destinations", perf(rank=2)),
    ("wild", 0, "wild.dmarclab: policy quarantine, non-existent subdomains quarantine, "
                "1 report destination", perf(rank=1)),
    # the tree walk: nothing at a.b.tree and b.tree, the record two labels up
    ("a.b.tree", 0, "a.b.tree.dmarclab: policy quarantine, non-existent subdomains "
                    "reject (from _dmarc.tree.dmarclab)", perf(4, 1)),
    # a public suffix's record (psd=y) applies below it
    ("sub.org.psd", 0, "sub.org.psd.dmarclab: policy reject, non-existent subdomains "
                       "reject (from _dmarc.psd.dmarclab)", perf(3, 2)),
    ("testing", 0, "testing.dmarclab: policy reject, non-existent subdomains reject, "
                   "t=y (testing)", perf(rank=2)),
    ("legacy", 0, "legacy.dmarclab: policy quarantine, non-existent subdomains quarantine; "
                  "removed tag pct=50, rf=afrf, ri=3600 (RFC 9989); unknown tag foo ignored",
     perf(rank=1)),
    ("none", 1, "none.dmarclab: policy none (monitoring only)", perf(rank=0)),
    ("nop", 1, "nop.dmarclab: policy none (monitoring only)", perf(rank=0)),
    ("unauth", 1, "unauth.dmarclab: report destination agg@reports.dmarclab not authorised "
                  "(no v=DMARC1 at unauth.dmarclab._report._dmarc.reports.dmarclab)",
     perf(rank=2)),
    ("nullmx", 1, "nullmx.dmarclab: report destination dmarc@nomail.dmarclab not authorised "
                  "(no v=DMARC1 at nullmx.dmarclab._report._dmarc.nomail.dmarclab); report "
                  "domain nomail.dmarclab: null MX (RFC 7505): nomail.dmarclab accepts no "
                  "mail", perf(rank=2)),
    ("nodmarc", 2, "no DMARC record for nodmarc.dmarclab (2 tree-walk queries)", perf()),
    # v=dmarc1 is not v=DMARC1 (case-sensitive, RFC 9989 §4.7)
    ("lower", 2, "no DMARC record for lower.dmarclab (2 tree-walk queries); "
                 "_dmarc.lower.dmarclab has 'v=dmarc1; p=reject', which receivers discard "
                 "(it must begin with v=DMARC1)", perf()),
    ("syntax", 2, "syntax.dmarclab: _dmarc.syntax.dmarclab: p=rejekt is not one of none, "
                  "quarantine, reject; adkim=x is not one of r, s", perf()),
    ("novalue", 2, "novalue.dmarclab: _dmarc.novalue.dmarclab: 'rua' is not tag=value",
     perf()),
    ("baduri", 2, "baduri.dmarclab: _dmarc.baduri.dmarclab: rua: 'dmarc@good.dmarclab' is "
                  "not a URI", perf()),
    ("dup", 2, "dup.dmarclab: _dmarc.dup.dmarclab has 2 DMARC records (receivers apply "
               "none)", perf()),
])
def test_policies_and_records(dmarc_dns, domain, code, summary, perfdata):
    result = run("-D", f"{domain}.dmarclab")
    word = ["OK", "WARNING", "CRITICAL"][code]
    assert result.exitcode == code, result.output
    assert stable(result.first_line) == f"DMARC {word} - {summary} | {perfdata}"


@pytest.mark.lab
def test_missing_and_none_states_follow_the_options(dmarc_dns):
    assert run("-D", "nodmarc.dmarclab", "--missing", "warning").exitcode == 1
    assert run("-D", "nodmarc.dmarclab", "--missing", "ok").exitcode == 0
    accepted = run("-D", "none.dmarclab", "--accept-none")
    assert accepted.exitcode == 0, accepted.output
    assert accepted.first_line.startswith("DMARC OK - none.dmarclab: policy none, "
                                          "non-existent subdomains none |")


@pytest.mark.lab
def test_long_output_shows_the_walk_and_the_destinations(dmarc_dns):
    result = run("-D", "a.b.tree.dmarclab", "-v")
    assert result.output.splitlines()[1:] == [
        "tree walk: _dmarc.a.b.tree.dmarclab no record (NXDOMAIN)",
        "tree walk: _dmarc.b.tree.dmarclab no record (NXDOMAIN)",
        "tree walk: _dmarc.tree.dmarclab 1 DMARC record",
        "tree walk: _dmarc.dmarclab no record (NXDOMAIN)",
        "organisational domain: tree.dmarclab",
        "record: v=DMARC1; p=reject; sp=quarantine; np=reject"]
    good = run("-D", "good.dmarclab", "-v").output.splitlines()
    assert good[-2:] == ["rua/ruf dmarc@good.dmarclab: inside the organisational domain",
                         "rua agg@reports.dmarclab: authorised"]
    # a psd=y record makes the name one label below it the organisational domain
    assert "organisational domain: org.psd.dmarclab" in run("-D", "sub.org.psd.dmarclab",
                                                            "-v").output


@pytest.mark.lab
def test_dns_failure_is_never_no_record():
    """A walk that cannot ask its last name cannot say there is no record."""
    result = run_main(main, ["-D", "nodmarc.dmarclab", "--dns-server", "127.0.28.98:53",
                             "-t", "2", "--query-timeout", "0.3",
                             "--unreachable-state", "warning"])
    assert result.exitcode == 1, result.output
    assert result.first_line.startswith("DMARC WARNING - nodmarc.dmarclab: DMARC lookup of "
                                        "_dmarc.nodmarc.dmarclab failed: TIMEOUT")
    assert "no DMARC record" not in result.output


@pytest.fixture
def dropping_dns(dmarc_dns):
    """A forwarder to the lab NSD that never answers _dmarc.dmarclab, the walk's last name."""
    from tests.lab.authdns import free_udp_port
    from tests.lab.dnsdelay import DelayingDns

    forwarder = DelayingDns(("127.0.28.97", free_udp_port("127.0.28.97")),
                            (dmarc_dns.address, dmarc_dns.port), drop=["_dmarc.dmarclab"])
    with forwarder:
        yield forwarder.server_arg


@pytest.mark.lab
def test_a_walk_cut_short_by_a_failed_lookup_is_unreachable_not_missing(dropping_dns):
    """_dmarc.nodmarc.dmarclab has no record; _dmarc.dmarclab never answers: the walk
    cannot say that the domain has none."""
    result = run_main(main, ["-D", "nodmarc.dmarclab", "--dns-server", dropping_dns,
                             "-t", "2", "--query-timeout", "0.5"])
    assert result.exitcode == 2, result.output
    assert result.first_line.partition(" | ")[0] == (
        "DMARC CRITICAL - nodmarc.dmarclab: DMARC lookup of _dmarc.dmarclab failed: TIMEOUT "
        "(no answer within 0.5s)")
    # the record two labels up is found before the silent name: the policy is known, and
    # only the organisational domain is left undecided (said in the long output)
    tree = run_main(main, ["-D", "a.b.tree.dmarclab", "--dns-server", dropping_dns,
                           "-t", "2", "--query-timeout", "0.5", "-v"])
    assert tree.exitcode == 0, tree.output
    assert "organisational domain: tree.dmarclab (walk stopped at _dmarc.dmarclab: " \
           "TIMEOUT (no answer within 0.5s))" in tree.output


# -- report destinations probed at RCPT: the lab Postfix ---------------------------


@pytest.mark.lab
def test_probe_destinations_accepted_and_refused(dmarc_dns, lab_postfix):
    mark = lab_postfix.mark()
    good = run("-D", "good.dmarclab", "--probe-destinations", "--helo-name", "mon.posture.test")
    assert good.exitcode == 0, good.output
    gone = run("-D", "gone.dmarclab", "--probe-destinations", "--helo-name", "mon.posture.test")
    assert gone.exitcode == 1, gone.output
    assert stable(gone.first_line) == (
        f"DMARC WARNING - gone.dmarclab: report address {GONE_ADDRESS} refused by "
        f"reportmx.dmarclab: 550 5.1.1 <{GONE_ADDRESS}>: Recipient address rejected: report "
        f"mailbox gone | {perf(rank=2)}")
    # what reached the server: MAIL and RCPT, never DATA
    lab_postfix.wait_for_log(r"dmarcreports/smtpd.*NOQUEUE: reject: RCPT .*gone@", since=mark)
    sessions = lab_postfix.wait_for_disconnects(3, mark, endpoint="dmarcreports")
    assert len(sessions) == 3, sessions  # good: two addresses, gone: one
    assert all(lab_postfix.probe_only(s) for s in sessions), sessions
    assert lab_postfix.queued(mark) == []


# -- the policy's history: --state-file --------------------------------------------


def seed(path, domain, baseline=None, none_since=None):
    entry = {"none_since": none_since}
    if baseline:
        entry["baseline"] = dict(baseline, seen=NOW - 10 * DAY)
    path.write_text(json.dumps({f"dmarc:{domain}": entry}))


def stored(path, domain):
    return json.loads(path.read_text())[f"dmarc:{domain}"]


REJECT = {"p": "reject", "sp": "reject", "np": "reject", "t": False}


@pytest.mark.lab
def test_first_run_records_the_baseline(dmarc_dns, tmp_path):
    path = tmp_path / "dmarc.json"
    result = run("-D", "quar.dmarclab", "--state-file", path, now=NOW)
    assert result.exitcode == 0, result.output
    assert stable(result.first_line) == (
        "DMARC OK - quar.dmarclab: policy quarantine, non-existent subdomains quarantine; "
        "policy recorded as baseline | dns_queries=2;;;0 dns_time=Xs;;;0 "
        "none_age_days=0d;;;0 policy_rank=1;;;0;2")
    assert stored(path, "quar.dmarclab") == {
        "baseline": {"p": "quarantine", "sp": "quarantine", "np": "quarantine", "t": False,
                     "seen": NOW}, "none_since": None}
    again = run("-D", "quar.dmarclab", "--state-file", path, now=NOW + DAY)
    assert again.exitcode == 0 and "baseline" not in again.first_line, again.output


@pytest.mark.lab
def test_downgrade_warns_until_acknowledged(dmarc_dns, tmp_path):
    path = tmp_path / "dmarc.json"
    seed(path, "quar.dmarclab", REJECT)
    warning = ("DMARC WARNING - quar.dmarclab: policy downgraded since 2026-05-18 20:26Z: "
               "p reject -> quarantine, sp reject -> quarantine, np reject -> quarantine")
    for day in (0, 1):  # the baseline stays: the warning stays
        result = run("-D", "quar.dmarclab", "--state-file", path, now=NOW + day * DAY)
        assert result.exitcode == 1, result.output
        assert result.first_line.partition(" | ")[0] == warning
    acknowledged = run("-D", "quar.dmarclab", "--state-file", path, "--accept-changes",
                       now=NOW + 2 * DAY)
    assert acknowledged.exitcode == 0, acknowledged.output
    assert "policy recorded as baseline" in acknowledged.first_line
    assert stored(path, "quar.dmarclab")["baseline"]["p"] == "quarantine"
    assert run("-D", "quar.dmarclab", "--state-file", path, now=NOW + 3 * DAY).exitcode == 0


@pytest.mark.lab
def test_testing_flag_newly_set_is_a_downgrade(dmarc_dns, tmp_path):
    path = tmp_path / "dmarc.json"
    seed(path, "testing.dmarclab", REJECT)
    result = run("-D", "testing.dmarclab", "--state-file", path, now=NOW)
    assert result.exitcode == 1, result.output
    assert result.first_line.startswith("DMARC WARNING - testing.dmarclab: policy downgraded "
                                        "since 2026-05-18 20:26Z: t=y set (policy not "
                                        "applied) |")


@pytest.mark.lab
def test_an_upgrade_needs_no_acknowledgement(dmarc_dns, tmp_path):
    path = tmp_path / "dmarc.json"
    seed(path, "good.dmarclab", {"p": "none", "sp": "none", "np": "none", "t": True},
         none_since=NOW - 40 * DAY)
    result = run("-D", "good.dmarclab", "--state-file", path, now=NOW)
    assert result.exitcode == 0, result.output
    assert result.perfdata["none_age_days"] == "0d"
    assert stored(path, "good.dmarclab") == {"baseline": dict(REJECT, sp="quarantine",
                                                              seen=NOW), "none_since": None}


@pytest.mark.lab
@pytest.mark.parametrize("days, args, code, hint", [
    (0, (), 1, "none.dmarclab: policy none (monitoring only)"),
    (40, ("--accept-none",), 0, "none.dmarclab: policy none, non-existent subdomains none"),
    (40, ("--accept-none", "-w", "30", "-c", "90"), 1, "none.dmarclab: p=none for 40 days "
                                                       "(threshold outside range 0:30)"),
    (400, ("--accept-none", "-w", "30", "-c", "90"), 2, "none.dmarclab: p=none for 400 days "
                                                        "(threshold outside range 0:90)"),
])
def test_none_age(dmarc_dns, tmp_path, days, args, code, hint):
    path = tmp_path / "dmarc.json"
    seed(path, "none.dmarclab", {"p": "none", "sp": "none", "np": "none", "t": False},
         none_since=NOW - days * DAY - 60)
    result = run("-D", "none.dmarclab", "--state-file", path, *args, now=NOW)
    assert result.exitcode == code, result.output
    assert result.first_line.partition(" | ")[0].startswith(
        f"DMARC {['OK', 'WARNING', 'CRITICAL'][code]} - {hint}")
    assert result.perfdata["none_age_days"] == f"{days}d"
    assert stored(path, "none.dmarclab")["none_since"] == NOW - days * DAY - 60


@pytest.mark.lab
def test_none_age_starts_when_none_is_first_seen(dmarc_dns, tmp_path):
    path = tmp_path / "dmarc.json"
    first = run("-D", "none.dmarclab", "--state-file", path, "--accept-none", now=NOW)
    assert first.perfdata["none_age_days"] == "0d"
    later = run("-D", "none.dmarclab", "--state-file", path, "--accept-none",
                now=NOW + 3 * DAY + 5)
    assert later.perfdata["none_age_days"] == "3d", later.output


@pytest.mark.lab
def test_corrupt_state_entry_is_reported_and_rebuilt(dmarc_dns, tmp_path):
    path = tmp_path / "dmarc.json"
    path.write_text('{"dmarc:quar.dmarclab": {"baseline": {"p": "maybe"}}}')
    result = run("-D", "quar.dmarclab", "--state-file", path, now=NOW)
    assert result.exitcode == 1, result.output
    assert f"state file {path} was corrupt and has been started afresh" in result.first_line
    assert run("-D", "quar.dmarclab", "--state-file", path, now=NOW).exitcode == 0


@pytest.mark.parametrize("argv, message", [
    (["-D", "x.test", "--accept-changes"], "--accept-changes needs --state-file"),
    (["-D", "x.test", "-w", "30"], "-w and -c (none_age_days) need --state-file"),
    (["-D", "x.test", "--helo-name", "a.test"],
     "-4, -6 and --helo-name only apply with --probe-destinations"),
])
def test_usage_errors(argv, message):
    result = run_main(main, argv)
    assert result.exitcode == 3, result.output
    assert result.output.splitlines()[-1] == f"check_dmarc: error: {message}"
