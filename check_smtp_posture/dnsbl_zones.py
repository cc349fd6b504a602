"""DNS blocklist zones: the built-in defaults and their documented error answers.

A blocklist answers a listed name with an A record in 127.0.0.0/8 (RFC 5782
§2.1). Some lists also use answers in that range to say "I will not answer
you" (public resolver, too many queries, wrong zone name): those must be read
as "zone unusable from here", never as a listing. `ZoneSpec.errors` holds each
zone's documented error answers; the sources are cited beside each entry.

Pure data and parsing, no DNS: importing this module costs nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from check_smtp_posture import names
from check_smtp_posture.userfiles import read_user_text

#: a zones file larger than this is not a list of blocklists
MAX_ZONES_FILE = 1024 * 1024

IP = "ip"
DOMAIN = "domain"

#: RFC 5782 §5: an IPv4 list must never list 127.0.0.1, a domain list never INVALID.
IPV4_CANARY = "127.0.0.1"
DOMAIN_CANARY = "invalid"

Network = ipaddress.IPv4Network


@dataclass(frozen=True)
class ZoneSpec:
    name: str
    kind: str = IP
    errors: tuple = field(default=())  # of IPv4Network: answers meaning "unusable"
    note: str = ""

    def error_answer(self, answer: str) -> bool:
        ip = ipaddress.ip_address(answer)
        return any(ip in net for net in self.errors)


def _nets(*texts: str) -> tuple:
    return tuple(ipaddress.ip_network(t) for t in texts)


# Spamhaus: "A new range containing return codes (127.255.255.0/24) has been added
# to return possible errors related to the DNSBL queries themselves" (spamhaus.org
# news 788, 2019); .252 typing error in the zone name, .254 query via a public/open
# resolver, .255 excessive number of queries.
_SPAMHAUS_ERRORS = _nets("127.255.255.0/24")
# URIBL: "All queries that we refuse, we return a 127.0.0.1 response to"
# (uribl.com/refused.shtml). SURBL answers blocked resolvers the same way.
_REFUSED_127_0_0_1 = _nets("127.0.0.1/32")

#: Widely used IP blocklists that answer anonymous queries from a non-public resolver.
DEFAULT_IP_ZONES: tuple = (
    ZoneSpec("zen.spamhaus.org", IP, _SPAMHAUS_ERRORS, "Spamhaus SBL+XBL+CSS+PBL"),
    ZoneSpec("bl.spamcop.net", IP, (), "SpamCop"),
    ZoneSpec("b.barracudacentral.org", IP, (), "Barracuda BRBL (registered resolvers)"),
    ZoneSpec("psbl.surriel.com", IP, (), "Passive Spam Block List"),
    ZoneSpec("bl.mailspike.net", IP, (), "Mailspike"),
    ZoneSpec("dnsbl-1.uceprotect.net", IP, (), "UCEPROTECT level 1"),
    ZoneSpec("ix.dnsbl.manitu.net", IP, (), "NiX Spam"),
    ZoneSpec("dnsbl.dronebl.org", IP, (), "DroneBL"),
    ZoneSpec("all.s5h.net", IP, (), "s5h.net"),
)

#: Domain lists, used with --domain-zone default.
DEFAULT_DOMAIN_ZONES: tuple = (
    # DBL also answers 127.0.1.255 to IP queries ("IP queries prohibited").
    ZoneSpec("dbl.spamhaus.org", DOMAIN, _SPAMHAUS_ERRORS + _nets("127.0.1.255/32"),
             "Spamhaus Domain Block List"),
    ZoneSpec("multi.uribl.com", DOMAIN, _REFUSED_127_0_0_1, "URIBL"),
    ZoneSpec("multi.surbl.org", DOMAIN, _REFUSED_127_0_0_1, "SURBL"),
)

_KNOWN = {z.name: z for z in DEFAULT_IP_ZONES + DEFAULT_DOMAIN_ZONES}


def parse_zone(text: str, kind: str = IP) -> ZoneSpec:
    """`NAME[=ERR[,ERR...]]`, each ERR an address or a network in 127.0.0.0/8.

    A name among the built-in zones keeps its documented errors, plus any given.
    """
    name, _, errs = text.partition("=")
    name = names.normalize(name)
    if not names.is_hostname(name):
        raise ValueError(f"bad zone name {text!r}")
    known = _KNOWN.get(name)
    errors = list(known.errors) if known else []
    for item in filter(None, (e.strip() for e in errs.split(","))):
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"bad error answer {item!r} for zone {name}") from None
        if net.version != 4:
            raise ValueError(f"error answers are IPv4: {item!r}")
        errors.append(net)
    return ZoneSpec(name, kind, tuple(errors), known.note if known else "")


def read_zones_file(path: str) -> list:
    """One zone a line: `NAME [ERR ...]`, or `domain NAME [ERR ...]`; `#` comments."""
    zones = []
    text = read_user_text(path, "zones file", MAX_ZONES_FILE)
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        kind = IP
        if words[0].lower() in ("domain", "ip") and len(words) > 1:
            kind = words.pop(0).lower()
        try:
            zones.append(parse_zone(words[0] + "=" + ",".join(words[1:]), kind))
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
    return zones
