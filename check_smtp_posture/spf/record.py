"""SPF record selection (RFC 7208 §4.5) and parsing (§4.6, §12 ABNF).

`parse_record()` checks the whole record before anything is evaluated: a
syntax error anywhere makes the record a permerror (§4.6), however early a
mechanism would have matched.
"""

from __future__ import annotations

import ipaddress
import re
from collections import namedtuple

from check_smtp_posture.spf.macro import MacroError, parse_domain_spec, tokenize

MECHANISMS = ("all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists")
#: terms that cost one of the ten DNS lookups of §4.6.4
DNS_TERMS = frozenset({"include", "a", "mx", "ptr", "exists", "redirect"})
QUALIFIERS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}

_MODIFIER = re.compile(r"([A-Za-z][A-Za-z0-9\-_.]*)=(.*)\Z", re.S)
_MECH_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*")
_QNUM = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])"
_IP4 = re.compile(rf"{_QNUM}\.{_QNUM}\.{_QNUM}\.{_QNUM}\Z")
_IP4_CIDR = re.compile(r"(?:0|[1-9][0-9]?)\Z")
_IP6_CIDR = re.compile(r"(?:0|[1-9][0-9]{0,2})\Z")
_DUAL_CIDR = re.compile(r"(?:/([0-9]*))?(?://([0-9]*))?\Z")


class SpfSyntaxError(ValueError):
    """The record breaks the RFC 7208 syntax: check_host() gives permerror."""


class Mechanism(namedtuple("Mechanism", (
        "qualifier",  # "+", "-", "~" or "?"
        "name",  # lower case
        "text",  # the term as written
        "domain",  # macro tokens of the domain-spec, None: <domain>
        "network",  # ip4/ip6: ipaddress network
        "cidr4", "cidr6"), defaults=(None, None, 32, 128))):
    __slots__ = ()

    @property
    def result(self) -> str:
        return QUALIFIERS[self.qualifier]


class Modifier(namedtuple("Modifier", (
        "name",  # lower case
        "value", "text",
        "domain"), defaults=(None,))):  # redirect / exp: macro tokens
    __slots__ = ()


class Record:
    __slots__ = ("text", "mechanisms", "modifiers", "redirect", "exp", "terms")

    def __init__(self, text: str, mechanisms: list | None = None,
                 modifiers: list | None = None, redirect: Modifier | None = None,
                 exp: Modifier | None = None, terms: list | None = None):
        self.text = text
        self.mechanisms: list = [] if mechanisms is None else mechanisms
        self.modifiers: list = [] if modifiers is None else modifiers
        self.redirect = redirect
        self.exp = exp
        # mechanisms and modifiers as written
        self.terms: list = [] if terms is None else terms

    @property
    def has_all(self) -> bool:
        return any(m.name == "all" for m in self.mechanisms)

    def lookup_terms(self) -> int:
        """Terms of this record alone that cost a DNS lookup when evaluated."""
        return sum(1 for t in self.terms if t.name in DNS_TERMS)


def is_spf(text: str) -> bool:
    """Does a TXT record's text select it as SPF (§4.5): 'v=spf1' then SP or end."""
    return text[:6].lower() == "v=spf1" and (len(text) == 6 or text[6] == " ")


def select(txt_records) -> tuple[str, list[str]]:
    """('none'|'one'|'many', spf records) among the TXT records of a name."""
    found = [t for t in txt_records if is_spf(t)]
    if not found:
        return "none", found
    return ("one" if len(found) == 1 else "many"), found


def parse_record(text: str) -> Record:
    if not is_spf(text):
        raise SpfSyntaxError("not an SPF record (must start with 'v=spf1')")
    record = Record(text)
    for term in text[6:].split(" "):
        if not term:
            continue
        parsed = parse_term(term)
        record.terms.append(parsed)
        if isinstance(parsed, Modifier):
            record.modifiers.append(parsed)
            if parsed.name in ("redirect", "exp"):
                if getattr(record, parsed.name) is not None:
                    raise SpfSyntaxError(f"'{parsed.name}' modifier appears more than once")
                setattr(record, parsed.name, parsed)
        else:
            record.mechanisms.append(parsed)
    return record


def parse_term(term: str):
    if not term.isascii():
        raise SpfSyntaxError(f"non-ASCII character in term {term!r}")
    modifier = _MODIFIER.match(term)
    if modifier:
        return _parse_modifier(term, modifier.group(1).lower(), modifier.group(2))
    qualifier = "+"
    rest = term
    if rest[:1] in QUALIFIERS:
        qualifier, rest = rest[0], rest[1:]
    match = _MECH_NAME.match(rest)
    name = match.group(0).lower() if match else ""
    if name not in MECHANISMS:
        raise SpfSyntaxError(f"unknown mechanism in term {term!r}")
    arg = rest[len(name):]
    try:
        return _parse_mechanism(term, qualifier, name, arg)
    except MacroError as exc:
        raise SpfSyntaxError(f"{term!r}: {exc}") from None


def _parse_modifier(term: str, name: str, value: str) -> Modifier:
    try:
        if name in ("redirect", "exp"):
            if not value:
                raise SpfSyntaxError(f"'{name}' needs a domain: {term!r}")
            return Modifier(name, value, term, parse_domain_spec(value))
        tokenize(value, letters=frozenset("slodiphvcrt"))
    except MacroError as exc:
        raise SpfSyntaxError(f"{term!r}: {exc}") from None
    return Modifier(name, value, term)


def _parse_mechanism(term: str, qualifier: str, name: str, arg: str) -> Mechanism:
    if name in ("all",):
        if arg:
            raise SpfSyntaxError(f"'all' takes no argument: {term!r}")
        return Mechanism(qualifier, name, term)
    if name in ("include", "exists"):
        if not arg.startswith(":") or len(arg) == 1:
            raise SpfSyntaxError(f"'{name}' needs ':domain': {term!r}")
        return Mechanism(qualifier, name, term, parse_domain_spec(arg[1:]))
    if name == "ptr":
        if not arg:
            return Mechanism(qualifier, name, term)
        if not arg.startswith(":") or len(arg) == 1:
            raise SpfSyntaxError(f"bad 'ptr' argument: {term!r}")
        return Mechanism(qualifier, name, term, parse_domain_spec(arg[1:]))
    if name == "ip4":
        if not arg.startswith(":"):
            raise SpfSyntaxError(f"'ip4' needs ':address': {term!r}")
        addr, slash, cidr = arg[1:].partition("/")
        if not _IP4.match(addr):
            raise SpfSyntaxError(f"bad IPv4 address in {term!r}")
        length = _cidr(cidr, slash, _IP4_CIDR, 32, term)
        return Mechanism(qualifier, name, term,
                         network=ipaddress.IPv4Network(f"{addr}/{length}", strict=False),
                         cidr4=length)
    if name == "ip6":
        if not arg.startswith(":"):
            raise SpfSyntaxError(f"'ip6' needs ':address': {term!r}")
        addr, slash, cidr = arg[1:].partition("/")
        if "%" in addr:
            raise SpfSyntaxError(f"bad IPv6 address in {term!r}")
        try:
            ipaddress.IPv6Address(addr)
        except ValueError:
            raise SpfSyntaxError(f"bad IPv6 address in {term!r}") from None
        length = _cidr(cidr, slash, _IP6_CIDR, 128, term)
        return Mechanism(qualifier, name, term,
                         network=ipaddress.IPv6Network(f"{addr}/{length}", strict=False),
                         cidr6=length)
    # a, mx: [ ":" domain-spec ] [ dual-cidr-length ]
    match = _DUAL_CIDR.search(arg)
    domain_text = arg[:match.start()]
    c4, c6 = match.group(1), match.group(2)
    cidr4 = _cidr(c4, "/" if c4 is not None else "", _IP4_CIDR, 32, term)
    cidr6 = _cidr(c6, "/" if c6 is not None else "", _IP6_CIDR, 128, term)
    if not domain_text:
        return Mechanism(qualifier, name, term, cidr4=cidr4, cidr6=cidr6)
    if not domain_text.startswith(":") or len(domain_text) == 1:
        raise SpfSyntaxError(f"bad '{name}' argument: {term!r}")
    return Mechanism(qualifier, name, term, parse_domain_spec(domain_text[1:]),
                     cidr4=cidr4, cidr6=cidr6)


def _cidr(text: str, slash: str, pattern, maximum: int, term: str) -> int:
    if not slash:
        return maximum
    if not pattern.match(text or "") or int(text) > maximum:
        raise SpfSyntaxError(f"bad CIDR length in {term!r}")
    return int(text)
