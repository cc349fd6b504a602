"""check_mta_sts: the record and policy parsers, the history rules, and every lab case
end to end through the real lab nginx (policy hosts), the lab NSD and the lab Postfix (MX).
"""

from __future__ import annotations

import json
import re
import time
from types import SimpleNamespace

import pytest

from check_smtp_posture import clock, mtasts
from check_smtp_posture.mtasts import compare_history, remember
from check_smtp_posture.plugins.check_mta_sts import main
from check_smtp_posture.plugins.mta_sts_contexts import history_findings, history_notes
from tests.conftest import run_main
from tests.lab.mtastslab import GOOD_POLICY, STS_DOMAIN, STS_ID

EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
TIMEOUT = 5.0
MARGIN = 0.5


# --------------------------------------------------------------------------- TXT record


@pytest.mark.parametrize("texts, problem", [
    (["v=STSv1; id=20160831085700Z;"], ""),
    (["v=STSv1;id=abc"], ""),
    (["v=STSv1; id=abc; ext_1=some-value;"], ""),
    (["v=spf1 -all", "v=STSv1; id=abc;"], ""),  # other records are discarded
    ([], "no v=STSv1 record"),
    (["v=STSv2; id=abc;"], "no v=STSv1 record"),
    (["v=STSv1; id=abc;", "v=STSv1; id=def;"], "2 v=STSv1 records"),
    (["v=STSv1;"], "no id field"),
    (["v=STSv1; id=abc; id=def"], "id given twice"),
    (["v=STSv1; id=not-valid;"], "bad id 'not-valid'"),
    (["v=STSv1; id=" + "a" * 33], "bad id"),
    (["v=STSv1; id=abc; garbage"], "has no '='"),
])
def test_sts_record(texts, problem):
    record = mtasts.sts_record(texts)
    assert problem in record.problem if problem else record.ok, record
    if not problem:
        assert record.get("id") in ("20160831085700Z", "abc")


# --------------------------------------------------------------------------- policy


def test_policy_with_crlf_and_unknown_keys():
    policy = mtasts.parse_policy(b"version: STSv1\r\nmode: enforce\r\nmx: MX1.example.org\r\n"
                                 b"mx: *.example.net\r\nmax_age: 604800\r\nfoo: bar\r\n")
    assert policy.valid, policy.problems
    assert (policy.mode, policy.max_age, policy.mx) == (
        "enforce", 604800, ("mx1.example.org", "*.example.net"))
    assert policy.unknown_keys == ("foo",)
    assert policy.line_ending == "CRLF"
    assert policy.covers("a.example.net") == "*.example.net"
    assert policy.covers("mx1.example.org.") == "mx1.example.org"
    assert policy.covers("a.b.example.net") is None


def test_lf_policy_without_a_final_line_break_and_spaces_around_values():
    policy = mtasts.parse_policy(b"version:STSv1\nmode:  testing \nmx: a.example\nmax_age: 0")
    assert policy.valid, policy.problems
    assert policy.line_ending == "LF" and policy.max_age == 0


@pytest.mark.parametrize("body, problem", [
    (b"mode: enforce\nmx: a.example\nmax_age: 1\n", "no version"),
    (b"version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n", "version 'STSv2'"),
    (b"version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n", "mode 'strict'"),
    (b"version: STSv1\nmode: enforce\nmx: a.example\n", "no max_age"),
    (b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: -1\n", "max_age '-1'"),
    (b"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n", "over 31557600"),
    (b"version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx in a enforce policy"),
    (b"version: STSv1\nmode: enforce\nmx: 192.0.2.1\nmax_age: 1\n", "is an IP address"),
    (b"version: STSv1\nmode: enforce\nmx: [2001:db8::1]\nmax_age: 1\n", "is an IP address"),
    (b"version: STSv1\nmode: enforce\nmx: a.*.example\nmax_age: 1\n", "not a host name"),
    (b"version: STSv1\nmode: enforce\nmode: none\nmx: a.example\nmax_age: 1\n",
     "mode given 2 times"),
    (b"version: STSv1\nmode: enforce\nmx a.example\nmax_age: 1\n", "line 3 is not"),
    (b"version: STSv1\nmode: enforce\rmx: a.example\nmax_age: 1\n", "bare CR"),
    ("version: STSv1\nmode: enforce\nmx: \u00e4.example\nmax_age: 1\n".encode(),
     "non-ASCII"),
])
def test_invalid_policies(body, problem):
    policy = mtasts.parse_policy(body)
    assert not policy.valid
    assert any(problem in p for p in policy.problems), policy.problems


def test_a_none_policy_needs_no_mx():
    assert mtasts.parse_policy(b"version: STSv1\nmode: none\nmax_age: 86400\n").valid


@pytest.mark.parametrize("pattern, host, matches", [
    ("mx.example.org", "MX.Example.Org.", True),
    ("*.example.org", "mx.example.org", True),
    ("*.example.org", "example.org", False),
    ("*.example.org", "a.mx.example.org", False),
    ("*.example.org", "mx.example.net", False),
])
def test_mx_patterns(pattern, host, matches):
    assert mtasts.mx_matches(pattern, host) is matches


# --------------------------------------------------------------------------- TLS-RPT


def test_tlsrpt_record_and_uris():
    record = mtasts.tlsrpt_record(["v=TLSRPTv1; rua=mailto:a@example.org,https://r.example/x"])
    assert record.ok
    uris = mtasts.report_uris(record.get("rua"))
    assert [(u.scheme, u.domain, u.problem) for u in uris] == [
        ("mailto", "example.org", ""), ("https", "r.example", "")]


@pytest.mark.parametrize("texts, problem", [
    ([], "no v=TLSRPTv1 record"),
    (["v=TLSRPTv1; rua=mailto:a@b.example", "v=TLSRPTv1; rua=mailto:c@b.example"],
     "2 v=TLSRPTv1 records"),
    (["v=TLSRPTv1;"], "no rua field"),
    (["v=TLSRPTv1; rua=mailto:a@b.example; rua=mailto:c@b.example"], "rua given twice"),
    (["v=TLSRPTv1; rua=mailto:a@b.example; junk"], "field 'junk' has no '='"),
])
def test_tlsrpt_record_problems(texts, problem):
    assert mtasts.tlsrpt_record(texts).problem.startswith(problem)


@pytest.mark.parametrize("rua, problem", [
    ("ftp://r.example/x", "not mailto: or https:"),
    ("mailto:nobody", "bad mailto address"),
    ("mailto:a@localhost", "bad mailto address"),
    ("https:///nohost", "bad https URI"),
    ("mailto:a@b.example,", "empty URI"),
])
def test_bad_report_uris(rua, problem):
    assert problem in [u.problem for u in mtasts.report_uris(rua)]


# --------------------------------------------------------------------------- history

NOW = 1_800_000_000.0
DAY = 86400


def _policy(mode="enforce", mx=("mx1.posture.test", "mx2.posture.test"), body=b""):
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {m}" for m in mx), "max_age: 86400"]
    return mtasts.parse_policy(("\n".join(lines) + "\n").encode() + body)


def _entry(policy, record_id, seen, **changes):
    entry = remember([], policy, record_id, seen)[0]
    entry.update(changes)
    return entry


MX_NOW = ["mx1.posture.test", "mx2.posture.test"]


def judge_history(*args):
    """What --state-file adds to the output: the findings (each a WARNING) and the notes
    (the long output) the plugin phrases from mtasts.compare_history(*args)."""
    history = compare_history(*args)
    return SimpleNamespace(findings=history_findings(history), notes=history_notes(history))


def test_history_same_policy_is_quiet():
    policy = _policy()
    facts = judge_history([_entry(policy, "a", NOW - 60)], MX_NOW, policy, "a", MX_NOW, NOW)
    assert facts.findings == [] and facts.notes == []


def test_history_changed_policy_same_id_warns_until_the_old_one_expires():
    old, new = _policy(), _policy(body=b"comment: changed\n")
    entries = [_entry(old, "a", NOW - 3600)]
    facts = judge_history(entries, MX_NOW, new, "a", MX_NOW, NOW)
    until = clock.minute(NOW - 3600 + DAY)
    assert facts.findings == [f"policy changed but its id a did not: senders keep the old "
                              f"one until {until}"]
    # a day later the old body is out of every cache
    assert judge_history(entries, MX_NOW, new, "a", MX_NOW, NOW + DAY).findings == []
    # what is stored: the new body first, the old one kept while it may be cached
    stored = remember(entries, new, "a", NOW)
    assert [e["digest"] for e in stored] == [new.digest, old.digest]
    assert remember(entries, new, "a", NOW + DAY) == [_entry(new, "a", NOW + DAY)]


def test_history_downgrade_from_enforce():
    old, new = _policy(), _policy("testing")
    facts = judge_history([_entry(old, "a", NOW - 60)], MX_NOW, new, "b", MX_NOW, NOW)
    assert len(facts.findings) == 1
    assert facts.findings[0].startswith("policy downgraded from enforce (id a) to testing; "
                                        "the enforce policy may be cached until ")


def test_history_new_mx_not_in_an_older_cached_policy():
    old, new = _policy(mx=("mx1.posture.test",)), _policy()
    entries = [_entry(old, "a", NOW - 60)]
    facts = judge_history(entries, ["mx1.posture.test"], new, "b", MX_NOW, NOW)
    assert facts.findings == [f"mx2.posture.test not in the older policy id a (enforce) "
                              f"senders may cache until {clock.minute(NOW - 60 + DAY)}"]
    assert facts.notes == ["MX set changed since the last run: +mx2.posture.test"]
    # an older policy in mode none binds nobody
    none = _entry(_policy("none", mx=("mx1.posture.test",)), "a", NOW - 60)
    assert judge_history([none], MX_NOW, new, "b", MX_NOW, NOW).findings == []


def test_history_without_a_policy_says_what_senders_keep():
    entries = [_entry(_policy(), "a", NOW - 60)]
    facts = judge_history(entries, MX_NOW, None, None, MX_NOW, NOW)
    assert facts.findings == []
    assert facts.notes == [f"senders that cached policy id a keep it until "
                           f"{clock.minute(NOW - 60 + DAY)}"]


# --------------------------------------------------------------------------- the lab


@pytest.fixture(scope="module")
def sts_lab(lab_dns, lab_postfix, lab_nginx, tmp_path_factory):
    """(dns server argument, a CA file with the Postfix and the nginx lab CAs)."""
    from tests.lab.nginx import ca_bundle

    bundle = ca_bundle(tmp_path_factory.mktemp("sts") / "ca.pem", lab_postfix.ca_file,
                       lab_nginx.ca_file)
    return lab_dns.server_arg, str(bundle)


def run_sts(sts_lab, label: str, *extra, timeout: float = TIMEOUT):
    dns, ca = sts_lab
    started = time.monotonic()
    run = run_main(main, ["-D", f"{label}.{STS_DOMAIN}", "--dns-server", dns, "--ca-file", ca,
                          "--helo-name", "probe.posture.test", "-t", timeout, *extra])
    elapsed = time.monotonic() - started
    assert elapsed < timeout + MARGIN, run.output
    return run


CASES = [
    ("good", (), "OK", f"good.sts.test: policy id {STS_ID} mode enforce, 2 of 2 MX covered, "
                       "max_age 86400s, fetched in "),
    ("wildcard", (), "OK", "2 of 2 MX covered"),
    ("extra", (), "OK", "unknown policy keys ignored: comment, owner"),
    ("uncovered", (), "CRITICAL", "enforce policy: mx2.posture.test not covered by the policy"),
    ("testing", (), "WARNING", "testing policy: mx2.posture.test not covered by the policy"),
    ("none", (), "OK", "mode none: senders apply no policy; mx2.posture.test not covered by "
                       "the policy (not enforced)"),
    ("redirect", (), "CRITICAL", "policy fetch answered 301 redirect to "
                                 "https://mta-sts.good.sts.test/.well-known/mta-sts.txt "
                                 "(senders do not follow redirects)"),
    ("wrongtype", (), "CRITICAL", "policy served as text/html, not text/plain"),
    ("oversized", (), "CRITICAL", "policy larger than 64 KiB"),
    ("notfound", (), "CRITICAL", "policy fetch answered 404 Not Found"),
    ("badcert", (), "CRITICAL", "policy host mta-sts.badcert.sts.test certificate name "
                                "mismatch for mta-sts.badcert.sts.test"),
    ("expired", (), "CRITICAL", "policy host mta-sts.expired.sts.test certificate expired "
                                "1 day ago"),
    ("invalid", (), "CRITICAL", "policy invalid: mode 'strict' is not enforce, testing or "
                                "none; no max_age; (+1 more)"),
    ("badmx", (), "CRITICAL", "enforce policy: alias.badmx.sts.test[127.0.25.1] certificate "
                              "name mismatch for alias.badmx.sts.test"),
    ("notls", (), "CRITICAL", "enforce policy: notls.posture.test[127.0.25.5] no STARTTLS"),
    ("tlsa", (), "OK", "DANE TLSA at mx.tlsa.sts.test (takes precedence over MTA-STS)"),
    ("rptbad", (), "WARNING", "TLS-RPT rua ftp://reports.posture.test/tlsrpt: not mailto: or "
                              "https:"),
    ("rpttwo", (), "WARNING", "TLS-RPT _smtp._tls.rpttwo.sts.test: 2 v=TLSRPTv1 records "
                              "(senders use none)"),
    ("rptnomx", (), "WARNING", "TLS-RPT rua report domain nomail.sts.test takes no mail "
                               "(NXDOMAIN)"),
    ("twotxt", (), "CRITICAL", "_mta-sts.twotxt.sts.test: 2 v=STSv1 records (senders apply "
                               "no policy)"),
    ("badid", (), "CRITICAL", "_mta-sts.badid.sts.test: bad id 'not-valid!' (1-32 letters and "
                              "digits)"),
    ("nohost", (), "CRITICAL", "policy host mta-sts.nohost.sts.test: NXDOMAIN"),
    ("refused", (), "CRITICAL", "policy host mta-sts.refused.sts.test[127.0.25.81] connect: "
                                "connection refused"),
    ("refused", ("--unreachable-state", "warning"), "WARNING", "connection refused"),
    ("nosts", (), "CRITICAL", "no MTA-STS record at _mta-sts.nosts.sts.test (NXDOMAIN)"),
    ("nosts", ("--missing", "ok"), "OK", "nosts.sts.test: no MTA-STS policy"),
    ("good", ("-w", "0.000001"), "WARNING", "policy_fetch_time "),
]


@pytest.mark.lab
@pytest.mark.parametrize("label, extra, state, fragment", CASES,
                         ids=[f"{c[0]}{'-' + c[1][0].strip('-') if c[1] else ''}"
                              for c in CASES])
def test_lab_domain(sts_lab, label, extra, state, fragment):
    run = run_sts(sts_lab, label, *extra)
    assert run.exitcode == EXIT[state], run.output
    assert run.first_line.startswith(f"MTA_STS {state} - "), run.output
    assert fragment in run.first_line, run.output


@pytest.mark.lab
def test_good_domain_perfdata_and_what_reached_the_servers(sts_lab, lab_nginx, lab_postfix):
    web_mark, mail_mark = lab_nginx.mark(), lab_postfix.mark()
    run = run_sts(sts_lab, "good", "-v")
    assert run.exitcode == 0, run.output
    perf = run.perfdata
    assert set(perf) == {"policy_max_age", "policy_fetch_time", "mx_covered", "mx_total"}
    assert (perf["policy_max_age"], perf["mx_covered"], perf["mx_total"]) == (
        "86400s", "2", "2")
    assert re.fullmatch(r"\d+\.\d{6}s", perf["policy_fetch_time"])
    assert "policy: version STSv1, mode enforce, max_age 86400, mx mx1.posture.test, " \
           "mx2.posture.test, CRLF line endings" in run.output
    assert "report domain posture.test: mx" in run.output
    # the policy host got one GET with SNI and Host naming it
    lines = [line for line in lab_nginx.requests_since(web_mark)
             if line.startswith("mta-sts.good.sts.test ")]
    assert lines == [f'mta-sts.good.sts.test mta-sts.good.sts.test "GET '
                     f'/.well-known/mta-sts.txt HTTP/1.1" 200 {len(GOOD_POLICY)} '
                     f'"check_smtp_posture"'], lines
    # each MX saw EHLO, STARTTLS and QUIT: no EHLO after TLS (the certificate is all the
    # session is for: a round trip saved) and no mail transaction
    for name in ("mx1", "mx2"):
        counts = _disconnect(lab_postfix, mail_mark, name)
        assert counts.get("starttls") == "1" and counts.get("quit") == "1", counts
        assert "mail" not in counts and "data" not in counts, counts


def _disconnect(lab_postfix, mark, endpoint, wait=5.0):
    # other sessions use the endpoint meanwhile: ours is the one with a single EHLO
    found = lab_postfix.wait_for_disconnects(
        1, mark, endpoint, keep=lambda c: c.get("ehlo") == "1" and c.get("starttls") == "1",
        timeout=wait)
    assert found, lab_postfix.log_since(mark)[-2000:]
    return found[-1]


@pytest.mark.lab
def test_a_redirect_is_not_followed(sts_lab, lab_nginx):
    mark = lab_nginx.mark()
    run = run_sts(sts_lab, "redirect")
    assert run.exitcode == 2, run.output
    hosts = [line.split()[0] for line in lab_nginx.requests_since(mark)]
    assert "mta-sts.redirect.sts.test" in hosts and "mta-sts.good.sts.test" not in hosts


@pytest.mark.lab
def test_without_the_lab_ca_the_policy_host_is_untrusted(lab_dns, lab_postfix, lab_nginx):
    run = run_main(main, ["-D", f"good.{STS_DOMAIN}", "--dns-server", lab_dns.server_arg,
                          "--ca-file", str(lab_postfix.ca_file), "--helo-name",
                          "probe.posture.test", "-t", TIMEOUT])
    assert run.exitcode == 2, run.output
    assert "policy host mta-sts.good.sts.test certificate untrusted" in run.first_line


# --------------------------------------------------------------------------- state file


def _state(path, label="good"):
    return json.loads(path.read_text())[f"mta-sts:{label}.{STS_DOMAIN}"]


@pytest.mark.lab
def test_state_file_first_run_records_then_stays_quiet(sts_lab, tmp_path):
    path = tmp_path / "sts.json"
    for _ in range(2):
        run = run_sts(sts_lab, "good", "--state-file", path)
        assert run.exitcode == 0, run.output
    entry = _state(path)
    assert entry["mx"] == ["mx1.posture.test", "mx2.posture.test"]
    [policy] = entry["policies"]
    assert (policy["id"], policy["mode"], policy["max_age"]) == (STS_ID, "enforce", 86400)
    assert abs(policy["seen"] - time.time()) < 60


def _seed(path, label, policies, mx=("mx1.posture.test", "mx2.posture.test")):
    path.write_text(json.dumps({f"mta-sts:{label}.{STS_DOMAIN}": {
        "policies": policies, "mx": list(mx)}}))


def _old(mode="enforce", mx=("mx1.posture.test", "mx2.posture.test"), record_id="old1",
         digest="0" * 64, age=3600):
    return {"id": record_id, "digest": digest, "mode": mode, "max_age": 86400,
            "mx": list(mx), "seen": int(time.time()) - age}


@pytest.mark.lab
def test_state_file_policy_changed_without_a_new_id(sts_lab, tmp_path):
    path = tmp_path / "sts.json"
    old = _old(record_id=STS_ID)
    _seed(path, "good", [old])
    run = run_sts(sts_lab, "good", "--state-file", path)
    assert run.exitcode == 1, run.output
    until = clock.minute(old["seen"] + old["max_age"])
    assert run.first_line.startswith(
        f"MTA_STS WARNING - policy changed but its id {STS_ID} did not: senders keep the old "
        f"one until {until}"), run.output
    assert [p["digest"] for p in _state(path)["policies"]][1] == "0" * 64


@pytest.mark.lab
def test_state_file_mx_changed_while_an_older_policy_is_cached(sts_lab, tmp_path):
    path = tmp_path / "sts.json"
    old = _old(mx=("mx1.posture.test",))
    _seed(path, "good", [old], mx=("mx1.posture.test",))
    run = run_sts(sts_lab, "good", "--state-file", path, "-v")
    assert run.exitcode == 1, run.output
    until = clock.minute(old["seen"] + old["max_age"])
    assert f"mx2.posture.test not in the older policy id old1 (enforce) senders may cache " \
           f"until {until}" in run.first_line, run.output
    assert "history: MX set changed since the last run: +mx2.posture.test" in run.output
    # once the older policy is out of every cache, nothing is left to warn about
    _seed(path, "good", [_old(mx=("mx1.posture.test",), age=86400 + 60)])
    assert run_sts(sts_lab, "good", "--state-file", path).exitcode == 0


@pytest.mark.lab
def test_state_file_downgrade_from_enforce(sts_lab, tmp_path):
    path = tmp_path / "sts.json"
    _seed(path, "none", [_old()])
    run = run_sts(sts_lab, "none", "--state-file", path)
    assert run.exitcode == 1, run.output
    assert "policy downgraded from enforce (id old1) to none; the enforce policy may be " \
           "cached until " in run.first_line, run.output


@pytest.mark.lab
def test_state_file_says_what_senders_keep_when_the_fetch_fails(sts_lab, tmp_path):
    path = tmp_path / "sts.json"
    old = _old(record_id=STS_ID)
    _seed(path, "redirect", [old])
    run = run_sts(sts_lab, "redirect", "--state-file", path, "-v")
    assert run.exitcode == 2, run.output
    until = clock.minute(old["seen"] + old["max_age"])
    assert f"history: senders that cached policy id {STS_ID} keep it until {until}" \
        in run.output
    assert _state(path, "redirect")["policies"] == [old]  # nothing new to remember


@pytest.mark.lab
def test_state_file_corrupt_is_rebuilt_and_reported(sts_lab, tmp_path):
    path = tmp_path / "sts.json"
    path.write_text('{"mta-sts:good.sts.test": {"policies": 5}}')
    run = run_sts(sts_lab, "good", "--state-file", path)
    assert run.exitcode == 1, run.output
    assert f"state file {path} was corrupt and has been started afresh" in run.first_line
    assert _state(path)["policies"][0]["id"] == STS_ID
    assert run_sts(sts_lab, "good", "--state-file", path).exitcode == 0


@pytest.mark.lab
def test_state_file_unwritable_is_unknown_with_the_path(sts_lab, tmp_path):
    path = tmp_path / "missing" / "sts.json"
    run = run_sts(sts_lab, "good", "--state-file", path)
    assert run.exitcode == 3, run.output
    assert f"state file {path}: No such file or directory" in run.first_line
