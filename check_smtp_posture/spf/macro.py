"""RFC 7208 §7 macro strings: syntax check and expansion.

A macro string is parsed once into tokens (literal text and macro
references); a syntax error is a `MacroError`, which callers turn into
"permerror" for record terms and into "no explanation" for `exp` text.
"""

from __future__ import annotations

import re
import time
from collections import namedtuple
from urllib.parse import quote

#: macro letters usable anywhere; c, r and t only in explanation text (§7.3)
DOMAIN_LETTERS = frozenset("slodiphv")
EXP_LETTERS = DOMAIN_LETTERS | frozenset("crt")

_MACRO_BODY = re.compile(r"([A-Za-z])([0-9]*)([rR]?)([.\-+,/_=]*)\}")
# toplabel = ( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum )
_TOPLABEL = re.compile(
    r"(?:[A-Za-z0-9]*[A-Za-z][A-Za-z0-9]*|[A-Za-z0-9]+-[A-Za-z0-9-]*[A-Za-z0-9])")


class MacroError(ValueError):
    """A macro string that does not follow the RFC 7208 §7.1 syntax."""


class Macro(namedtuple("Macro", (
        "letter",  # as written: upper case asks for URL escaping
        "digits",  # keep this many right-hand parts (None: all)
        "reverse",
        "delimiters"))):  # split on these; "" means "."
    __slots__ = ()

    def __str__(self) -> str:
        return ("%{" + self.letter + ("" if self.digits is None else str(self.digits))
                + ("r" if self.reverse else "") + self.delimiters + "}")


def tokenize(text: str, *, letters=DOMAIN_LETTERS, allow_space: bool = False) -> list:
    """Split a macro string into str literals and `Macro`s; MacroError if malformed."""
    tokens: list = []
    literal: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "%":
            nxt = text[i + 1:i + 2]
            if nxt == "%":
                literal.append("%")
                i += 2
            elif nxt == "_":
                literal.append(" ")
                i += 2
            elif nxt == "-":
                literal.append("%20")
                i += 2
            elif nxt == "{":
                match = _MACRO_BODY.match(text, i + 2)
                if not match:
                    raise MacroError(f"bad macro at {text[i:i + 12]!r}")
                letter, digits, rev, delims = match.groups()
                if letter.lower() not in letters:
                    raise MacroError(f"macro letter {letter!r} not allowed here")
                keep = _digit_transformer(digits) if digits else None
                if literal:
                    tokens.append("".join(literal))
                    literal = []
                tokens.append(Macro(letter, keep, bool(rev), delims))
                i = match.end()
            else:
                raise MacroError(f"'%' must be followed by '{{', '%', '_' or '-': "
                                 f"{text[i:i + 6]!r}")
        elif "\x21" <= ch <= "\x7e" or (allow_space and ch == " "):
            literal.append(ch)
            i += 1
        else:
            raise MacroError(f"character {ch!r} not allowed in a macro string")
    if literal:
        tokens.append("".join(literal))
    return tokens


#: a digit transformer above this keeps every label of any name (at most 127 labels)
MAX_KEEP = 128


def _digit_transformer(digits: str) -> int:
    """The "keep this many parts" of %{d2}: nonzero; any length of digits (RFC 7208
    §7.1 sets no bound), capped so that int() never meets a 4300-digit string."""
    significant = digits.lstrip("0")
    if not significant:
        raise MacroError("macro digit transformer must be nonzero")
    return int(significant) if len(significant) <= 3 else MAX_KEEP


def parse_domain_spec(text: str) -> list:
    """Tokens of a domain-spec (§7.1): a macro string ending in a top label or a macro.

    A trailing dot after a final macro (`%{d}.`) is accepted too: it names the
    same domain as `%{d}`.
    """
    if not text:
        raise MacroError("empty domain-spec")
    tokens = tokenize(text)
    raw_end = _raw_tail(text)
    if raw_end is None:           # the text ends with a macro-expand
        return tokens
    if raw_end == "." and len(raw_end) < len(text):
        return tokens             # "%{d}." -- a macro followed by the root dot
    tail = raw_end[:-1] if raw_end.endswith(".") else raw_end
    dot = tail.rfind(".")
    if dot < 0 or not _TOPLABEL.fullmatch(tail[dot + 1:]):
        raise MacroError(f"domain-spec {text!r} does not end in a valid top label")
    return tokens


def _raw_tail(text: str) -> str | None:
    """The text after the last macro-expand (None if the text ends with one)."""
    last_end = 0
    i = 0
    while i < len(text):
        if text[i] == "%":
            if text[i + 1:i + 2] == "{":
                close = text.find("}", i)
                i = close + 1
            else:
                i += 2
            last_end = i
        else:
            i += 1
    if last_end == len(text):
        return None
    return text[last_end:]


class MacroContext(namedtuple("MacroContext", (
        "ip",  # ipaddress.IPv4Address or IPv6Address
        "sender",  # full <sender>, local-part@domain
        "domain",  # current <domain>
        "helo", "receiver",
        "validated_name",  # callable() -> str, for %{p} (looked up lazily)
        "now"), defaults=("unknown", "unknown", None, None))):
    """The values macros expand to (§7.3)."""

    __slots__ = ()

    @property
    def local_part(self) -> str:
        return self.sender.rpartition("@")[0]

    @property
    def sender_domain(self) -> str:
        return self.sender.rpartition("@")[2]


def letter_value(letter: str, ctx: MacroContext) -> str:
    ip = ctx.ip
    if letter == "s":
        return ctx.sender
    if letter == "l":
        return ctx.local_part
    if letter == "o":
        return ctx.sender_domain
    if letter == "d":
        return ctx.domain
    if letter == "i":
        if ip.version == 4:
            return str(ip)
        return ".".join(ip.exploded.replace(":", ""))
    if letter == "c":
        return str(ip)
    if letter == "v":
        return "in-addr" if ip.version == 4 else "ip6"
    if letter == "h":
        return ctx.helo
    if letter == "r":
        return ctx.receiver
    if letter == "t":
        return str(int(ctx.now if ctx.now is not None else time.time()))
    if letter == "p":
        return ctx.validated_name() if callable(ctx.validated_name) else "unknown"
    raise MacroError(f"unknown macro letter {letter!r}")


def expand_macro(macro: Macro, ctx: MacroContext) -> str:
    value = letter_value(macro.letter.lower(), ctx)
    if macro.digits is not None or macro.reverse or macro.delimiters:
        parts = re.split("[" + re.escape(macro.delimiters or ".") + "]", value)
        if macro.reverse:
            parts.reverse()
        if macro.digits is not None:
            parts = parts[-macro.digits:]
        value = ".".join(parts)
    if macro.letter.isupper():
        value = quote(value.encode("utf-8"), safe="-._~")
    return value


def expand(tokens: list, ctx: MacroContext) -> str:
    return "".join(t if isinstance(t, str) else expand_macro(t, ctx) for t in tokens)


def has_macros(tokens: list) -> bool:
    return any(isinstance(t, Macro) for t in tokens)
