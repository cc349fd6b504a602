"""Pure SPF engine units: RFC 7208 examples and edge cases over an in-memory zone."""

from __future__ import annotations

import ipaddress

import pytest

from check_smtp_posture.spf import ZoneDns, check_host, parse_record
from check_smtp_posture.spf.evaluate import truncate_name
from check_smtp_posture.spf.macro import MacroContext, MacroError, expand, tokenize
from check_smtp_posture.spf.record import SpfSyntaxError, select

# RFC 7208 Appendix B.1 zone
RFC_ZONE = {
    "example.com": [("MX", (10, "mail-a.example.com")), ("MX", (20, "mail-b.example.com")),
                    ("A", "192.0.2.10"), ("A", "192.0.2.11")],
    "amy.example.com": [("A", "192.0.2.65")],
    "bob.example.com": [("A", "192.0.2.66")],
    "mail-a.example.com": [("A", "192.0.2.129")],
    "mail-b.example.com": [("A", "192.0.2.130")],
    "www.example.com": [("CNAME", "example.com")],
    "example.org": [("MX", (10, "mail-c.example.org"))],
    "mail-c.example.org": [("A", "192.0.2.140")],
    "10.2.0.192.in-addr.arpa": [("PTR", "example.com")],
    "11.2.0.192.in-addr.arpa": [("PTR", "example.com")],
    "65.2.0.192.in-addr.arpa": [("PTR", "amy.example.com")],
    "66.2.0.192.in-addr.arpa": [("PTR", "bob.example.com")],
    "129.2.0.192.in-addr.arpa": [("PTR", "mail-a.example.com")],
    "130.2.0.192.in-addr.arpa": [("PTR", "mail-b.example.com")],
    "140.2.0.192.in-addr.arpa": [("PTR", "mail-c.example.org")],
    "4.0.0.10.in-addr.arpa": [("PTR", "bob.example.com")],
}
CLIENTS = ["192.0.2.10", "192.0.2.11", "192.0.2.65", "192.0.2.66", "192.0.2.129",
           "192.0.2.130", "192.0.2.131", "192.0.2.140", "192.0.2.143", "192.0.2.144",
           "10.0.0.4"]


def zone_with(record: str | list, extra: dict | None = None) -> ZoneDns:
    zone = {k: list(v) for k, v in RFC_ZONE.items()}
    records = record if isinstance(record, list) else [record]
    zone["example.com"] += [("TXT", r) for r in records]
    for name, rrs in (extra or {}).items():
        zone.setdefault(name, []).extend(rrs)
    return ZoneDns(zone)


def passing(record: str) -> set[str]:
    dns = zone_with(record)
    return {ip for ip in CLIENTS if check_host(dns, ip, "example.com").result == "pass"}


@pytest.mark.parametrize("record, expected", [
    ("v=spf1 +all", set(CLIENTS)),
    ("v=spf1 a -all", {"192.0.2.10", "192.0.2.11"}),
    ("v=spf1 a:example.org -all", set()),
    ("v=spf1 mx -all", {"192.0.2.129", "192.0.2.130"}),
    ("v=spf1 mx:example.org -all", {"192.0.2.140"}),
    ("v=spf1 mx mx:example.org -all", {"192.0.2.129", "192.0.2.130", "192.0.2.140"}),
    ("v=spf1 mx/30 mx:example.org/30 -all",
     {"192.0.2.129", "192.0.2.130", "192.0.2.131", "192.0.2.140", "192.0.2.143"}),
    ("v=spf1 ptr -all", {"192.0.2.10", "192.0.2.11", "192.0.2.65", "192.0.2.66",
                         "192.0.2.129", "192.0.2.130"}),
    ("v=spf1 ip4:192.0.2.128/28 -all",
     {"192.0.2.129", "192.0.2.130", "192.0.2.131", "192.0.2.140", "192.0.2.143"}),
])
def test_rfc7208_appendix_b1_examples(record, expected):
    assert passing(record) == expected


def test_non_matching_clients_get_the_all_qualifier():
    dns = zone_with("v=spf1 a ~all")
    result = check_host(dns, "192.0.2.66", "example.com")
    assert (result.result, result.mechanism) == ("softfail", "~all")


def test_b2_multiple_domains_include():
    dns = zone_with("v=spf1 -all", {
        "la.example.org": [("TXT", "v=spf1 include:example.com include:example.net -all")],
        "example.net": [("TXT", "v=spf1 ip4:203.0.113.0/24 ~all")],
    })
    dns.zone["example.com"] = [r for r in dns.zone["example.com"] if r[0] != "TXT"] + [
        ("TXT", "v=spf1 mx -all")]
    assert check_host(dns, "192.0.2.129", "la.example.org").result == "pass"
    assert check_host(dns, "203.0.113.9", "la.example.org").result == "pass"
    failed = check_host(dns, "198.51.100.1", "la.example.org")
    assert (failed.result, failed.mechanism, failed.matched_in) == \
        ("fail", "-all", "la.example.org")
    assert failed.dns_lookups == 3  # include, mx, include


def test_b3_dnsbl_style_exists():
    record = "v=spf1 mx -exists:%{ir}.sbl.example.org ?all"
    dns = zone_with(record, {"1.113.0.203.sbl.example.org": [("A", "127.0.0.2")],
                             "sbl.example.org": []})
    assert check_host(dns, "203.0.113.1", "example.com").result == "fail"
    assert check_host(dns, "203.0.113.2", "example.com").result == "neutral"
    assert check_host(dns, "192.0.2.129", "example.com").result == "pass"


def test_b4_multiple_requirements():
    # pass only if the client is both in the /24 and has a validated PTR in the domain
    record = "v=spf1 -include:ip4._spf.%{d} -include:ptr._spf.%{d} +all"
    dns = zone_with(record, {
        "ip4._spf.example.com": [("TXT", "v=spf1 -ip4:192.0.2.0/24 +all")],
        "ptr._spf.example.com": [("TXT", "v=spf1 -ptr:example.com +all")],
    })
    assert check_host(dns, "192.0.2.65", "example.com").result == "pass"
    assert check_host(dns, "192.0.2.140", "example.com").result == "fail"
    assert check_host(dns, "10.0.0.4", "example.com").result == "fail"


# -- record selection (§4.5) --------------------------------------------------

@pytest.mark.parametrize("records, expected", [
    ([], "none"),
    (["hello world"], "none"),
    (["v=spf10 -all"], "none"),
    (["v=spf1-all"], "none"),
    (["v=spf1\t-all"], "none"),
    ([" v=spf1 -all"], "none"),
    (["v=spf1 -all", "v=spf1 +all"], "permerror"),
    (["V=SPF1 -ALL"], "fail"),
    (["v=spf1"], "neutral"),
    (["v=spf1 ", "unrelated"], "neutral"),
    (["v=spf1  -all  "], "fail"),
    (["v=spf1 -all", "spf2.0/pra +all"], "fail"),
])
def test_record_selection(records, expected):
    dns = ZoneDns({"sel.example": [("TXT", r) for r in records] or [("A", "192.0.2.1")]})
    assert check_host(dns, "198.51.100.1", "sel.example").result == expected


def test_txt_strings_are_joined_without_spaces():
    dns = ZoneDns({"multi.example": [("TXT", ["v=spf1 ip4:198.51.100.1", " -all"])]})
    assert check_host(dns, "198.51.100.1", "multi.example").result == "pass"
    dns = ZoneDns({"multi.example": [("TXT", ["v=spf1 ip4:198.51.1", "00.1 -all"])]})
    assert check_host(dns, "198.51.100.1", "multi.example").result == "pass"


def test_select_reports_many():
    assert select(["v=spf1 a", "v=spf1 mx", "x"])[0] == "many"


@pytest.mark.parametrize("domain", [
    "nxdomain.example",
    "a" * 64 + ".example",
    "a..example",
    "localhost",
    "x." * 127 + "example",
    "",
])
def test_initial_domain_malformed_or_missing_is_none(domain):
    dns = ZoneDns({"a" * 63 + ".example": [("TXT", "v=spf1 -all")]})
    assert check_host(dns, "192.0.2.1", domain).result == "none"


def test_label_of_63_octets_is_fine():
    dns = ZoneDns({"a" * 63 + ".example": [("TXT", "v=spf1 -all")]})
    assert check_host(dns, "192.0.2.1", "a" * 63 + ".example").result == "fail"


def test_case_insensitive_record_and_domain():
    dns = zone_with("V=sPf1 +Mx a:MAIL-C.Example.ORG -aLL")
    assert check_host(dns, "192.0.2.129", "EXAMPLE.com").result == "pass"
    assert check_host(dns, "192.0.2.140", "example.com.").result == "pass"
    assert check_host(dns, "192.0.2.1", "example.com").result == "fail"


# -- syntax (§12) ------------------------------------------------------------

@pytest.mark.parametrize("record", [
    "v=spf1 foo",
    "v=spf1 -all:x",
    "v=spf1 ++all",
    "v=spf1 all/24",
    "v=spf1 ip4:1.2.3.4/33",
    "v=spf1 ip4:1.2.3.4/032",
    "v=spf1 ip4:01.2.3.4",
    "v=spf1 ip4:1.2.3",
    "v=spf1 ip4:1.2.3.256",
    "v=spf1 ip4:1.2.3.4:25",
    "v=spf1 ip4:1.2.3.4/",
    "v=spf1 ip4:1.2.3.4//24",
    "v=spf1 ip4",
    "v=spf1 ip4:",
    "v=spf1 ip6:::1/129",
    "v=spf1 ip6:::1/0128",
    "v=spf1 ip6:fe80::1%eth0",
    "v=spf1 ip6:1.2.3.4",
    "v=spf1 ip6:::1//64",
    "v=spf1 a/33",
    "v=spf1 a//129",
    "v=spf1 a/24/24",
    "v=spf1 a:",
    "v=spf1 a:example.com/",
    "v=spf1 mx:example.com//",
    "v=spf1 mx/024",
    "v=spf1 include:",
    "v=spf1 include",
    "v=spf1 include:example.com/24",
    "v=spf1 exists",
    "v=spf1 exists:",
    "v=spf1 ptr:",
    "v=spf1 a:museum",
    "v=spf1 a:museum.",
    "v=spf1 a:foo.example.123",
    "v=spf1 a:foo.example-",
    "v=spf1 a:111.222.33.44",
    "v=spf1 a:%{x}.example.com",
    "v=spf1 a:%{c}.example.com",
    "v=spf1 a:%{r}.example.com",
    "v=spf1 a:%{t}.example.com",
    "v=spf1 a:%{d0}.example.com",
    "v=spf1 a:%{d.example.com",
    "v=spf1 a:%.example.com",
    "v=spf1 a:%x.example.com",
    "v=spf1 exists:%{l}x",
    "v=spf1 redirect=",
    "v=spf1 exp=",
    "v=spf1 redirect=a.example redirect=b.example",
    "v=spf1 exp=a.example EXP=b.example",
    "v=spf1 =foo",
    "v=spf1 9x=foo",
    "v=spf1 x=%{",
    "v=spf1 x=%",
    "v=spf1 -redirect=a.example",
    "v=spf1 redirect:a.example",
    "v=spf1 a:caf\u00e9.example",
    "v=spf1 -all \u00a0",
])
def test_syntax_errors_are_permerror(record):
    dns = ZoneDns({"syn.example": [("TXT", record)]})
    assert check_host(dns, "192.0.2.1", "syn.example").result == "permerror"
    with pytest.raises(SpfSyntaxError):
        parse_record(record)


@pytest.mark.parametrize("record", [
    "v=spf1 ip4:0.0.0.0/0 ip4:255.255.255.255/32 ip4:10.0.0.0/8",
    "v=spf1 ip6:::/0 ip6:2001:db8::/32 ip6:::ffff:1.2.3.4 ip6:2001:DB8::1",
    "v=spf1 a a/24 a//64 a/24//64 a:example.com/0//0 mx:%{d}/30 mx//128",
    "v=spf1 include:_spf.example.com exists:%{i}.%{l1r+-}._x.%{d2} ptr ptr:example.com",
    "v=spf1 a:%{d}. exists:%{d}.example.com. a:foo-bar.com a:x.123-456",
    "v=spf1 a:%%%_%-.%{d} a:example.com%{d}",
    "v=spf1 redirect=%{d} exp=explain.%{d} x-foo=bar unknown=%{c}%{r}%{t} a=b name.x=",
    "v=spf1 default=+ x_x=foo",
    "v=spf1 +a -mx ~ptr ?exists:%{ir}.x.example",
    "v=spf1 IP4:1.2.3.4 Include:e.example EXISTS:e.example",
])
def test_valid_syntax(record):
    parse_record(record)


def test_syntax_error_after_a_matching_term_still_permerror():
    dns = ZoneDns({"syn.example": [("TXT", "v=spf1 +all foo:bar")]})
    assert check_host(dns, "192.0.2.1", "syn.example").result == "permerror"


def test_unknown_modifiers_are_ignored():
    dns = ZoneDns({"m.example": [("TXT", "v=spf1 x-m=foo moo=%{s} -all")]})
    assert check_host(dns, "192.0.2.1", "m.example").result == "fail"


# -- mechanisms -----------------------------------------------------------------

def test_ip6_and_ipv4_mapped_client():
    dns = ZoneDns({"v6.example": [("TXT", "v=spf1 ip6:2001:db8::/32 ip4:192.0.2.0/24 -all")]})
    assert check_host(dns, "2001:db8::cb01", "v6.example").result == "pass"
    assert check_host(dns, "2001:db9::1", "v6.example").result == "fail"
    assert check_host(dns, "::ffff:192.0.2.7", "v6.example").result == "pass"
    dns = ZoneDns({"v6.example": [("TXT", "v=spf1 ip6:::ffff:1.2.3.4/128 ip6:::/0 -all")]})
    assert check_host(dns, "1.2.3.4", "v6.example").result == "fail"
    assert check_host(dns, "2001:db8::1", "v6.example").result == "pass"
    dns = ZoneDns({"v6.example": [("TXT", "v=spf1 ip4:0.0.0.0/0 -all")]})
    assert check_host(dns, "2001:db8::1", "v6.example").result == "fail"


def test_a_uses_aaaa_for_ipv6_clients_and_dual_cidr():
    dns = ZoneDns({
        "d.example": [("TXT", "v=spf1 a/24//64 -all"), ("A", "192.0.2.1"),
                      ("AAAA", "2001:db8:1::1")],
    })
    assert check_host(dns, "192.0.2.200", "d.example").result == "pass"
    assert check_host(dns, "192.0.3.1", "d.example").result == "fail"
    assert check_host(dns, "2001:db8:1::ffff", "d.example").result == "pass"
    assert check_host(dns, "2001:db8:2::1", "d.example").result == "fail"
    assert ("d.example", "AAAA") in dns.log


def test_exists_always_queries_a():
    dns = ZoneDns({"e.example": [("TXT", "v=spf1 exists:%{ir}.%{v}.e.example -all")],
                   "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6"
                   ".e.example": [("A", "127.0.0.2")]})
    assert check_host(dns, "2001:db8::1", "e.example").result == "pass"
    assert check_host(dns, "2001:db8::2", "e.example").result == "fail"


def test_cname_is_followed_for_a():
    dns = zone_with("v=spf1 a:www.example.com -all")
    assert check_host(dns, "192.0.2.11", "example.com").result == "pass"


def test_ptr_validation_ignores_rogue_reverse():
    dns = zone_with("v=spf1 ptr -all")
    result = check_host(dns, "10.0.0.4", "example.com")
    assert result.result == "fail"


def test_ptr_dns_error_is_no_match_not_temperror():
    dns = zone_with("v=spf1 ptr ?all", {"5.0.0.10.in-addr.arpa": [("TIMEOUT", True)]})
    assert check_host(dns, "10.0.0.5", "example.com").result == "neutral"


def test_ptr_only_first_ten_names_are_checked():
    names = [(f"h{i}.example.com") for i in range(12)]
    extra = {"7.0.0.10.in-addr.arpa": [("PTR", n) for n in names]}
    extra.update({n: [("A", "10.0.0.99")] for n in names[:11]})
    extra["h11.example.com"] = [("A", "10.0.0.7")]
    dns = zone_with("v=spf1 ptr -all", extra)
    assert check_host(dns, "10.0.0.7", "example.com").result == "fail"
    extra["h9.example.com"] = [("A", "10.0.0.7")]
    dns = zone_with("v=spf1 ptr -all", extra)
    assert check_host(dns, "10.0.0.7", "example.com").result == "pass"


def test_mx_with_more_than_ten_names_is_permerror():
    extra = {"many.example": [("TXT", "v=spf1 mx -all")]
             + [("MX", (i, f"m{i}.many.example")) for i in range(11)]}
    extra.update({f"m{i}.many.example": [("A", "192.0.2.1")] for i in range(11)})
    dns = ZoneDns(extra)
    assert check_host(dns, "192.0.2.1", "many.example").result == "permerror"
    extra["many.example"].pop()
    assert check_host(ZoneDns(extra), "192.0.2.1", "many.example").result == "pass"


def test_include_results():
    zone = {
        "inc.example": [("TXT", "v=spf1 include:p.example include:f.example "
                                "include:s.example include:n.example -all")],
        "p.example": [("TXT", "v=spf1 ip4:192.0.2.1 -all")],
        "f.example": [("TXT", "v=spf1 -ip4:192.0.2.2")],
        "s.example": [("TXT", "v=spf1 ~ip4:192.0.2.3")],
        "n.example": [("TXT", "v=spf1 ?ip4:192.0.2.4")],
    }
    dns = ZoneDns(zone)
    assert check_host(dns, "192.0.2.1", "inc.example").mechanism == "include:p.example"
    for ip in ("192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"):
        assert check_host(dns, ip, "inc.example").result == "fail"


@pytest.mark.parametrize("included, expected", [
    (None, "permerror"),                                  # NXDOMAIN: none -> permerror
    ([("A", "192.0.2.1")], "permerror"),                  # no SPF record
    ([("TXT", "v=spf1 foo")], "permerror"),
    ([("TIMEOUT", True)], "temperror"),
    ([("TXT", "v=spf1 a:t.example")], "temperror"),
])
def test_include_error_propagation(included, expected):
    zone = {"top.example": [("TXT", "v=spf1 include:inc.example -all")],
            "t.example": [("TIMEOUT", True)]}
    if included is not None:
        zone["inc.example"] = included
    assert check_host(ZoneDns(zone), "192.0.2.1", "top.example").result == expected


def test_redirect():
    zone = {
        "r.example": [("TXT", "v=spf1 ip4:192.0.2.1 redirect=t.example")],
        "t.example": [("TXT", "v=spf1 ip4:192.0.2.2 -all exp=why.t.example")],
        "why.t.example": [("TXT", "%{i} is not one of %{d}'s")],
        "ignored.example": [("TXT", "v=spf1 redirect=t.example ?all")],
        "none.example": [("TXT", "v=spf1 redirect=nothing.example")],
        "bad.example": [("TXT", "v=spf1 redirect=%{l}.x")],
    }
    dns = ZoneDns(zone)
    assert check_host(dns, "192.0.2.1", "r.example").result == "pass"
    assert check_host(dns, "192.0.2.2", "r.example").result == "pass"
    failed = check_host(dns, "192.0.2.3", "r.example")
    assert (failed.result, failed.matched_in) == ("fail", "t.example")
    assert failed.explanation == "192.0.2.3 is not one of t.example's"
    assert check_host(dns, "192.0.2.3", "ignored.example").result == "neutral"
    assert check_host(dns, "192.0.2.3", "none.example").result == "permerror"
    # the expanded target x.x has no SPF record: permerror, as for none.example
    assert check_host(dns, "192.0.2.3", "bad.example", "x@bad.example").result == \
        "permerror"


def test_redirect_to_malformed_target_is_permerror():
    dns = ZoneDns({"bad.example": [("TXT", "v=spf1 redirect=%{l}.example")]})
    assert check_host(dns, "192.0.2.3", "bad.example", "a..b@bad.example").result == \
        "permerror"


# -- limits (§4.6.4) ------------------------------------------------------------

def _chain(n: int, tail: str = "-all") -> ZoneDns:
    zone = {f"l{i}.example": [("TXT", f"v=spf1 include:l{i + 1}.example {tail}")]
            for i in range(n)}
    zone[f"l{n}.example"] = [("TXT", "v=spf1 ip4:192.0.2.1 -all")]
    return ZoneDns(zone)


def test_exactly_ten_lookups_allowed_eleven_permerror():
    at = check_host(_chain(10), "192.0.2.1", "l0.example")
    assert (at.result, at.dns_lookups) == ("pass", 10)
    over = check_host(_chain(11), "192.0.2.1", "l0.example")
    assert over.result == "permerror"
    assert "more than 10" in over.reason


def test_every_dns_term_counts():
    zone = {"c.example": [("TXT", "v=spf1 a mx ptr exists:i.example include:i.example "
                                  "a:c.example mx:c.example a a a redirect=r.example"),
                          ("A", "192.0.2.10"), ("MX", (1, "c.example"))],
            "10.2.0.192.in-addr.arpa": [("PTR", "c.example")],
            "i.example": [("TXT", "v=spf1 -all")],
            "r.example": [("TXT", "v=spf1 ip4:192.0.2.99 -all")]}
    result = check_host(ZoneDns(zone), "192.0.2.99", "c.example")
    assert result.result == "permerror"  # redirect is the 11th
    zone["c.example"][0] = ("TXT", zone["c.example"][0][1].replace(" a a a", " a a"))
    result = check_host(ZoneDns(zone), "192.0.2.99", "c.example")
    assert (result.result, result.dns_lookups, result.void_lookups) == ("pass", 10, 2)


def test_ip_and_all_cost_no_lookup_and_terms_after_a_match_are_not_counted():
    record = "v=spf1 ip4:192.0.2.1 " + " ".join(["a"] * 15) + " -all"
    dns = ZoneDns({"x.example": [("TXT", record), ("A", "192.0.2.50")]})
    assert check_host(dns, "192.0.2.1", "x.example").result == "pass"
    assert check_host(dns, "192.0.2.2", "x.example").result == "permerror"


def test_include_loop_ends_in_permerror():
    dns = ZoneDns({"a.example": [("TXT", "v=spf1 include:b.example -all")],
                   "b.example": [("TXT", "v=spf1 include:a.example -all")]})
    assert check_host(dns, "192.0.2.1", "a.example").result == "permerror"


def test_void_lookups_two_allowed_three_permerror():
    two = "v=spf1 exists:n1.example a:n2.example ?all"
    three = "v=spf1 exists:n1.example a:n2.example mx:n3.example ?all"
    zone = {"v.example": [("TXT", two)], "n2.example": [("TXT", "x")]}
    result = check_host(ZoneDns(zone), "192.0.2.1", "v.example")
    assert (result.result, result.void_lookups) == ("neutral", 2)
    zone["v.example"] = [("TXT", three)]
    result = check_host(ZoneDns(zone), "192.0.2.1", "v.example")
    assert result.result == "permerror"
    assert "void" in result.reason


def test_temperror_from_mechanism_lookup():
    dns = ZoneDns({"t.example": [("TXT", "v=spf1 a:slow.example -all")],
                   "slow.example": [("TIMEOUT", True)]})
    assert check_host(dns, "192.0.2.1", "t.example").result == "temperror"
    dns = ZoneDns({"t.example": [("TIMEOUT", True)]})
    assert check_host(dns, "192.0.2.1", "t.example").result == "temperror"


def test_malformed_mechanism_target_is_treated_as_nonexistent():
    dns = ZoneDns({"m.example": [("TXT", "v=spf1 a:%{l}.m.example -all")]})
    result = check_host(dns, "192.0.2.1", "m.example", "a..b@m.example")
    assert result.result == "fail"
    long_local = "x" * 64
    result = check_host(dns, "192.0.2.1", "m.example", f"{long_local}@m.example")
    assert result.result == "fail"


# -- exp (§6.2) -------------------------------------------------------------------

@pytest.mark.parametrize("exp_rrs, expected", [
    ([("TXT", "See http://%{d}/why.html?s=%{S}&i=%{I}")],
     "See http://e.example/why.html?s=a%2Bb%40e.example&i=192.0.2.9"),
    ([("TXT", ["Not ", "allowed: %{c} %{v}"])], "Not allowed: 192.0.2.9 in-addr"),
    ([("TXT", "%{r} at %{t}")], "mx.receiver.example at 1700000000"),
    ([("TXT", "one"), ("TXT", "two")], None),
    ([("TXT", "bad %{x} macro")], None),
    ([("TXT", "bad % macro")], None),
    ([], None),
    ([("TIMEOUT", True)], None),
    (None, None),
])
def test_explanation(exp_rrs, expected):
    zone = {"e.example": [("TXT", "v=spf1 -all exp=%{d2}.why.e.example")]}
    if exp_rrs is not None:
        zone["e.example.why.e.example"] = exp_rrs
    result = check_host(ZoneDns(zone), "192.0.2.9", "e.example", "a+b@e.example",
                        receiver="mx.receiver.example", now=1700000000)
    assert result.result == "fail"
    assert result.explanation == expected
    assert result.void_lookups == 0


def test_exp_of_included_record_is_not_used():
    dns = ZoneDns({"o.example": [("TXT", "v=spf1 -include:i.example ?all exp=x.o.example")],
                   "x.o.example": [("TXT", "outer")],
                   "i.example": [("TXT", "v=spf1 ip4:192.0.2.1 -all exp=x.i.example")],
                   "x.i.example": [("TXT", "inner")]})
    result = check_host(dns, "192.0.2.1", "o.example")
    assert (result.result, result.explanation) == ("fail", "outer")
    redirect = ZoneDns({"o.example": [("TXT", "v=spf1 redirect=i.example exp=x.o.example")],
                        "x.o.example": [("TXT", "outer")],
                        "i.example": [("TXT", "v=spf1 -all exp=x.i.example")],
                        "x.i.example": [("TXT", "inner")]})
    assert check_host(redirect, "192.0.2.1", "o.example").explanation == "inner"


# -- macros (§7) ---------------------------------------------------------------------

CTX4 = MacroContext(ipaddress.ip_address("192.0.2.3"), "strong-bad@email.example.com",
                    "email.example.com", "mx.example.org")
CTX6 = MacroContext(ipaddress.ip_address("2001:db8::cb01"), "strong-bad@email.example.com",
                    "email.example.com", "mx.example.org")


@pytest.mark.parametrize("macro, expected", [
    ("%{s}", "strong-bad@email.example.com"),
    ("%{o}", "email.example.com"),
    ("%{d}", "email.example.com"),
    ("%{d4}", "email.example.com"),
    ("%{d3}", "email.example.com"),
    ("%{d2}", "example.com"),
    ("%{d1}", "com"),
    ("%{dr}", "com.example.email"),
    ("%{d2r}", "example.email"),
    ("%{l}", "strong-bad"),
    ("%{l-}", "strong.bad"),
    ("%{lr}", "strong-bad"),
    ("%{lr-}", "bad.strong"),
    ("%{l1r-}", "strong"),
    ("%{ir}.%{v}._spf.%{d2}", "3.2.0.192.in-addr._spf.example.com"),
    ("%{lr-}.lp._spf.%{d2}", "bad.strong.lp._spf.example.com"),
    ("%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"),
    ("%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", "3.2.0.192.in-addr.strong.lp._spf.example.com"),
    ("%{d2}.trusted-domains.example.net", "example.com.trusted-domains.example.net"),
    ("%{h}", "mx.example.org"),
    ("%{D2R}", "example.email"),
    ("%{dR}", "com.example.email"),
    ("%{d200}", "email.example.com"),
    ("%{l+-=}", "strong.bad"),
    ("%%%_%-", "% %20"),
])
def test_rfc_7_4_macro_examples(macro, expected):
    assert expand(tokenize(macro), CTX4) == expected


def test_ipv6_macro_examples():
    assert expand(tokenize("%{ir}.%{v}._spf.%{d2}"), CTX6) == (
        "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com")
    assert expand(tokenize("%{c}", letters=set("c")), CTX6) == "2001:db8::cb01"


def test_uppercase_macro_is_url_escaped():
    ctx = MacroContext(ipaddress.ip_address("192.0.2.3"), "a b/c~d@x.example", "x.example")
    assert expand(tokenize("%{L}"), ctx) == "a%20b%2Fc~d"


@pytest.mark.parametrize("bad", ["%{d0}", "%{q}", "%{d", "%", "%a", "%{d-.x}", "a b"])
def test_macro_syntax_errors(bad):
    with pytest.raises(MacroError):
        tokenize(bad)


def test_p_macro_validated_name():
    dns = zone_with("v=spf1 exists:%{p}.allowed.example -all", {
        "mail-a.example.com.allowed.example": [("A", "127.0.0.2")],
        "unknown.allowed.example": [("A", "127.0.0.2")],
    })
    assert check_host(dns, "192.0.2.129", "example.com").result == "pass"
    # rogue PTR: not validated -> "unknown"
    assert check_host(dns, "10.0.0.4", "example.com").result == "pass"
    dns.zone.pop("unknown.allowed.example")
    assert check_host(dns, "10.0.0.4", "example.com").result == "fail"


def test_p_macro_prefers_names_in_the_domain():
    extra = {"9.2.0.192.in-addr.arpa": [("PTR", "other.example.net"),
                                         ("PTR", "host.p.example")],
             "other.example.net": [("A", "192.0.2.9")],
             "host.p.example": [("A", "192.0.2.9")],
             "p.example": [("TXT", "v=spf1 -all exp=e.p.example")],
             "e.p.example": [("TXT", "%{p}")]}
    result = check_host(ZoneDns(extra), "192.0.2.9", "p.example")
    assert result.explanation == "host.p.example"


def test_sender_defaults():
    dns = ZoneDns({"s.example": [("TXT", "v=spf1 -all exp=e.s.example")],
                   "e.s.example": [("TXT", "%{s} %{l} %{o} %{h}")]})
    assert check_host(dns, "192.0.2.1", "s.example").explanation == \
        "postmaster@s.example postmaster s.example unknown"
    assert check_host(dns, "192.0.2.1", "s.example", "@o.example", helo="h.example"
                      ).explanation == "postmaster@o.example postmaster o.example h.example"


def test_long_expansion_is_truncated_from_the_left():
    name = truncate_name(".".join(["a" * 60] * 5) + ".example.com")
    assert len(name) <= 253 and name.endswith(".example.com")
    assert name.count(".") == 4
    label = "x" * 60
    sender = f"{label}.{label}.{label}.{label}.{label}@t.example"
    dns = ZoneDns({"t.example": [("TXT", "v=spf1 exists:%{l}.%{d} -all")],
                   truncate_name(f"{label}.{label}.{label}.{label}.{label}.t.example"):
                       [("A", "127.0.0.2")]})
    assert check_host(dns, "192.0.2.1", "t.example", sender).result == "pass"


def test_zone_from_testsuite_layout():
    dns = ZoneDns.from_testsuite({
        "ts.example": [{"TXT": "v=spf1 mx a:both.example -all"}, {"SPF": "v=spf1 +all"},
                       {"MX": [10, "mx.ts.example"]}, "TIMEOUT"],
        "mx.ts.example": [{"A": ["192.0.2.1", "192.0.2.2"]}],
        "both.example": [{"A": "192.0.2.3"}, {"AAAA": "TIMEOUT"}],
        "empty.example": [],
    })
    assert [check_host(dns, ip, "ts.example").result
            for ip in ("192.0.2.2", "192.0.2.3", "192.0.2.9")] == ["pass", "pass", "fail"]
    assert dns.query("ts.example", "A").status == "ERROR"       # TIMEOUT after the others
    assert dns.query("both.example", "AAAA").status == "ERROR"
    assert dns.query("empty.example", "TXT").status == "NODATA"
    assert dns.query("missing.example", "TXT").status == "NXDOMAIN"
    assert check_host(dns, "2001:db8::1", "ts.example").result == "temperror"


def test_redirect_with_macro_and_ipv6_mx_cidr():
    dns = ZoneDns({
        "r6.example": [("TXT", "v=spf1 redirect=_spf.%{d}")],
        "_spf.r6.example": [("TXT", "v=spf1 mx:mx6.example//64 -all")],
        "mx6.example": [("MX", (5, "host.mx6.example."))],
        "host.mx6.example": [("AAAA", "2001:db8:6::25")],
    })
    assert check_host(dns, "2001:db8:6::ffff", "r6.example").result == "pass"
    assert check_host(dns, "2001:db8:7::1", "r6.example").result == "fail"
    result = check_host(dns, "192.0.2.1", "r6.example")
    assert (result.result, result.void_lookups) == ("fail", 1)  # no A for the MX host


def test_adapter_over_dns_client():
    from check_smtp_posture import dnslookup
    from check_smtp_posture.spf.adapter import DnsClientLookup

    class FakeClient:
        def __init__(self):
            self.asked = []

        def query(self, name, rdtype):
            self.asked.append((name, rdtype))
            if name == "fail.example":
                return dnslookup.DnsAnswer(name, rdtype, dnslookup.TIMEOUT, detail="slow",
                                           elapsed=0.5)
            if rdtype == "MX":
                return dnslookup.DnsAnswer(name, rdtype, dnslookup.NOERROR,
                                           ("20 b.example.", "10 a.example.", "0 ."),
                                           elapsed=0.25)
            if rdtype == "PTR":
                return dnslookup.DnsAnswer(name, rdtype, dnslookup.NOERROR, ("h.example.",))
            return dnslookup.DnsAnswer(name, rdtype, dnslookup.NXDOMAIN, elapsed=0.25)

    client = FakeClient()
    dns = DnsClientLookup(client)
    mx = dns.query("m.example", "MX")
    assert (mx.status, mx.records) == ("OK", ((20, "b.example"), (10, "a.example"), (0, ".")))
    assert dns.query("M.example.", "MX") is mx  # cached, case-insensitively
    assert dns.query("1.2.0.192.in-addr.arpa", "PTR").records == ("h.example",)
    assert dns.query("n.example", "A").status == "NXDOMAIN"
    failed = dns.query("fail.example", "TXT")
    assert (failed.status, failed.detail) == ("ERROR", "TIMEOUT (slow)")
    dns.query("fail.example", "TXT")  # failures are asked again
    assert client.asked.count(("fail.example", "TXT")) == 2
    assert (dns.queries, dns.elapsed) == (5, 1.5)


def test_adapter_never_asks_for_names_dns_would_rewrite():
    from check_smtp_posture.spf.adapter import DnsClientLookup

    class NoClient:
        def query(self, name, rdtype):
            raise AssertionError(f"asked {name}")

    dns = DnsClientLookup(NoClient())
    for name in ("caf\u00e9.example", "\u00b2.com", "x" * 64 + ".example"):
        assert dns.query(name, "A").status == "NXDOMAIN"


def test_ptr_and_p_macro_for_ipv6():
    reverse = ipaddress.ip_address("2001:db8::25").reverse_pointer
    dns = ZoneDns({
        "p6.example": [("TXT", "v=spf1 ptr:mail.p6.example -all exp=e.p6.example")],
        "e.p6.example": [("TXT", "%{p} %{v}")],
        reverse: [("PTR", "h.mail.p6.example")],
        "h.mail.p6.example": [("AAAA", "2001:db8::25")],
    })
    assert check_host(dns, "2001:db8::25", "p6.example").result == "pass"
    failed = check_host(dns, "2001:db8::26", "p6.example")
    assert (failed.result, failed.explanation) == ("fail", "unknown ip6")
