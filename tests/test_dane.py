"""check_dane: TLSA records over DNSSEC against what every MX endpoint presents.

Lab runs go through the real validating resolver (unbound, tests/lab/unbound.py)
to the lab NSD serving the signed dane.test (tests/lab/danelab.py), and STARTTLS
to the lab Postfix's DANE endpoints. Unit tests of check_smtp_posture/dane.py use
chains made by tests/lab/certs.py.
"""

from __future__ import annotations

import datetime
import hashlib
import re
import time

import pytest

from check_smtp_posture import dane
from check_smtp_posture.plugins.check_dane import main
from tests.conftest import run_main
from tests.lab import danelab

UTC = datetime.timezone.utc


# -- records and chains (no lab) -------------------------------------------------------


@pytest.mark.parametrize("text, problem", [
    ("3 1 1 " + "ab" * 32, ""),
    ("2 0 2 " + "ab" * 64, ""),
    ("3 1 0 3059301306", ""),
    ("3 1 1 " + "ab" * 20, "malformed: 20-octet SHA-256 digest (needs 32)"),
    ("3 1 2 " + "ab" * 32, "malformed: 32-octet SHA-512 digest (needs 64)"),
    ("0 1 1 " + "ab" * 32, "unusable: PKIX-TA usage, not for SMTP (RFC 7672 §3.1.3)"),
    ("1 1 1 " + "ab" * 32, "unusable: PKIX-EE usage, not for SMTP (RFC 7672 §3.1.3)"),
    ("4 1 1 " + "ab" * 32, "unusable: unknown usage 4"),
    ("3 2 1 " + "ab" * 32, "unusable: unknown selector 2"),
    ("3 1 3 " + "ab", "unusable: unknown matching type 3"),
    ("3 1 1 zz", "malformed: not a TLSA record"),
    ("three 1 1 ab", "malformed: not a TLSA record"),
    # RFC 3597 generic text: how the DNS layer hands over a record dnspython refused
    ("\\# 35 030101" + "ab" * 32, ""),
    ("\\# 34 030101" + "ab" * 31, "malformed: 31-octet SHA-256 digest (needs 32)"),
    ("\\# 68 030102" + "ab" * 33 + " " + "ab" * 32, "malformed: 65-octet SHA-512 digest "
                                                    "(needs 64)"),
    ("\\# 2 0301", "malformed: not a TLSA record"),
    ("\\# 9 030101ab", "malformed: not a TLSA record"),
    ("\\#", "malformed: not a TLSA record"),
])
def test_records_are_read_as_senders_judge_them(text, problem):
    record = dane.TlsaRecord.from_text(text)
    assert record.problem == problem
    assert record.usable == (problem == "")


@pytest.fixture(scope="module")
def chain():
    """(leaf DER, CA DER, leaf key) for mx.test, issued by a fresh lab CA."""
    from tests.lab.certs import LabCA

    ca = LabCA("unit CA")
    issued = ca.issue(["mx.test"], key_type="ec", key_bits=256, fresh_key=True)
    return issued.cert_der, ca.cert_der, issued.key, ca


def _record(usage, selector, mtype, der) -> dane.TlsaRecord:
    from cryptography import x509

    data = dane.association(der, x509.load_der_x509_certificate(der), selector, mtype)
    return dane.TlsaRecord(usage, selector, mtype, data)


def test_dane_ee_matches_the_leaf_without_name_or_date_checks(chain):
    leaf, ca, _, _ = chain
    check = dane.check_chain([_record(3, 1, 1, leaf), _record(3, 0, 2, leaf)], [leaf, ca],
                             ["other.test"], now=datetime.datetime(2099, 1, 1, tzinfo=UTC))
    assert [o.status for o in check.outcomes] == [dane.MATCHED, dane.MATCHED]
    assert [o.depth for o in check.outcomes] == [0, 0]
    assert check.key_type == "ECDSA" and check.authenticated


def test_dane_ta_needs_the_name_and_the_dates(chain):
    leaf, ca, _, _ = chain
    record = _record(2, 1, 1, ca)
    ok = dane.check_chain([record], [leaf, ca], ["mx.test"])
    assert ok.outcomes[0].status == dane.MATCHED and ok.outcomes[0].depth == 1
    wrong_name = dane.check_chain([record], [leaf, ca], ["mx.other"])
    assert wrong_name.outcomes[0].status == dane.FAILED
    assert wrong_name.outcomes[0].detail == "the certificate is not valid for mx.other"
    later = dane.check_chain([record], [leaf, ca], ["mx.test"],
                             now=datetime.datetime(2099, 1, 1, tzinfo=UTC))
    assert later.outcomes[0].detail == "the certificate at depth 0 expired"
    assert not later.authenticated


def test_dane_ta_must_issue_the_chain_below_it(chain):
    from tests.lab.certs import LabCA

    leaf, _, _, _ = chain
    stranger = LabCA("another CA").cert_der
    check = dane.check_chain([_record(2, 1, 1, stranger)], [leaf, stranger], ["mx.test"])
    assert check.outcomes[0].status == dane.FAILED
    assert check.outcomes[0].detail == "the certificate at depth 0 is not issued by the one " \
                                       "above it"


def test_a_record_for_another_key_is_unused_and_the_live_record_is_offered(chain):
    leaf, ca, key, _ = chain
    other = dane.TlsaRecord(3, 1, 1, bytes(32))
    check = dane.check_chain([other], [leaf, ca], ["mx.test"])
    assert check.outcomes[0].status == dane.UNUSED and not check.authenticated
    assert check.live_record == "3 1 1 " + hashlib.sha256(dane.spki_der(key)).hexdigest()


@pytest.mark.parametrize("records, ready, how", [
    ([(3, "leaf")], False, "a new key would match no TLSA record"),
    ([(3, "leaf"), (3, "next")], True, "a next key is published"),
    ([(2, "ca")], True, "a DANE-TA record"),
    ([(3, "leaf"), (2, "stranger")], False, "a new key would match no TLSA record"),
])
def test_rollover_is_judged_by_meaning(chain, records, ready, how):
    leaf, ca, _, _ = chain
    made = {"leaf": _record(3, 1, 1, leaf), "ca": _record(2, 1, 1, ca),
            "next": dane.TlsaRecord(3, 1, 1, b"\1" * 32),
            "stranger": dane.TlsaRecord(2, 1, 1, b"\2" * 32)}
    check = dane.check_chain([made[name] for _, name in records], [leaf, ca], ["mx.test"])
    verdict = dane.rollover([check])
    assert verdict.ready is ready
    assert verdict.how.startswith(how)
    assert verdict.stale == ((made["stranger"].short,) if (2, "stranger") in records else ())


def test_an_unreadable_chain_matches_nothing():
    check = dane.check_chain([dane.TlsaRecord(3, 1, 1, bytes(32))], [b"garbage"], ["mx.test"])
    assert not check.authenticated and check.key_type == "unreadable"


# -- the lab: the real validating resolver, NSD and Postfix ----------------------------

LAB = ["--dns-server", danelab.RESOLVER_ARG, "--secure-name", danelab.SECURE_PROBE,
       "--bogus-name", danelab.BOGUS_PROBE, "--helo-name", "monitor.posture.test", "-t", "10"]


@pytest.fixture(scope="module")
def dane_lab(lab_resolver, lab_postfix, lab_dns):
    """The resolver, its NSD reloaded if another session started it before the last case
    was added to danelab.CASES."""
    import dns.message
    import dns.query

    query = dns.message.make_query(f"mx.{list(danelab.CASES)[-1]}.{danelab.ZONE}", "A")
    if not dns.query.udp(query, lab_dns.address, port=lab_dns.port, timeout=2).answer:
        lab_dns.reload()
    return lab_resolver


def run(*argv):
    started = time.monotonic()
    result = run_main(main, [*argv, *LAB])
    result.elapsed = time.monotonic() - started
    return result


@pytest.mark.lab
@pytest.mark.parametrize("case, exitcode, first_line", [
    ("ee", 0, "DANE OK - 1 endpoint of MX of ee.dane.test: DANE authenticated (RSA; 3 1 1), "
              "rollover ready, signatures valid"),
    ("ta", 0, "DANE OK - 1 endpoint of MX of ta.dane.test: DANE authenticated (RSA; 2 1 1), "
              "rollover ready"),
    ("eeta", 0, "DANE OK - 1 endpoint of MX of eeta.dane.test: DANE authenticated "
                "(RSA; 2 1 1, 3 1 1), rollover ready"),
    ("sha512", 0, "DANE OK - 1 endpoint of MX of sha512.dane.test: DANE authenticated "
                  "(RSA; 3 1 2)"),
    ("unknown", 0, "DANE OK - 1 endpoint of MX of unknown.dane.test: DANE authenticated"),
    ("dualok", 0, "DANE OK - 1 endpoint of MX of dualok.dane.test: DANE authenticated "
                  "(ECDSA/RSA; 2 1 1, 3 1 1), rollover ready"),
    ("single", 1, "DANE WARNING - mx.single.dane.test[127.0.25.9]: no rollover protection "
                  "(a new key would match no TLSA record)"),
    ("stale", 1, "DANE WARNING - mx.stale.dane.test[127.0.25.9]: no rollover protection"),
    ("pkix", 1, "DANE WARNING - mx.pkix.dane.test[127.0.25.9]: none of 2 TLSA records is "
                "usable for SMTP: senders fall back to unauthenticated TLS"),
    ("partial", 1, "DANE WARNING - DANE covers 1 of 2 MX hosts: no TLSA records for "
                   "mx.none.dane.test"),
    ("rolled", 2, "DANE CRITICAL - mx.rolled.dane.test[127.0.25.9]: RSA certificate matches "
                  "none of 1 usable TLSA record |"),
    ("dual", 2, "DANE CRITICAL - mx.dual.dane.test[127.0.25.10]: RSA certificate matches "
                "none of 1 usable TLSA record |"),
    ("notls", 2, "DANE CRITICAL - mx.notls.dane.test[127.0.25.11]: TLSA published but "
                 "STARTTLS not offered: DANE senders will defer mail"),
    ("refused", 2, "DANE CRITICAL - mx.refused.dane.test[127.0.25.12] connect: connection "
                   "refused (TLSA published: DANE senders will defer mail)"),
    # (the reason text after the code comes only with a fresh validation, not from cache)
    ("bogus", 2, "DANE CRITICAL - TLSA lookup of _25._tcp.mx.bogus.dane.test failed: SERVFAIL "
                 "(DNSSEC Bogus (6)"),
    ("servfail", 2, "DANE CRITICAL - TLSA lookup of _25._tcp.mx.servfail.dane.test failed: "
                    "SERVFAIL: DANE senders will defer mail"),
    ("none", 2, "DANE CRITICAL - no TLSA records for any MX host: DANE not published"),
    ("malformed", 0, "DANE OK - 1 endpoint of MX of malformed.dane.test: DANE authenticated "
                     "(RSA; 3 1 1), rollover ready"),
    ("unsigned", 0, "DANE OK - DANE not applicable: the MX records of unsigned.dane.test are "
                    "not signed (insecure)"),
    ("offsite", 0, "DANE OK - DANE not applicable: the address records of mx1.posture.test "
                   "are not signed (insecure)"),
])
def test_every_lab_case_reaches_its_state(dane_lab, case, exitcode, first_line):
    result = run("-D", f"{case}.dane.test")
    assert result.exitcode == exitcode, result.output
    assert result.first_line.startswith(first_line), result.output
    assert result.elapsed < 10


@pytest.mark.lab
def test_a_bogus_answer_is_critical_whatever_the_unreachable_state(dane_lab):
    # a validator's verdict (RFC 8914 code 6) is a fact about the domain; a plain SERVFAIL
    # is a lookup that failed, which --unreachable-state decides
    bogus = run("-D", "bogus.dane.test", "--unreachable-state", "warning")
    assert bogus.exitcode == 2, bogus.output
    failed = run("-D", "servfail.dane.test", "--unreachable-state", "warning")
    assert failed.exitcode == 1, failed.output
    assert failed.first_line.startswith("DANE WARNING - TLSA lookup of "
                                        "_25._tcp.mx.servfail.dane.test failed: SERVFAIL")


@pytest.mark.lab
def test_a_malformed_record_is_unusable_and_the_others_still_count(dane_lab):
    # RFC 7672 §3.1.3: a malformed TLSA record is unusable, the rest of the RRset stands.
    # (dnspython refuses a response with a digest of the wrong length whole; it used to end
    # in "TLSA lookup ... failed: TIMEOUT" after -t, a timeout that never happened.)
    result = run("-D", "malformed.dane.test", "-v")
    assert result.exitcode == 0, result.output
    short, long = danelab.tlsa_data("rsa:short", 1), danelab.tlsa_data("rsa:long", 2)
    lines = result.output.splitlines()
    assert f"    3 1 1 {danelab.tlsa_data('rsa', 1)[:12]}...: matched at depth 0" in lines, \
        result.output
    assert f"    3 1 1 {short[:12]}...: malformed: 31-octet SHA-256 digest (needs 32)" \
        in lines, result.output
    assert f"    3 1 2 {long[:12]}...: malformed: 65-octet SHA-512 digest (needs 64)" \
        in lines, result.output
    assert result.perfdata["tlsa_records"] == "4" and result.perfdata["tlsa_matched"] == "1"
    assert result.elapsed < 5


@pytest.mark.lab
def test_a_mismatch_prints_the_record_that_would_match(dane_lab):
    result = run("-D", "rolled.dane.test", "-v")
    assert "the record that would match the live key: " + danelab.live_tlsa("rsa") \
        in result.output
    assert result.perfdata["tlsa_records"] == "1" and result.perfdata["tlsa_matched"] == "0"


@pytest.mark.lab
def test_both_certificates_of_a_dual_server_are_tested(dane_lab):
    result = run("-D", "dual.dane.test", "-v")
    lines = result.output.splitlines()
    assert any(line.startswith("  ECDSA certificate (TLSv1.3") and
               line.endswith("): authenticated") for line in lines), result.output
    assert any(line.startswith("  RSA certificate (TLSv1.2") and "asked for RSA" in line
               and line.endswith("NOT authenticated") for line in lines), result.output
    assert "the record that would match the live key: " + danelab.live_tlsa("rsa") \
        in result.output


@pytest.mark.lab
def test_perfdata_and_signature_expiry_thresholds(dane_lab):
    result = run("-D", "ee.dane.test")
    days = float(result.perfdata["rrsig_days_left"])
    _, expiration = danelab.signature_window()
    assert abs(days - (expiration - time.time()) / 86400) < 0.2
    assert result.perfdata["tlsa_records"] == "2" and result.perfdata["tlsa_matched"] == "1"
    soon = run("-D", "ee.dane.test", "-w", "40:", "-c", "3:")
    assert soon.exitcode == 1, soon.output
    assert soon.first_line.startswith(f"DANE WARNING - DNSSEC signatures over the MX/TLSA "
                                      f"records expire in {days:g} days (range 40:) |"), \
        soon.output
    late = run("-D", "ee.dane.test", "-w", "60:", "-c", "45:")
    assert late.exitcode == 2, late.output


@pytest.mark.lab
def test_perfdata_per_endpoint_adds_the_endpoint_key_labels(dane_lab):
    result = run("-D", "ee.dane.test", "--perfdata-per-endpoint", "-w", "40:", "-c", "3:")
    assert result.exitcode == 1, result.output
    key = "mx_ee_dane_test_v4_1_"
    assert result.perfdata[key + "tlsa_records"] == "2"
    assert result.perfdata[key + "tlsa_matched"] == "1"
    assert result.perfdata[key + "rrsig_days_left"] == result.perfdata["rrsig_days_left"]
    # the thresholds are on the endpoint's value too; the state comes from the run's one
    assert f"{key}rrsig_days_left={result.perfdata['rrsig_days_left']};40:;3:" in \
        result.first_line.replace("'", "")
    assert result.first_line.count("expire in") == 1, result.first_line


@pytest.mark.lab
def test_one_host_by_name(dane_lab):
    result = run("-H", "mx.ta.dane.test")
    assert result.exitcode == 0, result.output
    assert result.first_line.startswith("DANE OK - 1 endpoint of host mx.ta.dane.test: DANE "
                                        "authenticated (RSA; 2 1 1)"), result.output


@pytest.mark.lab
def test_an_aliased_host_uses_the_tlsa_records_of_its_target(dane_lab):
    # RFC 7672 §2.2.2: a secure CNAME leads to the TLSA records of the name it expands to
    # (mxalias.dane.test has none of its own); both names are accepted in the certificate
    result = run("-H", "mxalias.dane.test", "-v")
    assert result.exitcode == 0, result.output
    assert result.first_line.startswith("DANE OK - 1 endpoint of host mxalias.dane.test: DANE "
                                        "authenticated (RSA; 3 1 1)"), result.output
    assert "2 TLSA record(s) at _25._tcp.mx.ee.dane.test" in result.output


@pytest.mark.lab
def test_mta_sts_beside_dane_is_noted(dane_lab):
    result = run("-D", "eeta.dane.test", "-v")
    assert "note: eeta.dane.test also publishes MTA-STS; senders that do both use DANE " \
           "(RFC 8461 §2)" in result.output


@pytest.mark.lab
def test_a_resolver_that_does_not_validate_is_not_trusted(dane_lab, lab_dns):
    # straight to the authoritative NSD: no AD flag, and the bogus name is answered
    result = run_main(main, ["-D", "ee.dane.test", "--dns-server", lab_dns.server_arg,
                             "--secure-name", "dane.test", "--bogus-name",
                             danelab.BOGUS_PROBE, "--helo-name", "monitor.posture.test"])
    assert result.exitcode == 3, result.output
    assert result.first_line == ("DANE UNKNOWN - the resolver does not validate DNSSEC: "
                                 "dane.test came back without the AD flag (use --dns-server "
                                 "with a validating resolver)")


@pytest.mark.lab
def test_a_resolver_that_answers_the_bogus_name_is_not_trusted(dane_lab):
    # ee.dane.test's MX is validly signed: a "bogus" name that validates proves nothing
    result = run_main(main, ["-D", "ee.dane.test", "--dns-server", danelab.RESOLVER_ARG,
                             "--secure-name", "dane.test", "--bogus-name", "ee.dane.test",
                             "--helo-name", "monitor.posture.test"])
    assert result.exitcode == 3, result.output
    assert result.first_line.startswith("DANE UNKNOWN - the resolver does not validate DNSSEC:"
                                        " ee.dane.test, whose signatures are broken, was "
                                        "answered"), result.output


@pytest.mark.lab
def test_each_handshake_quits_without_an_ehlo_after_tls(dane_lab, lab_postfix):
    # the certificate is all a DANE check needs of the session: QUIT as soon as TLS is up
    mark = lab_postfix.mark()
    result = run("-D", "dualok.dane.test", "-vvv")
    assert result.exitcode == 0, result.output
    assert re.findall(r"~>  (\S+)", result.output) == ["QUIT", "QUIT"], result.output
    ours = lab_postfix.wait_for_disconnects(
        2, mark, "danedual",
        keep=lambda c: (c.get("ehlo"), c.get("starttls"), c.get("quit")) == ("1", "1", "1"))
    assert len(ours) == 2, lab_postfix.log_since(mark)[-3000:]


@pytest.mark.lab
def test_dns_questions_that_need_no_answer_first_are_asked_at_once(dane_lab):
    # every answer 0.4 s late: the validator proof beside the MX question, the MX hosts'
    # addresses, then their TLSA records beside _mta-sts: three waits, not five
    from tests.lab.authdns import free_udp_port
    from tests.lab.dnsdelay import DelayingDns

    delay = 0.4
    address = "127.0.27.57"
    with DelayingDns((address, free_udp_port(address)), (danelab.RESOLVER_ADDRESS, 53),
                     delay=delay) as slow:
        started = time.monotonic()
        lab = [slow.server_arg if arg == danelab.RESOLVER_ARG else arg for arg in LAB]
        result = run_main(main, ["-D", "ee.dane.test", *lab])
        elapsed = time.monotonic() - started
    assert result.exitcode == 0, result.output
    assert result.first_line.startswith("DANE OK - 1 endpoint of MX of ee.dane.test: DANE "
                                        "authenticated"), result.output
    assert elapsed < 4.5 * delay, elapsed


@pytest.mark.lab
def test_the_transcript_shows_both_handshakes(dane_lab):
    result = run("-D", "dualok.dane.test", "-vvv")
    assert result.exitcode == 0, result.output
    assert "transcript of connection 1 (default):" in result.output
    assert "transcript of connection 2 (RSA):" in result.output
    assert result.output.count("STARTTLS") >= 2
