"""check_dmarc and the DMARC library (RFC 9989): the record grammar, the tree walk, the
report destinations, and the plugin end to end against the lab NSD (tests/lab/dmarclab.py)
and the lab Postfix (endpoint dmarcreports)."""

from __future__ import annotations

import pytest

from check_smtp_posture import dmarc

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
