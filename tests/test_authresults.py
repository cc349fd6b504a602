"""Authentication-Results fields read into verdicts, in the shapes receivers write them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from check_smtp_posture.authresults import Verdict, describe, verdicts

GMAIL = (
    "mx.google.com;\r\n"
    "       dkim=pass header.i=@example.org header.s=s1 header.b=AbCd;\r\n"
    "       spf=pass (google.com: domain of bounce@example.org designates 192.0.2.1 as"
    " permitted sender) smtp.mailfrom=bounce@example.org;\r\n"
    "       dmarc=pass (p=NONE sp=NONE dis=NONE) header.from=example.org"
)
MICROSOFT_365 = (
    "spf=pass (sender IP is 192.0.2.1) smtp.mailfrom=example.org; dkim=none (message not"
    " signed) header.d=none;dmarc=none action=none header.from=example.org;compauth=pass"
    " reason=100"
)
OPENDKIM = (
    "mail.example.org;\n\tdkim=pass (2048-bit key; unprotected) header.d=example.org"
    " header.i=@example.org header.a=rsa-sha256 header.s=default header.b=Ab+c/d0=;\n"
    "\tdkim-atps=neutral"
)
OPENDMARC = "mail.example.org; dmarc=fail (p=reject dis=none) header.from=example.net"
LAB = ("mx.monitor.test; spf=pass smtp.mailfrom=loop.test; dkim=none;"
       " dmarc=none header.from=loop.test")


def test_gmail_three_methods_with_their_identities():
    assert verdicts([GMAIL]) == [
        Verdict("mx.google.com", "dkim", "pass", "header.i=@example.org"),
        Verdict("mx.google.com", "spf", "pass", "smtp.mailfrom=bounce@example.org"),
        Verdict("mx.google.com", "dmarc", "pass", "header.from=example.org"),
    ]


def test_microsoft_365_without_authserv_id_and_with_unknown_properties():
    assert verdicts([MICROSOFT_365]) == [
        Verdict("", "spf", "pass", "smtp.mailfrom=example.org"),
        Verdict("", "dkim", "none", "header.d=none"),
        Verdict("", "dmarc", "none", "header.from=example.org"),
        Verdict("", "compauth", "pass", "reason=100"),
    ]


def test_opendkim_comment_with_semicolon_and_base64_signature():
    assert verdicts([OPENDKIM]) == [
        Verdict("mail.example.org", "dkim", "pass", "header.d=example.org"),
        Verdict("mail.example.org", "dkim-atps", "neutral", ""),
    ]


def test_opendmarc_failure():
    assert verdicts([OPENDMARC]) == [
        Verdict("mail.example.org", "dmarc", "fail", "header.from=example.net")]


def test_lab_receiver_field():
    assert verdicts([LAB]) == [
        Verdict("mx.monitor.test", "spf", "pass", "smtp.mailfrom=loop.test"),
        Verdict("mx.monitor.test", "dkim", "none", ""),
        Verdict("mx.monitor.test", "dmarc", "none", "header.from=loop.test"),
    ]


def test_methods_authres_does_not_know_are_kept():
    field = ("mx.google.com; arc=pass (i=1 spf=pass spfdomain=example.org dkim=pass"
             " dkdomain=example.org dmarc=pass fromdomain=example.org);"
             " bimi=pass header.d=example.org header.selector=default policy.authority=none;"
             " x-custom=ok")
    assert verdicts([field]) == [
        Verdict("mx.google.com", "arc", "pass", ""),
        Verdict("mx.google.com", "bimi", "pass", "header.d=example.org"),
        Verdict("mx.google.com", "x-custom", "ok", ""),
    ]


def test_iprev_auth_and_version_number():
    field = ("MX.Example.ORG 1; iprev=pass policy.iprev=192.0.2.1 (mail.example.net);"
             " auth=pass (cram-md5) smtp.auth=user@example.org")
    assert verdicts([field]) == [
        Verdict("mx.example.org", "iprev", "pass", "policy.iprev=192.0.2.1"),
        Verdict("mx.example.org", "auth", "pass", "smtp.auth=user@example.org"),
    ]


def test_no_results_field_says_none():
    assert verdicts(["mx.monitor.test; none"]) == [Verdict("mx.monitor.test", "none", "", "")]
    assert describe(verdicts(["mx.monitor.test; none"])) == "none (mx.monitor.test)"


def test_folded_field_and_field_name_are_accepted():
    folded = "Authentication-Results: mx.monitor.test;\r\n\tspf=softfail\r\n\t smtp.mailfrom=x.test"
    assert verdicts([folded]) == [Verdict("mx.monitor.test", "spf", "softfail",
                                          "smtp.mailfrom=x.test")]


@pytest.mark.parametrize(("field", "authserv_id", "detail"), [
    ("garbage (((", "", "garbage ((("),
    ("mx.monitor.test; spf=pass (unclosed", "mx.monitor.test",
     "mx.monitor.test; spf=pass (unclosed"),
    ("", "", ""),
    ("; spf=pass", "", "; spf=pass"),
    ("mx.example.org; spf=pass smtp.mailfrom=a|b\x1b[31m", "mx.example.org",
     "mx.example.org; spf=pass smtp.mailfrom=a b [31m"),
    ("mx.example.org; " + "x" * 200, "mx.example.org", "mx.example.org; " + "x" * 61 + "..."),
])
def test_unparseable_field_is_one_visible_verdict(field, authserv_id, detail):
    [verdict] = verdicts([field])
    assert verdict == Verdict(authserv_id, "unparsed", "", detail)


def test_a_field_far_too_long_is_not_handed_to_the_parser():
    [verdict] = verdicts(["mx.example.org; spf=pass smtp.mailfrom=" + "a" * 10000])
    assert verdict.method == "unparsed" and len(verdict.detail) <= 80


def test_trusted_keeps_only_the_receivers_own_ids():
    fields = [LAB, GMAIL, MICROSOFT_365, "mx.monitor.test; dkim=pass (((", "garbage"]
    kept = verdicts(fields, trusted={"mx.monitor.test"})
    assert {v.authserv_id for v in kept} == {"mx.monitor.test"}
    assert [v.method for v in kept] == ["spf", "dkim", "dmarc", "unparsed"]
    assert verdicts(fields, trusted={"MX.Google.com"})[0].authserv_id == "mx.google.com"
    assert verdicts(fields, trusted=set()) == []


def test_describe_one_line_per_authserv_id():
    assert describe(verdicts([LAB])) == "spf=pass dkim=none dmarc=none (mx.monitor.test)"
    assert describe(verdicts([LAB, GMAIL])) == (
        "spf=pass dkim=none dmarc=none (mx.monitor.test);"
        " dkim=pass spf=pass dmarc=pass (mx.google.com)")
    assert describe(verdicts([MICROSOFT_365])) == "spf=pass dkim=none dmarc=none compauth=pass"
    assert describe(verdicts(["mx.x; spf=pass ((("])) == 'unparsed "mx.x; spf=pass (((" (mx.x)'
    assert describe([]) == ""


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.one_of(
    st.text(max_size=300),
    st.lists(st.sampled_from(["mx.example.org", ";", " ", "spf", "=", "pass", "(", ")", "\\",
                              "\"", "smtp.mailfrom", ".", "@", "none", "/", "1", "\r\n\t",
                              "reason", "x-y"]), max_size=40).map("".join),
))
def test_verdicts_never_raise_and_stay_printable(field):
    found = verdicts([field])
    assert found
    line = describe(found)
    assert "|" not in line and line.isprintable()
