"""check_dnsbl: is an MX address (or a given host or IP) listed on DNS blocklists?

Probe, decide, phrase: `DnsblResource.probe()` finds the addresses, asks every
zone about every address concurrently (a bounded pool, each query bounded by
the run's deadline) and records the answers as facts; the Contexts count
listings against -w/-c and judge unusable zones; `DnsblSummary` phrases.

Answers are validated before they count, by the RFC 5782 rules of
`check_smtp_posture.dnsbl`: only A records in 127.0.0.0/8 are listings; a
zone's documented error answers (Spamhaus's 127.255.255.254 "public
resolver", ...) make the zone unusable, not the address listed; a zone that
lists 127.0.0.1, which no list may list, is broken and its answers are ignored.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import namedtuple

import nagiosplugin
from nagiosplugin.state import Ok, Warn

from check_smtp_posture import dnsbl, names, targets
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.dnsbl import (
    BROKEN,
    DOMAIN,
    ERROR_ANSWER,
    IP,
    LISTED,
    OUT_OF_TIME,
    SKIPPED,
    TIMED_OUT,
    ZONE_OK,
    ZoneSpec,
)
from check_smtp_posture.fanout import each
from check_smtp_posture.nagios import cli, runner, states
from check_smtp_posture.nagios.contexts import DEFAULT, MxContext, TimeContext, seconds
from check_smtp_posture.nagios.summary import FamilySummary

NAME = "DNSBL"
#: queries in flight at once: 30 zones x 4 addresses and each zone's test entry
#: (150 queries) in two waves, for each wave costs a whole DNS round trip
DEFAULT_CONCURRENCY = 128


# --------------------------------------------------------------------------- configuration


class Options(namedtuple("Options", cli.CommonOptions._fields + (
        "domain", "hosts", "ips",
        "ip_zones", "domain_zones",  # of dnsbl.ZoneSpec
        "strict"))):
    """What the run was asked to do, parsed and checked (cli.CommonOptions first)."""

    __slots__ = ()


def zone_arg(kind: str):
    def parse(text: str) -> ZoneSpec:
        if kind == DOMAIN and text.strip().lower() == "default":
            return "default"
        return cli.parsed(dnsbl.parse_zone, text, kind)
    return parse


def build_parser() -> cli.PluginArgumentParser:
    parser = cli.PluginArgumentParser(
        prog="check_dnsbl",
        description="Check whether a domain's MX addresses, or given hosts or IP addresses, "
                    "are listed on DNS blocklists. Answers are validated (RFC 5782): "
                    "documented error answers and broken zones are reported apart from "
                    "listings.")
    what = parser.add_argument_group("what to check (at least one)")
    what.add_argument("-D", "--domain", type=cli.domain_name,
                      help="check every MX address of this domain")
    what.add_argument("-H", "--hostname", action="append", default=[], metavar="HOST",
                      type=cli.host_or_address,
                      help="check this host name's addresses, or this address (repeatable)")
    what.add_argument("--ip", action="append", default=[], type=cli.ip_address, metavar="ADDR",
                      help="check this IPv4 or IPv6 address (repeatable)")
    zones = parser.add_argument_group("zones")
    zones.add_argument("--zone", action="append", default=[], type=zone_arg(IP),
                       metavar="ZONE[=ERR,...]",
                       help="add an IP blocklist zone, optionally with its error answers "
                            "(addresses or networks in 127.0.0.0/8) (repeatable)")
    zones.add_argument("--zones-file", action="append", default=[], metavar="PATH",
                       help="add zones from a file: one 'ZONE [ERR ...]' or "
                            "'domain ZONE [ERR ...]' a line")
    zones.add_argument("--no-default-zones", action="store_true",
                       help="do not use the built-in list of IP blocklists")
    zones.add_argument("--domain-zone", action="append", default=[], type=zone_arg(DOMAIN),
                       metavar="ZONE[=ERR,...]",
                       help="check the -D domain itself on this domain blocklist; 'default' "
                            "for the built-in ones (repeatable)")
    zones.add_argument("--list-zones", action="store_true",
                       help="print the zones that would be asked, with their error answers, "
                            "and exit")
    cli.add_common_options(parser)
    cli.add_dns_options(parser)
    cli.add_family_options(parser)
    cli.add_threshold_options(parser, what="the number of listings", warning="0",
                              critical="1")
    cli.add_concurrency_option(parser, "DNS queries asked", default=DEFAULT_CONCURRENCY)
    parser.add_argument("--strict", action="store_true",
                        help="WARNING when a zone is unusable, timed out or broken "
                             "(default: a note)")
    cli.add_unreachable_option(parser)
    return parser


def select_zones(args) -> tuple:
    ip_zones, domain_zones = [], []
    if not args.no_default_zones:
        ip_zones.extend(dnsbl.DEFAULT_IP_ZONES)
    ip_zones.extend(args.zone)
    for spec in args.domain_zone:
        domain_zones.extend(dnsbl.DEFAULT_DOMAIN_ZONES if spec == "default" else [spec])
    for path in args.zones_file:
        for spec in dnsbl.read_zones_file(path):
            (domain_zones if spec.kind == DOMAIN else ip_zones).append(spec)

    def unique(specs):
        seen = {}
        for spec in specs:
            seen.setdefault(spec.name, spec)
        return list(seen.values())

    return unique(ip_zones), unique(domain_zones)


def zones_from(args) -> tuple | str:
    """(IP zones, domain zones) to ask, or a usage error message."""
    try:
        ip_zones, domain_zones = select_zones(args)
    except ValueError as exc:
        return f"--zones-file: {exc}"
    if not ip_zones and not domain_zones:
        return "no zones to ask (--no-default-zones without --zone or --zones-file)"
    return ip_zones, domain_zones


def list_zones(parser, args) -> int | None:
    """--list-zones: print the zones a run would ask, with their error answers, instead
    of a check; None when not asked for."""
    if not args.list_zones:
        return None
    zones = zones_from(args)
    if isinstance(zones, str):
        return parser.usage_error(zones)
    for spec in zones[0] + zones[1]:
        errors = ",".join(str(n) for n in spec.errors) or "-"
        print(f"{spec.kind}\t{spec.name}\t{errors}\t{spec.note}")
    return 0


def options_from(args) -> Options | str:
    """Options from parsed arguments, or a usage error message."""
    zones = zones_from(args)
    if isinstance(zones, str):
        return zones
    ip_zones, domain_zones = zones
    if not (args.domain or args.hostname or args.ip):
        return "give -D, -H or --ip"
    if domain_zones and not args.domain:
        return "--domain-zone needs -D"
    hosts, ips = [], list(args.ip)
    for host in args.hostname:  # already checked and normalised by cli.host_or_address
        (ips if names.is_ip_literal(host) else hosts).append(host)
    return Options(
        *cli.common_options(args), domain=args.domain, hosts=tuple(hosts),
        ips=tuple(dict.fromkeys(ips)), ip_zones=tuple(ip_zones),
        domain_zones=tuple(domain_zones), strict=args.strict)


# --------------------------------------------------------------------------- facts


class DnsblFacts:
    __slots__ = ("subjects", "resolutions", "lookups", "zones", "query_time")

    def __init__(self, subjects: list | None = None, resolutions: list | None = None,
                 lookups: list | None = None, zones: dict | None = None,
                 query_time: float = 0.0):
        # addresses and domains asked about
        self.subjects: list = [] if subjects is None else subjects
        # targets.Resolution of -D and each -H
        self.resolutions: list = [] if resolutions is None else resolutions
        self.lookups: list = [] if lookups is None else lookups
        self.zones: dict = {} if zones is None else zones  # name -> ZoneHealth
        self.query_time = query_time

    @property
    def listings(self) -> list:
        """Listings that count: not from a broken zone, not the canary."""
        return [lk for lk in self.lookups if lk.outcome == LISTED and not lk.canary
                and self.zones[lk.zone.name].state != BROKEN]

    @property
    def unusable_zones(self) -> list:
        return [z for z in self.zones.values() if z.state != ZONE_OK]

    @property
    def unanswered(self) -> list:
        """Queries the run had no time left for (the zone is not to blame)."""
        return [lk for lk in self.lookups if lk.outcome == OUT_OF_TIME]


# --------------------------------------------------------------------------- probe


class DnsblResource(nagiosplugin.Resource):
    """Finds the addresses, asks every zone about each; decides nothing."""

    def __init__(self, client, *, ip_zones, domain_zones=(), domain=None, hosts=(), ips=(),
                 family=None, concurrency=DEFAULT_CONCURRENCY):
        self.client = client
        self.ip_zones = list(ip_zones)
        self.domain_zones = list(domain_zones)
        self.domain = domain
        self.hosts = list(hosts)
        self.ips = list(ips)
        self.family = family
        self.concurrency = concurrency
        self._dead = set()
        self._lock = threading.Lock()

    def probe(self):
        started = time.monotonic()
        facts = DnsblFacts()
        addresses = self._addresses(facts)
        self._ask(facts, addresses)
        facts.query_time = time.monotonic() - started
        for res in facts.resolutions:
            yield nagiosplugin.Metric(res.what, res, context="mx")
        yield nagiosplugin.Metric("zones", facts, context="zones")
        yield nagiosplugin.Metric("listed", len(facts.listings), min=0, context="listed")
        yield nagiosplugin.Metric("zones_checked", len(facts.zones), min=0, context=DEFAULT)
        yield nagiosplugin.Metric("zones_unusable", len(facts.unusable_zones), min=0,
                                  context=DEFAULT)
        yield seconds("query_time", facts.query_time, "query_time")
        yield nagiosplugin.Metric("queries_unanswered", len(facts.unanswered), min=0,
                                  max=len(facts.lookups), context="unanswered")

    # -- which addresses: the family's resolver, for -D and each -H

    def _addresses(self, facts: DnsblFacts) -> list:
        if self.domain:
            facts.resolutions.append(targets.resolve_mx(
                self.client, self.domain, family=self.family, concurrency=self.concurrency))
        facts.resolutions.extend(targets.resolve_hosts(
            self.client, self.hosts, family=self.family, concurrency=self.concurrency))
        found = dict.fromkeys(self.ips)
        for res in facts.resolutions:
            found.update(dict.fromkeys(res.addresses))
        return [a for a in found if self.family is None
                or ipaddress.ip_address(a).version == self.family]

    # -- the blocklist queries

    def _ask(self, facts: DnsblFacts, addresses: list) -> None:
        lookups = []
        zones = self.ip_zones + (self.domain_zones if self.domain else [])
        for zone in zones:
            subjects = list(addresses) if zone.kind == IP else [self.domain]
            if subjects:
                lookups.extend(dnsbl.lookups(zone, subjects))
        each(lookups, self._lookup, self.concurrency)
        facts.subjects = list(dict.fromkeys(lk.subject for lk in lookups if not lk.canary))
        facts.lookups = lookups
        by_zone = {}
        for lk in lookups:
            by_zone.setdefault(lk.zone.name, []).append(lk)
        facts.zones = {name: dnsbl.zone_health(lks[0].zone, lks)
                       for name, lks in by_zone.items()}

    def _lookup(self, lk: dnsbl.Lookup) -> None:
        with self._lock:
            dead = lk.zone.name in self._dead
        if dead:
            lk.outcome = SKIPPED
            return
        dnsbl.ask(self.client, lk)
        if lk.outcome == TIMED_OUT:
            with self._lock:
                self._dead.add(lk.zone.name)


# --------------------------------------------------------------------------- decide


class ZonesContext(nagiosplugin.Context):
    """Unusable, timed-out and broken zones: a note, or WARNING with --strict."""

    def __init__(self, *, strict=False):
        super().__init__("zones")
        self.strict = strict

    def evaluate(self, metric, resource):
        bad = metric.value.unusable_zones
        if not bad:
            return nagiosplugin.Result(Ok, None, metric)
        hint = (f"{len(bad)} zone{'s' if len(bad) != 1 else ''} unusable: "
                + ", ".join(f"{z.zone.name} ({z.detail})" for z in bad))
        return nagiosplugin.Result(Warn if self.strict else Ok, hint, metric)


class UnansweredContext(nagiosplugin.Context):
    """Queries cut off by -t: the run did not finish, so "not listed" is not known."""

    def __init__(self, *, unreachable: str, timeout: float):
        super().__init__("unanswered")
        self.state = states.state(unreachable)
        self.timeout = timeout

    def evaluate(self, metric, resource):
        if not metric.value:
            return nagiosplugin.Result(Ok, None, metric)
        return nagiosplugin.Result(
            self.state, f"timeout after {self.timeout:g}s: {metric.value} of {metric.max} "
            f"blocklist queries not answered in time (raise -t or --concurrency)", metric)

    def performance(self, metric, resource):
        return nagiosplugin.Performance(metric.name, metric.value, min=0)  # max: no threshold


class ListedContext(nagiosplugin.ScalarContext):
    """The number of (zone, address) listings against -w/-c."""

    def __init__(self, warning="0", critical="1"):
        super().__init__("listed", warning, critical)

    def evaluate(self, metric, resource):
        result = super().evaluate(metric, resource)
        return nagiosplugin.Result(result.state, None, metric)


# --------------------------------------------------------------------------- phrase


def describe_listing(lk: dnsbl.Lookup) -> str:
    text = f"{lk.subject} listed on {lk.zone.name} ({', '.join(lk.codes)}"
    if lk.reason:
        text += f' "{lk.reason}"'
    return text + ")"


def describe_subjects(subjects) -> str:
    addresses = sum(1 for s in subjects if _is_address(s))
    domains = len(subjects) - addresses
    parts = []
    if addresses:
        parts.append(f"{addresses} address{'es' if addresses != 1 else ''}")
    if domains:
        parts.append(f"{domains} domain{'s' if domains != 1 else ''}")
    return " and ".join(parts)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


class DnsblSummary(FamilySummary):
    def _facts(self, results) -> DnsblFacts | None:
        for result in results:
            if result.metric is not None and isinstance(result.metric.value, DnsblFacts):
                return result.metric.value
        return None

    def answers(self, results):
        """Listed or not: the question asked, answered even beside worse findings."""
        facts = self._facts(results)
        if facts is None:
            return []
        if facts.listings:
            return ["; ".join(describe_listing(lk) for lk in facts.listings)]
        # a zone counts when it answered every question; one cut off by -t does not
        cut_off = {lk.zone.name for lk in facts.unanswered}
        usable = sum(1 for z in facts.zones.values()
                     if z.state == ZONE_OK and z.zone.name not in cut_off)
        if facts.subjects and not usable:
            return [] if cut_off else ["no usable zone"]
        if facts.subjects:
            return [f"{describe_subjects(facts.subjects)} not listed on {usable} "
                    f"zone{'s' if usable != 1 else ''}"]
        return []

    def details(self, results):
        facts = self._facts(results)
        if facts is None:
            return []
        lines = []
        for lk in facts.listings:
            kind = "address" if lk.zone.kind == IP else "domain"
            lines.append(f"listed: zone {lk.zone.name}, {kind} {lk.subject}, "
                         f"code {', '.join(lk.codes)}, reason: {lk.reason or '(no TXT)'}")
        for health in facts.unusable_zones:
            lines.append(f"{health.state}: zone {health.zone.name}: {health.detail}")
        lines.append(f"asked {len(facts.zones)} zones about {len(facts.subjects)} "
                     f"subjects: {', '.join(facts.subjects) or '-'}")
        if self.verbosity >= 2:  # every query, the RFC 5782 test entries too
            for lk in facts.lookups:
                codes = f" {', '.join(lk.codes)}" if lk.codes else ""
                detail = f" ({lk.detail})" if lk.detail and lk.outcome != ERROR_ANSWER else ""
                lines.append(f"  {lk.qname}: {lk.outcome}{codes}{detail} "
                             f"[{lk.elapsed * 1000:.0f} ms]")
        return lines


# --------------------------------------------------------------------------- main


def build_check(options: Options, deadline: Deadline) -> nagiosplugin.Check:
    return runner.new_check(
        DnsblResource(cli.dns_client(options, deadline), ip_zones=options.ip_zones,
                      domain_zones=options.domain_zones, domain=options.domain,
                      hosts=options.hosts, ips=options.ips, family=options.family,
                      concurrency=options.concurrency),
        MxContext(unreachable=options.unreachable_state),
        ZonesContext(strict=options.strict),
        UnansweredContext(unreachable=options.unreachable_state, timeout=options.timeout),
        ListedContext(options.warning, options.critical),
        TimeContext("query_time"),
        DnsblSummary(options.verbose),
        name=NAME,
    )


main, console_main = runner.entry_points(build_parser, options_from, build_check, list_zones)


if __name__ == "__main__":  # pragma: no cover
    console_main()
