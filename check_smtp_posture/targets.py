"""Domain -> MX set -> endpoints: the one resolver of the family.

Every plugin that asks "where does mail for this domain go?" asks here, so all
of them see the same DNS as the same facts. The kind of a domain's MX set
(RFC 5321 §5.1, RFC 7505):

    mx            MX records with at least one real target
    null          the null MX "0 ." alone: the domain accepts no mail
    null-mixed    the null MX beside other MX records (RFC 7505 §3 forbids it)
    implicit      no MX, but address records: they are the MX (RFC 5321 §5.1)
    no-mail-host  no MX and no address records
    nxdomain      the domain does not exist
    failed        the MX lookup (or the implicit MX's address lookup) failed
    host          not a domain's MX set: one host given with -H

and each target's problem, if it has one: an IP literal where a name belongs,
a CNAME (RFC 2181 §10.3), NXDOMAIN, no address record, or a failed lookup
(addresses from the lookups that did answer are kept). Every address of every
target is looked up concurrently within the run's deadline.

How bad each case is, is decided once, by contexts.MxContext. This module
imports no dnspython until it asks DNS, so `-H <address>` pays nothing.
"""

from __future__ import annotations

import time
from collections import namedtuple

from check_smtp_posture import fanout, names

# kinds of MX set
MX = "mx"
NULL = "null"
NULL_MIXED = "null-mixed"
IMPLICIT = "implicit"
NO_MAIL_HOST = "no-mail-host"
NXDOMAIN = "nxdomain"
FAILED = "failed"
HOST = "host"

# problems of one target
IP_LITERAL = "IP literal"
ALIAS = "CNAME"
TARGET_NXDOMAIN = "NXDOMAIN"
NO_ADDRESS = "no address"
LOOKUP_FAILED = "lookup failed"


class Endpoint(namedtuple("Endpoint", ("address", "port", "name", "dns_time"),
                          defaults=(None, None))):
    """Where to connect (address) and whom to expect there (name, for SNI and the certificate).

    address: str, port: int, name: str | None, dns_time: float | None
    """

    __slots__ = ()

    @property
    def label(self) -> str:
        return f"{self.name}[{self.address}]" if self.name else self.address


class Target(namedtuple("Target", ("preference", "name", "addresses", "problem", "detail",
                                    "canonical", "authenticated"),
                         defaults=((), "", "", "", False))):
    """One MX target (or the -H host, or the implicit MX) and its addresses.

    preference: int, name: str, addresses: tuple, problem and detail: str ("" when
    sane), canonical: where a CNAME led, authenticated: every address answer (and
    denial) had the AD flag (DNSSEC)
    """

    __slots__ = ()

    def describe_problem(self) -> str:
        return f"{self.name}: {self.problem}" + (f" ({self.detail})" if self.detail else "")


class Resolution(namedtuple("Resolution", ("domain", "kind", "targets", "detail", "duplicates",
                                            "authenticated", "rrsig_expiration", "dns_time"),
                             defaults=((), "", (), None, None, None))):
    """What DNS said about where mail for `domain` goes (or where host `domain` is).

    domain, kind: str; targets: tuple of Target; detail: why the lookup failed;
    duplicates: target names listed more than once; authenticated: AD flag of the MX
    answer (None unless asked); rrsig_expiration: earliest signature over the MX RRset
    (DNSSEC); dns_time: None when no DNS was asked (an address given)
    """

    __slots__ = ()

    @property
    def what(self) -> str:
        return f"host {self.domain}" if self.kind == HOST else f"MX of {self.domain}"

    @property
    def addresses(self) -> list:
        """Every distinct address of every target, in MX order."""
        return list(dict.fromkeys(a for t in self.targets for a in t.addresses))

    @property
    def problems(self) -> list:
        return [t for t in self.targets if t.problem]

    def endpoints(self, port: int, servername: str | None = None) -> tuple:
        """One Endpoint per address of each target; `servername` replaces the target names."""
        return tuple(Endpoint(address, port, servername or target.name or None, self.dns_time)
                     for target in self.targets for address in target.addresses)

    def pairs(self) -> list:
        """(target name, address) for every address."""
        return [(t.name, a) for t in self.targets for a in t.addresses]


def address_target(address: str, name: str | None = None) -> Resolution:
    """-H given as an address: no DNS at all."""
    return Resolution(address, HOST, (Target(0, name or "", (address,)),))


def resolve_target(hostname: str | None, domain: str | None, client_factory, *,
                   servername: str | None = None, family: int | None = None,
                   concurrency: int = 32) -> Resolution:
    """The endpoints' source for -H or -D: the address given, the host's addresses,
    or every MX's. `client_factory()` makes the DnsClient, only when DNS is asked."""
    if hostname and names.is_ip_literal(hostname):
        # an address: no DNS at all (and no dnspython import)
        return address_target(hostname, servername)
    client = client_factory()
    if hostname:
        return resolve_hosts(client, [hostname], family=family)[0]
    return resolve_mx(client, domain, family=family, concurrency=concurrency)


def resolve_hosts(client, hosts, *, family: int | None = None,
                  concurrency: int = 32) -> list:
    """-H given as names: one Resolution each, every lookup of every host at once.

    A CNAME is fine for a host; it is an MX target that must not be one.
    """
    started = time.monotonic()
    resolved = _resolve_targets(client, [Target(0, names.normalize(h)) for h in hosts],
                                family, concurrency, alias_problem=False)
    elapsed = time.monotonic() - started
    return [Resolution(t.name, HOST, (t,), dns_time=elapsed) for t in resolved]


def resolve_mx(client, domain: str, *, family: int | None = None,
               concurrency: int = 32) -> Resolution:
    """The MX set of `domain` with every target's addresses, as facts."""
    from check_smtp_posture import dnslookup

    started = time.monotonic()
    domain = names.normalize(domain)

    def done(kind, targets=(), **facts) -> Resolution:
        return Resolution(domain, kind, tuple(targets), authenticated=authenticated,
                          rrsig_expiration=answer.rrsig_expiration,
                          dns_time=time.monotonic() - started, **facts)

    answer = client.query(domain, "MX")
    authenticated = answer.authenticated if client.dnssec else None
    if answer.failed:
        return done(FAILED, detail=answer.failure())
    if answer.status == dnslookup.NXDOMAIN:
        return done(NXDOMAIN)
    if answer.status != dnslookup.NOERROR:  # NODATA: the address records are the MX
        implicit = _resolve_targets(client, [Target(0, domain)], family, concurrency,
                                    alias_problem=False)[0]
        if implicit.addresses:  # a failed AAAA beside a good A stays a fact of the target
            return done(IMPLICIT, [implicit])
        if implicit.problem == LOOKUP_FAILED:
            return done(FAILED, detail=f"no MX, and the address lookup failed: "
                                       f"{implicit.detail}")
        return done(NO_MAIL_HOST)
    records = _mx_records(answer.records)
    null = any(host == "." for _, host in records)
    targets, seen, duplicates = [], set(), []
    for preference, host in records:
        if host == ".":
            continue
        if host in seen:
            duplicates.append(host)
            continue
        seen.add(host)
        targets.append(Target(preference, host, problem=IP_LITERAL)
                       if names.is_ip_literal(host) else Target(preference, host))
    kind = (NULL_MIXED if targets else NULL) if null else MX
    targets = _resolve_targets(client, targets, family, concurrency, alias_problem=True)
    return done(kind, targets, duplicates=tuple(dict.fromkeys(duplicates)))


def _mx_records(records) -> list:
    """(preference, normalised exchange) pairs, by preference; the null MX's exchange is "."."""
    pairs = []
    for text in records:
        preference, _, host = text.partition(" ")
        pairs.append((int(preference), names.normalize(host) or "."))
    return sorted(pairs)


def _resolve_targets(client, targets: list, family, concurrency: int, *,
                     alias_problem: bool) -> list:
    """Every address lookup of every target at once (bounded), then each target's facts."""
    kinds = {4: ("A",), 6: ("AAAA",), None: ("A", "AAAA")}[family]
    questions = [(t.name, kind) for t in targets if not t.problem for kind in kinds]
    if not questions:
        return list(targets)
    answers = dict(zip(questions, fanout.each(questions, lambda q: client.query(*q),
                                              concurrency)))
    return [t if t.problem else _target_facts(t, [answers[(t.name, k)] for k in kinds],
                                              alias_problem)
            for t in targets]


def _target_facts(target: Target, answers: list, alias_problem: bool) -> Target:
    from check_smtp_posture import dnslookup

    addresses = tuple(dict.fromkeys(names.plain_address(r) for a in answers if a.ok
                                    for r in a.records))
    alias = next((a for a in answers if a.is_alias), None)
    canonical = names.normalize(alias.canonical_name) if alias is not None else ""
    failed = [a for a in answers if a.failed]
    target = target._replace(authenticated=all(a.authenticated for a in answers))
    if alias is not None and alias_problem:
        return target._replace(addresses=addresses, problem=ALIAS, detail=f"to {canonical}",
                       canonical=canonical)
    if failed:  # addresses from the lookups that answered are still used
        return target._replace(addresses=addresses, problem=LOOKUP_FAILED,
                       detail="; ".join(f"{a.rdtype}: {a.failure()}" for a in failed),
                       canonical=canonical)
    if any(a.status == dnslookup.NXDOMAIN for a in answers):
        return target._replace(problem=TARGET_NXDOMAIN, canonical=canonical)
    if not addresses:
        return target._replace(problem=NO_ADDRESS, canonical=canonical)
    return target._replace(addresses=addresses, canonical=canonical)
