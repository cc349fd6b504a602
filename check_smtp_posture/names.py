"""DNS names as the family reads them: one normaliser and one validity rule.

Names from the user and from DNS answers meet in comparisons, state files and
perfdata labels; they must be written one way. `normalize` removes exactly one
trailing root dot (so an invalid "a.." stays invalid) and folds case.
"""

from __future__ import annotations

import ipaddress
import re

#: letters, digits, hyphen (RFC 5321 sub-domain, after IDNA encoding); "_" for
#: service labels that blocklist and SPF names carry
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
MAX_NAME = 253
MAX_LABEL = 63


def normalize(name: str) -> str:
    """Lower case, no surrounding white space, no trailing root dot ("." stays ".")."""
    name = name.strip()
    if name == ".":
        return name
    if name.endswith("."):
        name = name[:-1]
    return name.lower()


def ascii_form(name: str) -> str | None:
    """The name as DNS carries it (IDNA A-labels, lower case), or None if it cannot be one.

    Lengths are counted on the encoded form: a 63-character label of two-byte
    letters is far longer than 63 octets on the wire.
    """
    text = normalize(name)
    if not text or text == "." or any(ch.isspace() or not ch.isprintable() for ch in text):
        return None
    labels = []
    for label in text.split("."):
        if not label.isascii():
            try:
                label = label.encode("idna").decode("ascii")
            except UnicodeError:
                return None
        if not 0 < len(label) <= MAX_LABEL or not _LABEL.match(label):
            return None
        labels.append(label)
    encoded = ".".join(labels)
    return encoded if len(encoded) <= MAX_NAME else None


def is_hostname(name: str) -> bool:
    """True for a name a mail domain, MX host or blocklist zone can have."""
    return ascii_form(name) is not None


def is_ip_literal(text: str) -> bool:
    """An address written where a name belongs: "192.0.2.1", "[192.0.2.1]", "IPv6:2001:db8::1"."""
    candidate = text.strip().strip("[]")
    if candidate.lower().startswith("ipv6:"):
        candidate = candidate[5:]
    if candidate.endswith("."):
        candidate = candidate[:-1]
    try:
        ipaddress.ip_address(candidate)
    except ValueError:
        return False
    return True


def plain_address(text: str) -> str:
    """An IP address in its compressed form; IPv4-mapped IPv6 becomes IPv4.

    ValueError when `text` is not an address.
    """
    ip = ipaddress.ip_address(text.strip())
    mapped = getattr(ip, "ipv4_mapped", None)
    return str(mapped or ip)
