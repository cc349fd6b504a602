"""DNS blocklists (RFC 5782): the query names, what an answer means, the zones.

A blocklist answers a listed name with an A record in 127.0.0.0/8 (RFC 5782
§2.1) and may say why in a TXT record at the same name. Some lists also use
answers in that range to say "I will not answer you" (public resolver, too
many queries, wrong zone name): those must be read as "zone unusable from
here", never as a listing. `ZoneSpec.errors` holds each zone's documented
error answers; the sources are cited beside each entry. An IPv4 list must
never list 127.0.0.1, a domain list never INVALID (§5): a zone that does is
broken, and nothing it says counts.

The questions go through the DnsClient a caller hands in; importing this
module imports no DNS library and costs nothing.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from check_smtp_posture import names
from check_smtp_posture.sanitize import one_line
from check_smtp_posture.userfiles import read_user_text

#: a zones file larger than this is not a list of blocklists
MAX_ZONES_FILE = 1024 * 1024

IP = "ip"
DOMAIN = "domain"

#: RFC 5782 §5: an IPv4 list must never list 127.0.0.1, a domain list never INVALID.
IPV4_CANARY = "127.0.0.1"
DOMAIN_CANARY = "invalid"

Network = ipaddress.IPv4Network
LOOPBACK_NET = ipaddress.ip_network("127.0.0.0/8")

# outcome of one blocklist query
LISTED = "listed"
CLEAN = "clean"
ERROR_ANSWER = "error answer"  # a documented "I won't answer you" code
INVALID_ANSWER = "invalid answer"  # an A record outside 127.0.0.0/8
TIMED_OUT = "timeout"
FAILED = "failed"  # SERVFAIL, REFUSED, network error
SKIPPED = "skipped"  # not asked: the zone had already timed out
OUT_OF_TIME = "out of time"  # the run's -t ran out first: says nothing about the zone

# health of a zone, worst first
BROKEN = "broken"
UNUSABLE = "unusable"
ZONE_OK = "ok"


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


# --------------------------------------------------------------------------- queries

# Plain classes, not dataclasses: a dataclass costs each run a third of a millisecond
# to build at import (issue 13).


class Lookup:
    """One question to one zone, and what its answer means."""

    __slots__ = ("zone", "subject", "qname", "canary", "outcome", "codes", "reason", "detail",
                 "elapsed")

    def __init__(self, zone: ZoneSpec, subject: str, qname: str, canary: bool = False,
                 outcome: str = "", codes: tuple = (), reason: str = "", detail: str = "",
                 elapsed: float = 0.0):
        self.zone = zone
        self.subject = subject  # the address or domain asked about
        self.qname = qname
        self.canary = canary  # the RFC 5782 never-listed test entry
        self.outcome = outcome
        self.codes = codes
        self.reason = reason  # TXT
        self.detail = detail
        self.elapsed = elapsed


class ZoneHealth:
    __slots__ = ("zone", "state", "detail")

    def __init__(self, zone: ZoneSpec, state: str = ZONE_OK, detail: str = ""):
        self.zone = zone
        self.state = state
        self.detail = detail


def query_name(subject: str, zone: ZoneSpec) -> str:
    """Reversed octets (IPv4) or nibbles (IPv6, RFC 5782 §2.4) under the zone; a domain as is."""
    if zone.kind == DOMAIN:
        return f"{subject}.{zone.name}"
    pointer = ipaddress.ip_address(subject).reverse_pointer
    for suffix in (".in-addr.arpa", ".ip6.arpa"):
        if pointer.endswith(suffix):
            pointer = pointer[: -len(suffix)]
    return f"{pointer}.{zone.name}"


def lookups(zone: ZoneSpec, subjects: list) -> list:
    """The questions about `subjects` on `zone`, its RFC 5782 §5 test entry first."""
    canary = IPV4_CANARY if zone.kind == IP else DOMAIN_CANARY
    return [Lookup(zone, canary, query_name(canary, zone), canary=True)] + [
        Lookup(zone, s, query_name(s, zone)) for s in subjects]


def ask(client, lookup: Lookup) -> None:
    """Ask `lookup`'s A question through the DnsClient `client` and classify the answer;
    for a listing, its reason from the TXT record at the same name (RFC 5782 §2.1)."""
    answer = client.query(lookup.qname, "A")
    lookup.elapsed = answer.elapsed
    lookup.outcome, lookup.codes, lookup.detail = classify(lookup.zone, answer)
    if lookup.outcome == LISTED and not lookup.canary:
        txt = client.query(lookup.qname, "TXT")
        if txt.ok:
            lookup.reason = one_line(" ".join(txt.records), limit=200)


def classify(zone: ZoneSpec, answer) -> tuple:
    """(outcome, codes, detail) of one A answer, by RFC 5782 and the zone's errors."""
    from check_smtp_posture.dnslookup import NODATA, NXDOMAIN, TIMEOUT

    if answer.status in (NXDOMAIN, NODATA):
        return CLEAN, (), ""
    if answer.status == TIMEOUT:
        return (OUT_OF_TIME if answer.out_of_time else TIMED_OUT), (), answer.detail
    if not answer.ok:
        return FAILED, (), answer.failure()
    codes = tuple(sorted(answer.records, key=ipaddress.ip_address))
    outside = [c for c in codes if ipaddress.ip_address(c) not in LOOPBACK_NET]
    if outside:
        return INVALID_ANSWER, codes, "answer outside 127.0.0.0/8: " + ", ".join(outside)
    errors = [c for c in codes if zone.error_answer(c)]
    if errors:
        return ERROR_ANSWER, codes, "error answer " + ", ".join(errors)
    return LISTED, codes, ""


def zone_health(zone: ZoneSpec, lookups: list) -> ZoneHealth:
    """One zone's state from all its lookups, the most telling reason first."""
    canary = [lk for lk in lookups if lk.canary and lk.outcome == LISTED]
    if canary:
        return ZoneHealth(zone, BROKEN, f"lists test address {canary[0].subject} "
                                        f"({', '.join(canary[0].codes)})")
    for outcome in (INVALID_ANSWER, ERROR_ANSWER, TIMED_OUT, SKIPPED, FAILED):
        hit = next((lk for lk in lookups if lk.outcome == outcome), None)
        if hit is None:
            continue
        if outcome == INVALID_ANSWER:  # a parked or hijacked zone: nothing it says counts
            return ZoneHealth(zone, BROKEN, hit.detail)
        if outcome in (TIMED_OUT, SKIPPED):
            return ZoneHealth(zone, UNUSABLE, "timed out")
        return ZoneHealth(zone, UNUSABLE, hit.detail)
    return ZoneHealth(zone)
