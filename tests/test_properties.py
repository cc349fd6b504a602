"""Property-based tests of the parsers: hostile input meets each parser's contract.

The contract of every parser here: it returns its data, or raises the
library's own typed error for it (SmtpError subclasses, SpfSyntaxError,
MacroError, ValueError where documented); nothing else escapes. Where a
round trip exists (a reply written and read back, an SPF record rendered from
mechanisms and parsed), it gives back what went in.

The budget is fixed by the profile below (deadline off, a fixed number of
examples, derandomised so CI sees the same examples every run). Set
CSP_HYPOTHESIS=explore for a longer random search.
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
import socket
import tempfile
import threading
import unicodedata
import zlib
from contextlib import redirect_stdout
from unittest import mock

import dns.name
import nagiosplugin
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from nagiosplugin.state import Critical, Ok, Warn

from check_smtp_posture import dnsbl, names, targets
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.dnslookup import (
    ERROR,
    NODATA,
    NOERROR,
    NXDOMAIN,
    SERVFAIL,
    TIMEOUT,
    DnsAnswer,
)
from check_smtp_posture.nagios import perfdata
from check_smtp_posture.nagios.contexts import MxContext
from check_smtp_posture.plugins import check_dnsbl
from check_smtp_posture.sanitize import one_line, printable
from check_smtp_posture.smtp.dialogue import Extensions
from check_smtp_posture.smtp.errors import (
    SmtpConnectionClosed,
    SmtpProtocolError,
    SmtpTimeout,
)
from check_smtp_posture.smtp.reply import MAX_LINE, MAX_LINES, LineReader, Reply, parse_reply
from check_smtp_posture.spf import ZoneDns, check_host
from check_smtp_posture.spf.evaluate import RESULTS
from check_smtp_posture.spf.macro import (
    DOMAIN_LETTERS,
    EXP_LETTERS,
    Macro,
    MacroContext,
    MacroError,
    expand,
    parse_domain_spec,
    tokenize,
)
from check_smtp_posture.spf.record import Modifier, SpfSyntaxError, parse_record
from tests import strategies as s

settings.register_profile(
    "properties", deadline=None, max_examples=200, derandomize=True, database=None,
    print_blob=False, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "properties-explore", parent=settings.get_profile("properties"), max_examples=3000,
    derandomize=False)
# Applied per test (not loaded globally) so other test files keep their own settings.
PROFILE = settings.get_profile(
    "properties-explore" if os.environ.get("CSP_HYPOTHESIS") == "explore" else "properties")


# a search of this size takes most of `make test-fast`'s budget: `make test` runs it
pytestmark = pytest.mark.slow


def budget(n: int):
    """The profile with its example count scaled for a slower or faster property."""
    return settings(PROFILE, max_examples=max(1, PROFILE.max_examples * n // 200))


READER_ERRORS = (SmtpProtocolError, SmtpConnectionClosed, SmtpTimeout)


def read_outcome(data: bytes, sizes, end="eof"):
    """What LineReader.read_reply makes of `data` delivered in chunks of `sizes`.

    ("ok", reply, raw, bytes left over) or ("error", exception type, message);
    any other exception propagates and fails the test.
    """
    sock = s.ChunkedSocket(s.chunked(data, sizes), end)
    reader = LineReader(sock, Deadline(60))
    try:
        reply, raw = reader.read_reply("banner")
    except READER_ERRORS as exc:
        assert exc.phase == "banner"
        return ("error", type(exc), str(exc))
    # every recv() ran under a timeout the deadline gave: never None (blocking) or 0
    assert sock.timeouts and all(t > 0 for t in sock.timeouts)
    return ("ok", reply, raw, reader.pending + sock.unread)


# ============================================================== 1. SMTP reply reader


@PROFILE
@given(lines=st.lists(st.one_of(s.line_text, s.nasty_text), max_size=6))
def test_parse_reply_raises_only_protocol_errors(lines):
    try:
        reply = parse_reply(lines, "ehlo")
    except SmtpProtocolError as exc:
        assert exc.phase == "ehlo"
        return
    assert 200 <= reply.code <= 599
    assert len(reply.lines) == len(lines)
    # the derived views never fail either
    str(reply), reply.text, reply.first_line  # noqa: B018
    if reply.enhanced is not None:
        assert reply.enhanced.split(".")[0] == str(reply.code)[0]


@PROFILE
@given(reply=s.well_formed_replies())
def test_well_formed_reply_parses_to_its_code_and_lines(reply):
    code, texts, data = reply
    lines = data.decode().split("\r\n")[:-1]
    parsed = parse_reply(lines)
    assert (parsed.code, parsed.lines) == (code, texts)
    assert parsed.category == code // 100


@PROFILE
@given(reply=s.well_formed_replies(max_lines=6), other=s.reply_codes, data=st.data())
def test_multiline_reply_with_a_changed_code_is_a_protocol_error(reply, other, data):
    code, texts, _ = reply
    assume(other != code and len(texts) >= 2)
    where = data.draw(st.integers(1, len(texts) - 1))
    lines = [f"{code}-{t}" for t in texts[:-1]] + [f"{code} {texts[-1]}"]
    lines[where] = f"{other}{lines[where][3:]}"
    with pytest.raises(SmtpProtocolError, match="reply code changed"):
        parse_reply(lines)
    # and on the wire: the reader reports it as the same typed error
    outcome = read_outcome(("\r\n".join(lines) + "\r\n").encode(), [])
    assert outcome[:2] == ("error", SmtpProtocolError)


@PROFILE
@given(reply=s.well_formed_replies(max_lines=6), data=st.data())
def test_misplaced_continuation_marks_are_protocol_errors(reply, data):
    code, texts, _ = reply
    seps = ["-"] * (len(texts) - 1) + [" "]
    at = data.draw(st.integers(0, len(texts) - 1))
    seps[at] = " " if seps[at] == "-" else "-"   # a final line early, or none at the end
    lines = [f"{code}{sep}{t}" for sep, t in zip(seps, texts)]
    with pytest.raises(SmtpProtocolError):
        parse_reply(lines)


@PROFILE
@given(data=s.hostile_wire, sizes=s.chunk_sizes, end=st.sampled_from(s.SOCKET_ENDS))
def test_reader_raises_only_typed_errors_and_keeps_its_bounds(data, sizes, end):
    outcome = read_outcome(data, sizes, end)
    if outcome[0] == "error":
        return
    _, reply, raw, rest = outcome
    assert reply == parse_reply(raw)
    assert 1 <= len(raw) <= MAX_LINES
    assert all(len(line) <= MAX_LINE for line in raw)
    # nothing lost: what was consumed is a prefix of the data, the rest is still there
    assert data.endswith(rest)
    assert b"\n" in data[:len(data) - len(rest)]


@PROFILE
@given(data=s.hostile_wire, sizes=s.chunk_sizes, other=s.chunk_sizes,
       end=st.sampled_from(s.SOCKET_ENDS))
def test_reader_result_does_not_depend_on_how_the_bytes_arrive(data, sizes, other, end):
    one_piece = read_outcome(data, [], end)
    assert read_outcome(data, sizes, end) == one_piece
    assert read_outcome(data, other, end) == one_piece
    assert read_outcome(data, [1] * min(len(data), 2000), end) == one_piece


@PROFILE
@given(reply=s.well_formed_replies(), trailer=st.binary(max_size=50), sizes=s.chunk_sizes)
def test_reader_gives_back_a_well_formed_reply_and_leaves_what_follows(reply, trailer, sizes):
    code, texts, data = reply
    outcome = read_outcome(data + trailer, sizes)
    assert outcome[0] == "ok", outcome
    _, parsed, raw, rest = outcome
    assert (parsed.code, parsed.lines) == (code, texts)
    assert raw == data.decode().split("\r\n")[:-1]
    assert rest == trailer


@PROFILE
@given(reply=s.well_formed_replies(max_lines=3), cut=st.data(),
       end=st.sampled_from(s.SOCKET_ENDS))
def test_a_reply_cut_short_is_closed_or_timed_out_never_a_reply(reply, cut, end):
    _, _, data = reply
    at = cut.draw(st.integers(0, len(data) - 1))
    outcome = read_outcome(data[:at], [], end)
    expected = SmtpTimeout if end == "timeout" else SmtpConnectionClosed
    assert outcome[:2] == ("error", expected)


@pytest.mark.parametrize("length, ok", [(MAX_LINE, True), (MAX_LINE + 1, False)])
def test_the_line_cap_holds_at_its_edge_whatever_the_chunking(length, ok):
    line = b"250 " + b"x" * (length - 6) + b"\r\n"
    assert len(line) == length
    results = {read_outcome(line, sizes)[0] for sizes in ([], [1] * length, [4096] * 3)}
    assert results == {"ok" if ok else "error"}


@pytest.mark.parametrize("count, ok", [(MAX_LINES, True), (MAX_LINES + 1, False)])
def test_the_line_count_cap_holds_at_its_edge(count, ok):
    data = b"250-x\r\n" * (count - 1) + b"250 end\r\n"
    outcome = read_outcome(data, [7])
    assert outcome[0] == ("ok" if ok else "error")


@budget(100)
@given(data=s.hostile_wire, sizes=s.chunk_sizes)
def test_reader_over_a_real_socket_agrees_with_the_model(data, sizes):
    """The chunked fake socket behaves like a real one: same outcome over a socketpair."""
    left, right = socket.socketpair()
    try:
        def send():
            try:
                for chunk in s.chunked(data, sizes):
                    right.sendall(chunk)
                right.shutdown(socket.SHUT_WR)
            except OSError:
                pass  # the reader stopped early and closed its end

        writer = threading.Thread(target=send, daemon=True)
        writer.start()
        reader = LineReader(left, Deadline(10))
        try:
            reply, raw = reader.read_reply("banner")
            real = ("ok", reply, raw)
        except READER_ERRORS as exc:
            real = ("error", type(exc), str(exc))
        left.close()
        writer.join(10)
    finally:
        left.close()
        right.close()
    assert real == read_outcome(data, sizes)[:3]


# ============================================================== 2. EHLO extensions


def _check_extensions(ext: Extensions) -> None:
    for keyword, params in ext.keywords.items():
        assert keyword and " " not in keyword
        assert params == params.strip()
    for mech in ext.auth_mechanisms:
        assert mech and not any(ch.isspace() for ch in mech)
    assert len(set(ext.auth_mechanisms)) == len(ext.auth_mechanisms)


@PROFILE
@given(lines=st.lists(st.one_of(s.line_text, s.nasty_text), min_size=1, max_size=10))
def test_extension_parser_takes_any_reply_lines(lines):
    ext = Extensions.from_reply(Reply(250, tuple(lines)))
    _check_extensions(ext)


@PROFILE
@given(data=s.hostile_wire, sizes=s.chunk_sizes)
def test_ehlo_bytes_to_extensions_raise_only_typed_errors(data, sizes):
    outcome = read_outcome(data, sizes)
    if outcome[0] == "ok":
        _check_extensions(Extensions.from_reply(outcome[1]))


@PROFILE
@given(greeting=s.line_text,
       offered=st.dictionaries(s.ehlo_keywords, s.ehlo_params, max_size=8).filter(
           lambda d: len({k.upper() for k in d}) == len(d)
           and not any(k.upper().startswith("AUTH") for k in d)))
def test_ehlo_keywords_round_trip(greeting, offered):
    lines = [greeting] + [" ".join([k, *p]) for k, p in offered.items()]
    ext = Extensions.from_reply(Reply(250, tuple(lines)))
    assert ext.keywords == {k.upper(): " ".join(p) for k, p in offered.items()}
    assert all(k.lower() in ext for k in offered)
    assert not ext.obsolete_auth and ext.auth_mechanisms == ()


@PROFILE
@given(auth_lines=st.lists(st.tuples(st.booleans(), s.sasl_mechanisms), min_size=1,
                           max_size=4),
       others=st.lists(s.ehlo_keywords.filter(lambda k: not k.upper().startswith("AUTH")),
                       max_size=3))
def test_auth_lines_in_either_syntax_merge_in_order(auth_lines, others):
    lines = ["mx.example greets you", *others]
    for obsolete, mechs in auth_lines:
        lines.append(("AUTH=" if obsolete else "AUTH ") + " ".join(mechs))
    ext = Extensions.from_reply(Reply(250, tuple(lines)))
    expected = dict.fromkeys(m.upper() for _, mechs in auth_lines for m in mechs)
    assert ext.auth_mechanisms == tuple(expected)
    assert ext.obsolete_auth == any(obsolete for obsolete, _ in auth_lines)


# ============================================================== 3. SPF records and macros


@PROFILE
@given(text=st.one_of(s.nasty_text, s.macro_strings()),
       letters=st.sampled_from([DOMAIN_LETTERS, EXP_LETTERS]), allow_space=st.booleans())
def test_tokenize_raises_only_macro_errors(text, letters, allow_space):
    try:
        tokens = tokenize(text, letters=letters, allow_space=allow_space)
    except MacroError:
        return
    for token in tokens:
        assert isinstance(token, (str, Macro))
        if isinstance(token, Macro):
            assert token.letter.lower() in letters
            assert token.digits is None or token.digits > 0
    # no two literals in a row: the tokenizer joins them
    assert not any(isinstance(a, str) and isinstance(b, str) for a, b in zip(tokens, tokens[1:]))


def _render(tokens) -> str:
    """Tokens back as a macro string that tokenize() reads as the same tokens."""
    out = []
    for token in tokens:
        out.append(token.replace("%", "%%").replace(" ", "%_") if isinstance(token, str)
                   else str(token))
    return "".join(out)


@PROFILE
@given(text=s.macro_strings())
def test_tokens_rendered_back_tokenize_the_same(text):
    try:
        tokens = tokenize(text, letters=EXP_LETTERS, allow_space=True)
    except MacroError:
        return
    assert tokenize(_render(tokens), letters=EXP_LETTERS) == tokens


@PROFILE
@given(text=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                  blacklist_characters="%"), max_size=80),
       ctx_values=st.tuples(s.line_text, s.line_text))
def test_text_without_macros_expands_to_itself(text, ctx_values):
    tokens = tokenize(text)
    assert tokens == ([text] if text else [])
    ctx = MacroContext(ipaddress.ip_address("192.0.2.1"), *ctx_values)
    assert expand(tokens, ctx) == text


# values a macro can expand to: what comes from the command line and from DNS
_printable_values = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")),
                            max_size=40)


@st.composite
def macro_contexts(draw):
    ip = draw(st.one_of(s.ipv4_addresses, s.ipv6_addresses))
    local = draw(_printable_values)
    domain = ".".join(draw(st.lists(s.toplabels, min_size=1, max_size=5)))
    ptr = draw(_printable_values)
    return MacroContext(ip, f"{local}@{domain}", domain, draw(_printable_values),
                        draw(_printable_values), validated_name=lambda: ptr,
                        now=draw(st.floats(0, 2**33)))


@PROFILE
@given(text=s.macro_strings(), ctx=macro_contexts())
def test_expansion_never_raises_nor_breaks_the_line(text, ctx):
    try:
        tokens = tokenize(text, letters=EXP_LETTERS, allow_space=True)
    except MacroError:
        return
    out = expand(tokens, ctx)
    assert not set(out) & {"\r", "\n", "\x00"}


@PROFILE
@given(macro=s.macros, ctx=macro_contexts())
def test_upper_case_macros_expand_url_escaped(macro, ctx):
    upper = Macro(macro.letter.upper(), macro.digits, macro.reverse, macro.delimiters)
    assert re.fullmatch(r"[A-Za-z0-9._~%-]*", expand([upper], ctx))


@PROFILE
@given(labels=st.lists(s.toplabels, min_size=1, max_size=8),
       digits=st.one_of(st.none(), st.integers(1, 10)), reverse=st.booleans())
def test_digit_and_reverse_transformers_keep_the_right_labels(labels, digits, reverse):
    ctx = MacroContext(ipaddress.ip_address("192.0.2.1"), "x@example.org", ".".join(labels))
    parts = labels[::-1] if reverse else labels
    if digits is not None:
        parts = parts[-digits:]
    assert expand([Macro("d", digits, reverse, "")], ctx) == ".".join(parts)


@PROFILE
@given(labels=st.lists(s.toplabels, min_size=1, max_size=8), zeros=st.integers(0, 3000),
       keep=st.one_of(st.integers(1, 200).map(str), st.builds(
           lambda first, more: first + "7" * more, st.sampled_from("123456789"),
           st.integers(3, 6000))))
def test_any_digit_transformer_keeps_at_most_every_label(labels, zeros, keep):
    """RFC 7208 bounds neither the digits nor leading zeros: %{d0002} is %{d2}."""
    tokens = tokenize(f"%{{d{'0' * zeros}{keep}}}")
    ctx = MacroContext(ipaddress.ip_address("192.0.2.1"), "x@example.org", ".".join(labels))
    kept = labels if len(keep) > 3 else labels[-int(keep):]
    assert expand(tokens, ctx) == ".".join(kept)


@PROFILE
@given(ip=st.one_of(s.ipv4_addresses, s.ipv6_addresses))
def test_ir_v_arpa_is_the_reverse_pointer(ip):
    ctx = MacroContext(ip, "x@example.org", "example.org")
    assert expand(tokenize("%{ir}.%{v}.arpa"), ctx) == ip.reverse_pointer


@PROFILE
@given(text=st.one_of(s.nasty_text, s.macro_strings()))
def test_parse_domain_spec_raises_only_macro_errors(text):
    try:
        tokens = parse_domain_spec(text)
    except MacroError:
        return
    assert tokens == tokenize(text) and tokens


@PROFILE
@given(spec=s.domain_specs())
def test_generated_domain_specs_parse_to_their_tokens(spec):
    text, tokens = spec
    assert parse_domain_spec(text) == tokens


@PROFILE
@given(text=st.one_of(s.nasty_text, s.near_valid_records(),
                      s.nasty_text.map(lambda t: "v=spf1 " + t)))
def test_parse_record_raises_only_spf_syntax_errors(text):
    try:
        record = parse_record(text)
    except SpfSyntaxError as exc:
        assert type(exc) is SpfSyntaxError
        return
    assert record.text == text
    assert len(record.terms) == len(record.mechanisms) + len(record.modifiers)
    assert 0 <= record.lookup_terms() <= len(record.terms)
    for mech in record.mechanisms:
        assert mech.result in ("pass", "fail", "softfail", "neutral")


@PROFILE
@given(record=s.spf_records())
def test_spf_record_rendered_from_terms_parses_back_to_them(record):
    text, terms, redirect, exp = record
    parsed = parse_record(text)
    assert parsed.terms == terms
    assert parsed.mechanisms == [t for t in terms if not isinstance(t, Modifier)]
    assert parsed.modifiers == [t for t in terms if isinstance(t, Modifier)]
    assert (parsed.redirect, parsed.exp) == (redirect, exp)


@st.composite
def spf_zones(draw):
    """An in-memory zone around example.org whose records are near-valid SPF."""
    record = draw(st.one_of(s.near_valid_records(), s.spf_records().map(lambda r: r[0])))
    zone = {"example.org": [("TXT", record)]}
    others = st.sampled_from(["a.example.org", "b.example.org", "x.example.com",
                              "1.2.0.192.in-addr.arpa"])
    for _ in range(draw(st.integers(0, 6))):
        name = draw(others)
        kind = draw(st.sampled_from(["TXT", "A", "AAAA", "MX", "PTR", "CNAME", "TIMEOUT"]))
        if kind == "TXT":
            value = draw(st.one_of(s.near_valid_records(), s.macro_strings()))
        elif kind == "A":
            value = str(draw(s.ipv4_addresses))
        elif kind == "AAAA":
            value = str(draw(s.ipv6_addresses))
        elif kind == "TIMEOUT":
            value = True
        elif kind == "MX":
            value = (draw(st.integers(0, 65535)), draw(others))
        else:
            value = draw(others)
        zone.setdefault(name, []).append((kind, value))
    return zone


@budget(100)
@given(zone=spf_zones(), ip=st.one_of(s.ipv4_addresses, s.ipv6_addresses),
       sender=st.one_of(st.none(), _printable_values))
def test_check_host_always_gives_one_of_the_seven_results(zone, ip, sender):
    result = check_host(ZoneDns(zone), ip, "example.org", sender, now=0)
    assert result.result in RESULTS
    assert result.dns_lookups <= 11   # counting stops at the one over the limit
    if result.explanation is not None:
        assert result.result == "fail"
        assert not set(result.explanation) & {"\r", "\n", "\x00"}


# ============================================================== 4. DNSBL answers


def _answer(status, records=()):
    return DnsAnswer("q.example", "A", status, tuple(records))


dnsbl_answers = st.one_of(
    st.lists(s.dnsbl_answer_addresses, min_size=1, max_size=4, unique=True).map(
        lambda r: _answer(NOERROR, r)),
    st.sampled_from([NXDOMAIN, NODATA, TIMEOUT, SERVFAIL, ERROR]).map(_answer))
zone_specs = st.builds(
    lambda name, errs: dnsbl.ZoneSpec(name, dnsbl.IP, tuple(errs)),
    st.sampled_from(["bl.example", "zen.spamhaus.org", "multi.uribl.com"]),
    st.lists(s.loopback_nets, max_size=3))
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


def expected_outcome(zone, answer):
    """The rules of check_dnsbl(1), 'Answers are validated', for one A answer."""
    if answer.status in (NXDOMAIN, NODATA):
        return dnsbl.CLEAN
    if answer.status == TIMEOUT:
        return dnsbl.TIMED_OUT
    if answer.status != NOERROR:
        return dnsbl.FAILED
    addrs = [ipaddress.ip_address(a) for a in answer.records]
    if any(a not in LOOPBACK for a in addrs):
        return dnsbl.INVALID_ANSWER
    if any(a in net for a in addrs for net in zone.errors):
        return dnsbl.ERROR_ANSWER
    return dnsbl.LISTED


@budget(400)
@given(zone=zone_specs, answer=dnsbl_answers)
def test_dnsbl_answers_are_classified_by_the_documented_rules(zone, answer):
    outcome, codes, detail = dnsbl.classify(zone, answer)
    assert outcome == expected_outcome(zone, answer)
    if outcome in (dnsbl.LISTED, dnsbl.ERROR_ANSWER, dnsbl.INVALID_ANSWER):
        assert sorted(codes) == sorted(answer.records)
    else:
        assert codes == ()


@PROFILE
@given(low=st.integers(0, 255))
def test_spamhaus_error_range_is_never_a_listing(low):
    zen = next(z for z in dnsbl.DEFAULT_IP_ZONES if z.name == "zen.spamhaus.org")
    outcome, _, _ = dnsbl.classify(zen, _answer(NOERROR, [f"127.255.255.{low}"]))
    assert outcome == dnsbl.ERROR_ANSWER


@budget(300)
@given(zone=zone_specs, canary=dnsbl_answers,
       answers=st.lists(dnsbl_answers, min_size=1, max_size=4))
def test_a_zone_that_lists_the_canary_or_answers_outside_127_counts_nothing(
        zone, canary, answers):
    lookups = [dnsbl.Lookup(zone, "127.0.0.1", "1.0.0.127." + zone.name, canary=True)]
    lookups += [dnsbl.Lookup(zone, f"192.0.2.{n}", f"{n}.2.0.192.{zone.name}")
                for n in range(len(answers))]
    for lk, answer in zip(lookups, [canary, *answers]):
        lk.outcome, lk.codes, lk.detail = dnsbl.classify(zone, answer)
    facts = check_dnsbl.DnsblFacts(lookups=lookups,
                                   zones={zone.name: dnsbl.zone_health(zone, lookups)})
    outcomes = [lk.outcome for lk in lookups]
    broken = lookups[0].outcome == dnsbl.LISTED or dnsbl.INVALID_ANSWER in outcomes
    unusable = {dnsbl.ERROR_ANSWER, dnsbl.TIMED_OUT, dnsbl.FAILED}
    state = (dnsbl.BROKEN if broken else dnsbl.UNUSABLE
             if unusable & set(outcomes) else dnsbl.ZONE_OK)
    assert facts.zones[zone.name].state == state
    listed = [lk for lk in lookups[1:] if lk.outcome == dnsbl.LISTED]
    assert facts.listings == ([] if broken else listed)


@PROFILE
@given(text=st.one_of(s.nasty_text, st.builds(
    lambda name, errs: name + "=" + ",".join(errs),
    st.sampled_from(["bl.example", "zen.spamhaus.org", "BL.Example.", "-bad", "a..b", ""]),
    st.lists(st.one_of(s.dnsbl_answer_addresses, s.nasty_text,
                       s.loopback_nets.map(str), st.just("::1")), max_size=3))))
def test_zone_argument_parser_raises_only_value_errors(text):
    try:
        spec = dnsbl.parse_zone(text)
    except ValueError:
        return
    assert names.is_hostname(spec.name)
    assert all(net.version == 4 for net in spec.errors)


class _DnsblClient:
    """The DnsClient check_dnsbl asks: the canary, the subject and its TXT reason."""

    def __init__(self, canary, subject, txt):
        self.canary, self.subject, self.txt = canary, subject, txt
        self.dnssec = False
        self.asked = []

    def query(self, name, rdtype):
        self.asked.append((name, rdtype))
        if rdtype == "TXT":
            return DnsAnswer(name, "TXT", NOERROR, (self.txt,))
        answer = self.canary if name.startswith("1.0.0.127.") else self.subject
        return DnsAnswer(name, "A", answer.status, answer.records)


# TXT reasons a zone may give: anything (dnslookup decodes them with "replace")
_txt_reasons = st.one_of(s.nasty_text, st.text(max_size=300))


@budget(150)
@given(canary=dnsbl_answers, subject=dnsbl_answers, txt=_txt_reasons,
       errs=st.lists(s.loopback_nets, max_size=2), strict=st.booleans())
def test_check_dnsbl_states_follow_the_classification(canary, subject, txt, errs, strict):
    zone = "bl.example" + ("=" + ",".join(map(str, errs)) if errs else "")
    spec = dnsbl.parse_zone(zone)
    client = _DnsblClient(canary, subject, txt)
    # one query at a time, canary first: a timed-out canary leaves the address unasked
    argv = ["--no-default-zones", "--zone", zone, "--ip", "192.0.2.25", "--concurrency", "1"] + (
        ["--strict"] if strict else [])
    buf = io.StringIO()
    with mock.patch.object(check_dnsbl.cli, "dns_client", lambda args, deadline: client), \
            redirect_stdout(buf):
        code = check_dnsbl.main(argv)
    first = buf.getvalue().split("\n")[0]

    c_out, s_out = expected_outcome(spec, canary), expected_outcome(spec, subject)
    if c_out == dnsbl.TIMED_OUT:
        s_out = dnsbl.SKIPPED
    broken = c_out == dnsbl.LISTED or dnsbl.INVALID_ANSWER in (c_out, s_out)
    listed = s_out == dnsbl.LISTED and not broken
    zone_bad = broken or {c_out, s_out} - {dnsbl.LISTED, dnsbl.CLEAN}
    expected = 1 if listed or (strict and zone_bad) else 0
    assert code == expected, buf.getvalue()
    assert first.startswith(f"DNSBL {['OK', 'WARNING'][expected]} - ")
    assert ("192.0.2.25 listed on bl.example" in first) == listed
    # the zone's text is sanitised: one line, one perfdata separator, no control character
    assert first.count("|") == 1 and "listed=" in first.partition(" | ")[2]
    assert first.isprintable()
    asked_txt = [q for q in client.asked if q[1] == "TXT"]
    assert bool(asked_txt) == (s_out == dnsbl.LISTED)


@PROFILE
@given(ip=st.one_of(s.ipv4_addresses, s.ipv6_addresses))
def test_dnsbl_query_name_is_the_reversed_address_under_the_zone(ip):
    zone = dnsbl.ZoneSpec("bl.example")
    qname = dnsbl.query_name(str(ip), zone)
    arpa = ip.reverse_pointer.rsplit(".", 2)[0]
    assert qname == f"{arpa}.bl.example"
    assert len(qname.split(".")) == (4 if ip.version == 4 else 32) + 2


# ============================================================== 5. MX targets and names


class _MxClient:
    """A DnsClient over generated answers: the MX answer, then address answers picked
    by a stable hash of (name, type), some of them aliases; PTR names for every address."""

    dnssec = False

    def __init__(self, mx_answer, address_answers, ptr_names=()):
        self.mx_answer = mx_answer
        self.address_answers = address_answers
        self.ptr_names = ptr_names

    def reverse(self, address):
        if not self.ptr_names:
            return DnsAnswer(address, "PTR", NXDOMAIN)
        return DnsAnswer(address, "PTR", NOERROR, tuple(n.to_text() for n in self.ptr_names))

    def query(self, name, rdtype):
        if rdtype == "MX":
            return self.mx_answer
        pick = self.address_answers[zlib.crc32(f"{name} {rdtype}".encode())
                                    % len(self.address_answers)]
        status, records, alias = pick
        if status == NOERROR:
            version = 4 if rdtype == "A" else 6
            records = tuple(str(a) for a in records if a.version == version)
            if not records:
                status = NODATA
        return DnsAnswer(name, rdtype, status, records if status == NOERROR else (),
                         canonical_name=alias.to_text() if alias else name)


address_answers = st.lists(st.tuples(
    st.sampled_from([NOERROR, NOERROR, NXDOMAIN, NODATA, TIMEOUT, SERVFAIL, ERROR]),
    st.lists(s.any_addresses, max_size=3),
    st.one_of(st.none(), s.dns_names(allow_root=False))), min_size=1, max_size=4)
mx_sets = st.lists(st.tuples(st.integers(0, 65535), s.dns_names()), max_size=5)


def _assert_display_safe(text: str) -> None:
    assert text.isprintable() and len(text.splitlines()) <= 1


def _assert_label_safe(label: str) -> None:
    assert not set(label) & {"'", "=", " ", "|"} and not any(ch.isspace() for ch in label)
    perf = nagiosplugin.Performance(label + "time", 0.25, "s")   # refuses ' and =
    rendered = str(perf)
    assert rendered.count("=") == 1
    assert not any(unicodedata.category(ch) == "Cc" for ch in rendered)


@budget(300)
@given(mx=mx_sets, answers=address_answers,
       status=st.sampled_from([NOERROR, NOERROR, NOERROR, NODATA, NXDOMAIN, TIMEOUT]))
def test_mx_targets_from_any_names_are_safe_to_show_and_to_label(mx, answers, status):
    records = tuple(s.mx_text(pref, name) for pref, name in mx)
    if status == NOERROR and not records:
        status = NODATA
    client = _MxClient(DnsAnswer("example.test", "MX", status, records), answers)
    res = targets.resolve_mx(client, "Example.Test.")

    assert res.domain == "example.test"
    real = [name for _, name in mx if name != dns.name.root]
    if status == NOERROR:
        null = len(real) < len(mx)
        assert res.kind == ((targets.NULL_MIXED if real else targets.NULL) if null
                            else targets.MX)
        # each distinct target once, still naming the same DNS name it came from
        assert len(res.targets) == len(set(real))
        for target in res.targets:
            assert dns.name.from_text(target.name) in set(real)
            assert not target.name.endswith(".") or target.name.endswith("\\.")
    for target in res.targets:
        _assert_display_safe(target.name)
        _assert_display_safe(target.describe_problem())
    for endpoint in res.endpoints(25):
        _assert_display_safe(endpoint.label)
        ipaddress.ip_address(endpoint.address)  # an address, IPv4-mapped ones as IPv4
        assert "::ffff:" not in endpoint.address
    keys = perfdata.endpoint_keys(res.endpoints(25))
    assert len(set(keys)) == len(keys)  # one label per endpoint
    for key in keys:
        assert re.fullmatch(r"[a-z0-9_]+", key), key
        _assert_label_safe(key + "_")
    result = MxContext().evaluate(nagiosplugin.Metric("mx", res, context="mx"), None)
    assert result.state in (Ok, Warn, Critical)
    if result.hint:
        assert "|" not in result.hint and result.hint.isprintable()


@budget(100)
@given(mx=mx_sets, answers=address_answers,
       ptr=st.lists(s.dns_names(allow_root=False), max_size=2), verbose=st.integers(0, 3))
def test_check_mx_sanity_shows_any_names_safely_and_sees_no_change_in_the_same_dns(
        mx, answers, ptr, verbose):
    from check_smtp_posture.plugins import check_mx_sanity

    records = tuple(s.mx_text(pref, name) for pref, name in mx)
    client = _MxClient(DnsAnswer("example.test", "MX", NOERROR if records else NODATA,
                                 records), answers, ptr)
    runs = []
    with tempfile.TemporaryDirectory() as tmp, \
            mock.patch.object(check_mx_sanity.cli, "dns_client", lambda *a, **k: client):
        argv = ["-D", "example.test", "--state-file", os.path.join(tmp, "mx.json")]
        for _ in range(3):   # the first records the baseline; the others compare with it
            buf = io.StringIO()
            with redirect_stdout(buf):
                code = check_mx_sanity.main(argv + ["-v"] * verbose)
            runs.append((code, buf.getvalue()))
    for code, output in runs:
        first, *rest = output.rstrip("\n").split("\n")
        assert code in (0, 1, 2) and "internal error" not in first, output
        assert first.startswith("MX_SANITY ")
        summary, _, perf = first.partition(" | ")
        assert "|" not in summary
        assert all(re.fullmatch(r"'?[\w.:@+-]+'?=[^ ]*", item) for item in perf.split())
        for line in [first, *rest]:
            assert all(ch.isprintable() or ch == "\t" for ch in line), repr(line)
    assert "MX set changed" not in runs[1][1] + runs[2][1]
    assert runs[1][0] == runs[2][0]
    assert runs[1][1].partition(" | ")[0] == runs[2][1].partition(" | ")[0]


@budget(300)
@given(text=st.one_of(s.nasty_text, s.dns_names().map(lambda n: n.to_text()),
                      s.dns_names().map(lambda n: n.to_unicode()),
                      s.word(s.ALNUM + ".-_é", min_size=0, max_size=70)))
def test_name_helpers_take_any_text(text):
    names.normalize(text)
    form = names.ascii_form(text)
    if form is not None:
        assert form.isascii() and len(form) <= names.MAX_NAME
        assert all(0 < len(label) <= names.MAX_LABEL for label in form.split("."))
        assert names.is_hostname(form)
        _assert_label_safe(perfdata.label(form) + "_")
    names.is_ip_literal(text)
    try:
        plain = names.plain_address(text)
    except ValueError:
        return
    assert names.plain_address(plain) == plain


@budget(400)
@given(text=st.one_of(s.nasty_text, st.binary(max_size=300)), limit=st.integers(3, 400))
def test_one_line_is_one_bounded_printable_line_without_bars(text, limit):
    out = one_line(text, limit)
    assert len(out) <= limit
    assert out.isprintable() and "|" not in out
    assert out == out.strip() and "  " not in out
    assert one_line(out, limit) == out


@budget(400)
@given(text=s.nasty_text, limit=st.one_of(st.none(), st.integers(3, 400)))
def test_printable_lines_are_printable(text, limit):
    out = printable(text, limit)
    assert all(ch.isprintable() or ch == "\t" for ch in out)
    assert "|" not in out
    assert limit is None or len(out) <= limit


@budget(400)
@given(text=s.nasty_text)
def test_perf_labels_never_carry_quotes_equals_or_spaces(text):
    label = perfdata.label(text)
    assert re.fullmatch(r"[a-z0-9_]*", label), label
    _assert_label_safe(label)


# -------------------------------------------------------------- C1 controls, line separators

# U+009B is CSI (a terminal escape introducer), U+0085 NEL a line break for
# Python's splitlines and many log viewers; U+2028/U+2029 separate lines too.
# one_line() once let them all through.
_LINE_BREAKERS = st.sampled_from(["\x85", "\x9b", "\x80", "\x9f", "\u2028", "\u2029",
                                  "\u202e", "\ud800"])


@PROFILE
@example(text="554 \x9b31m red \x85 next line", limit=120)
@given(text=st.lists(st.one_of(_LINE_BREAKERS, s.line_text), max_size=6).map("".join),
       limit=st.integers(3, 400))
def test_one_line_removes_every_control_and_line_separator(text, limit):
    out = one_line(text, limit)
    assert all(ch.isprintable() and ch != "|" for ch in out), repr(out)
    assert len(out.splitlines()) <= 1


def test_status_line_has_no_c1_controls(fake_smtp):
    """A banner with a UTF-8 CSI and NEL reaches the first line as plain spaces."""
    from check_smtp_posture.plugins import check_smtp_phases
    from tests.conftest import run_main

    server = fake_smtp({"banner": "554 5.3.2 \x9b2J\x9b31mclosed\x85now"})
    result = run_main(check_smtp_phases.main, ["-H", server.host, "-p", server.port, "-t", 3,
                                               "--no-starttls"])
    line = result.output.split("\n")[0]
    assert result.exitcode == 2 and line.startswith("SMTP_PHASES CRITICAL - ")
    assert "554 5.3.2 2J 31mclosed now |" in line, repr(line)
    assert result.first_line == line   # splitlines() would break it at a NEL
