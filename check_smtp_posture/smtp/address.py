"""Envelope addresses: as a user writes them, and as MAIL FROM / RCPT TO carry them.

A user may write the null sender as `<>` or `''` and a mailbox as `addr` or
`<addr>`; check_smtp's `-f '<>'` taught people the bracketed forms. The wire
carries exactly one pair of angle brackets around the path (RFC 5321 §4.1.2),
and `path()` is the one place that adds them.

`envelope_address()` checks what the user wrote against RFC 5321's Mailbox:
a dot-atom or quoted-string local part (UTF-8 allowed, as SMTPUTF8 allows),
`@`, and a domain or an address literal. The bare word `postmaster` is a valid
recipient on its own (§4.1.1.3). Relay probes that send deliberately odd paths
(source routes, bang paths) hand them to `path()` directly.
"""

from __future__ import annotations

import ipaddress
import re

from check_smtp_posture import names

#: RFC 5322 atext, and any non-ASCII character (RFC 6531 UTF8-non-ascii)
_ATOM = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])+"
# Patterns, compiled (and cached by re) on first use: most runs check no address.
_DOT_ATOM = rf"^{_ATOM}(?:\.{_ATOM})*$"
_QUOTED = r'^"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|[^\x00-\x7f]|\\[\x20-\x7e])*"$'
MAX_LOCAL_PART = 64  # octets, RFC 5321 §4.5.3.1.1
MAX_PATH = 256


def envelope_address(text: str, *, null: bool) -> str:
    """The mailbox `text` names, without brackets: "" for the null sender.

    `null`: whether the null sender is allowed (MAIL FROM yes, RCPT TO no).
    ValueError, with a message for the user, when it is not an address.
    """
    address = text.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    if any(ch in address for ch in "<>"):
        raise ValueError(f"angle brackets inside an address: {text!r}")
    if any(not ch.isprintable() for ch in address):
        raise ValueError(f"control characters in an address: {text!r}")
    if address == "":
        if null:
            return ""
        raise ValueError("the null address <> cannot be a recipient")
    if address.lower() == "postmaster" and not null:
        return address
    local, at, domain = address.rpartition("@")
    if not at or not local:
        raise ValueError(f"not an address of the form local@domain: {text!r}")
    if not (re.match(_DOT_ATOM, local) or re.match(_QUOTED, local)):
        raise ValueError(f"bad local part {local!r} in {text!r}")
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise ValueError(f"local part longer than {MAX_LOCAL_PART} octets: {text!r}")
    if not (address_literal(domain) or names.is_hostname(domain)):
        raise ValueError(f"bad domain {domain!r} in {text!r}")
    if len(path(address).encode("utf-8")) > MAX_PATH:
        raise ValueError(f"address longer than {MAX_PATH - 2} octets: {text!r}")
    return address


def path(address: str) -> str:
    """`<address>`: the path as MAIL FROM and RCPT TO carry it ("<>" for the null sender)."""
    if any(ch in address for ch in "<>\r\n\0"):
        raise ValueError(f"a path carries one pair of brackets and no line break: {address!r}")
    return f"<{address}>"


def address_literal(domain: str) -> bool:
    """`[192.0.2.1]` or `[IPv6:2001:db8::1]` (RFC 5321 §4.1.3)."""
    if not (domain.startswith("[") and domain.endswith("]")):
        return False
    inner = domain[1:-1]
    version = 4
    if inner[:5].lower() == "ipv6:":
        inner, version = inner[5:], 6
    try:
        return ipaddress.ip_address(inner).version == version
    except ValueError:
        return False
