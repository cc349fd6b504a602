"""check_mx_sanity: is a domain's MX set present and sane?

Probe, decide, phrase: `MxResource.probe()` asks DNS and records what it
found in an `MxFacts`; one Context per question (presence, targets,
addresses, duplicates, FCrDNS, IPv6, redundancy, changes, DNSSEC) turns the
facts into a state according to the options; `MxSummary` phrases the result.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import nagiosplugin
from nagiosplugin.state import Critical, Ok, Unknown, Warn

from check_smtp_posture import cli, runner
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.dnsbl_zones import valid_hostname

NAME = "MX_SANITY"
STATES = {"ok": Ok, "warning": Warn, "critical": Critical, "unknown": Unknown}

# Problems of a single MX target (RFC 5321 §5.1, RFC 2181 §10.3): each one is CRITICAL.
IP_LITERAL = "IP literal"
ALIAS = "CNAME"
NO_ADDRESS = "no address"
TARGET_NXDOMAIN = "NXDOMAIN"
LOOKUP_FAILED = "lookup failed"


# --------------------------------------------------------------------------- facts


@dataclass
class AddressFact:
    address: str
    scope: str  # "global", or why it is not: "loopback", "private", "reserved", ...
    ptr_names: tuple = ()
    fcrdns: bool | None = None  # None: not decided (lookup failed)
    detail: str = ""

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version


@dataclass
class TargetFact:
    preference: int
    name: str
    problem: str = ""
    detail: str = ""
    addresses: list = field(default_factory=list)  # of AddressFact


@dataclass
class ChangeFact:
    source: str  # "expected" (--expect-mx) or "state" (--state-file)
    added: tuple = ()
    missing: tuple = ()
    recorded: bool = False  # the baseline was (re)written this run
    error: str = ""


@dataclass
class MxFacts:
    domain: str
    status: str = ""  # status of the MX query (dnslookup statuses)
    detail: str = ""
    null_mx: bool = False
    mixed_null: bool = False
    implicit: bool = False
    targets: list = field(default_factory=list)  # of TargetFact
    duplicates: tuple = ()
    authenticated: bool | None = None  # None: not asked (--dnssec not given)
    change: ChangeFact | None = None
    dns_time: float = 0.0

    @property
    def mx_names(self) -> list:
        return [t.name for t in self.targets]

    @property
    def addresses(self) -> list:
        """Every address fact, one per distinct address."""
        seen = {}
        for target in self.targets:
            for fact in target.addresses:
                seen.setdefault(fact.address, fact)
        return list(seen.values())

    @property
    def ipv6_count(self) -> int:
        return sum(1 for a in self.addresses if a.version == 6)

    @property
    def fcrdns_failures(self) -> list:
        return [a for a in self.addresses if a.fcrdns is False]


def norm(name: str) -> str:
    return name.rstrip(".").lower() if name != "." else "."


def address_scope(text: str) -> str:
    ip = ipaddress.ip_address(text)
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    for attr in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, "is_" + attr):
            return attr.replace("_", "-")
    if not ip.is_global:
        return "reserved"
    return "global"


# --------------------------------------------------------------------------- probe


class MxResource(nagiosplugin.Resource):
    """Asks DNS about the domain's MX set; decides nothing."""

    def __init__(self, domain, client, *, family=None, state_file=None, accept_changes=False,
                 expect_mx=None, workers=8):
        self.domain = norm(domain)
        self.client = client
        self.family = family
        self.state_file = state_file
        self.accept_changes = accept_changes
        self.expect_mx = expect_mx
        self.workers = workers

    @property
    def name(self):
        return NAME

    def probe(self):
        started = time.monotonic()
        facts = MxFacts(self.domain)
        pool = ThreadPoolExecutor(max_workers=self.workers)
        try:
            self._gather(facts, pool)
        finally:  # every query is bounded by the deadline; never wait on a straggler
            pool.shutdown(wait=False, cancel_futures=True)
        facts.dns_time = time.monotonic() - started
        facts.change = self._changes(facts)
        for ctx in CONTEXT_NAMES:
            yield nagiosplugin.Metric(ctx, facts, context=ctx)
        yield nagiosplugin.Metric("mx_count", len(facts.targets), min=0, context="perf")
        yield nagiosplugin.Metric("address_count", len(facts.addresses), min=0, context="perf")
        yield nagiosplugin.Metric("ipv6_address_count", facts.ipv6_count, min=0,
                                  context="perf")
        yield nagiosplugin.Metric("fcrdns_failures", len(facts.fcrdns_failures), min=0,
                                  context="perf")
        yield nagiosplugin.Metric("dns_time", round(facts.dns_time, 4), "s", min=0,
                                  context="perf")

    def _gather(self, facts: MxFacts, pool) -> None:
        from check_smtp_posture.dnslookup import FAILURES, NOERROR, is_ip_literal, mx_records

        answer = self.client.query(self.domain, "MX")
        facts.status, facts.detail = answer.status, answer.detail
        if self.client.dnssec:
            facts.authenticated = answer.authenticated
        if answer.status in FAILURES or answer.status not in (NOERROR, "NODATA"):
            return
        if answer.status == NOERROR:
            pairs = [(pref, norm(host)) for pref, host in mx_records(answer)]
            if any(host == "." for _, host in pairs):
                facts.null_mx = len(pairs) == 1
                facts.mixed_null = len(pairs) > 1
            seen, dups = set(), []
            for pref, host in pairs:
                if host == ".":
                    continue
                if host in seen:
                    dups.append(host)
                    continue
                seen.add(host)
                facts.targets.append(TargetFact(pref, host))
            facts.duplicates = tuple(dict.fromkeys(dups))
        else:
            # RFC 5321 §5.1: no MX, so the domain's own address records are the implicit MX.
            implicit = TargetFact(0, self.domain)
            self._resolve(implicit)
            if implicit.addresses:
                facts.implicit = True
                facts.targets.append(implicit)
            elif implicit.problem == LOOKUP_FAILED:
                facts.status, facts.detail = "SERVFAIL", implicit.detail
            self._fcrdns_all(facts, pool)
            return
        for target in facts.targets:
            if is_ip_literal(target.name):
                target.problem = IP_LITERAL
        list(pool.map(self._resolve, [t for t in facts.targets if not t.problem]))
        self._fcrdns_all(facts, pool)

    def _resolve(self, target: TargetFact) -> None:
        answers = self.client.addresses(target.name, self.family)
        failed = [a for a in answers if a.failed]
        alias = next((a for a in answers if a.is_alias), None)
        target.addresses = [AddressFact(addr, address_scope(addr))
                            for a in answers if a.ok for addr in a.records]
        if alias is not None:
            target.problem = ALIAS
            target.detail = f"to {norm(alias.canonical_name)}"
        elif any(a.status == "NXDOMAIN" for a in answers):
            target.problem = TARGET_NXDOMAIN
        elif failed and not target.addresses:
            target.problem = LOOKUP_FAILED
            target.detail = "; ".join(a.describe() for a in failed)
        elif not target.addresses:
            target.problem = NO_ADDRESS

    def _fcrdns_all(self, facts: MxFacts, pool) -> None:
        list(pool.map(self._fcrdns, facts.addresses))

    def _fcrdns(self, fact: AddressFact) -> None:
        """Forward-confirmed reverse DNS: a PTR name that resolves back to the address."""
        ptr = self.client.reverse(fact.address)
        if ptr.failed:
            fact.detail = f"PTR lookup {ptr.status}"
            return
        if not ptr.ok:
            fact.fcrdns, fact.detail = False, "no PTR"
            return
        fact.ptr_names = tuple(norm(r) for r in ptr.records)
        rdtype = "AAAA" if fact.version == 6 else "A"
        failed = False
        wanted = ipaddress.ip_address(fact.address)
        for name in fact.ptr_names:
            forward = self.client.query(name, rdtype)
            failed = failed or forward.failed
            if forward.ok and any(ipaddress.ip_address(r) == wanted for r in forward.records):
                fact.fcrdns = True
                fact.detail = f"PTR {name}"
                return
        if failed:
            fact.detail = "forward lookup of PTR name failed"
            return
        fact.fcrdns = False
        fact.detail = f"PTR {', '.join(fact.ptr_names)} does not resolve back"

    def _changes(self, facts: MxFacts) -> ChangeFact | None:
        if facts.status not in ("NOERROR", "NODATA"):
            return None
        current = {"."} if facts.null_mx else set(facts.mx_names)
        if self.expect_mx is not None:
            expected = set(self.expect_mx)
            return ChangeFact("expected", tuple(sorted(current - expected)),
                              tuple(sorted(expected - current)))
        if not self.state_file:
            return None
        key = f"mx:{self.domain}"
        try:
            with nagiosplugin.Cookie(self.state_file) as cookie:
                baseline = cookie.get(key)
                if baseline is None or self.accept_changes:
                    cookie[key] = sorted(current)
                    return ChangeFact("state", recorded=True)
                baseline = set(baseline)
        except (OSError, ValueError) as exc:
            return ChangeFact("state", error=f"state file {self.state_file}: {exc}")
        return ChangeFact("state", tuple(sorted(current - baseline)),
                          tuple(sorted(baseline - current)))


# --------------------------------------------------------------------------- decide


class FactContext(nagiosplugin.Context):
    """A Context that judges the MxFacts with `judge() -> (state, hint)`."""

    def evaluate(self, metric, resource):
        state, hint = self.judge(metric.value)
        return nagiosplugin.Result(state, hint or None, metric)

    def judge(self, facts: MxFacts):  # pragma: no cover - abstract
        raise NotImplementedError


class PresenceContext(FactContext):
    def __init__(self, *, expect_mail=False, dns_failure="critical"):
        super().__init__("presence")
        self.expect_mail = expect_mail
        self.dns_failure = STATES[dns_failure]

    def judge(self, facts):
        if facts.status == "NXDOMAIN":
            return Critical, f"{facts.domain} does not exist (NXDOMAIN)"
        if facts.status not in ("NOERROR", "NODATA"):
            detail = f" ({facts.detail})" if facts.detail else ""
            return self.dns_failure, f"MX lookup failed: {facts.status}{detail}"
        if facts.mixed_null:
            return Critical, "null MX mixed with other MX records"
        if facts.null_mx:
            if self.expect_mail:
                return Critical, "null MX: domain accepts no mail"
            return Ok, "null MX: domain accepts no mail"
        if facts.implicit:
            return Warn, "no MX, implicit MX from address records"
        if not facts.targets:
            return Critical, "no MX and no address records"
        return Ok, ""


class TargetsContext(FactContext):
    def __init__(self):
        super().__init__("targets")

    def judge(self, facts):
        bad = [t for t in facts.targets if t.problem]
        if not bad:
            return Ok, ""
        return Critical, "; ".join(
            f"{t.name}: {t.problem}" + (f" ({t.detail})" if t.detail else "") for t in bad)


class AddressScopeContext(FactContext):
    def __init__(self, *, allow_private=False):
        super().__init__("scope")
        self.allow_private = allow_private

    def judge(self, facts):
        odd = [a for a in facts.addresses if a.scope != "global"]
        if not odd or self.allow_private:
            return Ok, ""
        return Warn, "non-public address " + ", ".join(f"{a.address} ({a.scope})" for a in odd)


class DuplicatesContext(FactContext):
    def __init__(self):
        super().__init__("duplicates")

    def judge(self, facts):
        if facts.duplicates:
            return Warn, "duplicate MX target " + ", ".join(facts.duplicates)
        return Ok, ""


class FcrdnsContext(FactContext):
    def __init__(self, *, state="warning"):
        super().__init__("fcrdns")
        self.state = STATES[state]

    def judge(self, facts):
        failures = facts.fcrdns_failures
        if not failures:
            return Ok, ""
        return self.state, "no FCrDNS for " + ", ".join(
            f"{a.address} ({a.detail})" for a in failures)


class Ipv6Context(FactContext):
    def __init__(self, *, require=False):
        super().__init__("ipv6")
        self.require = require

    def judge(self, facts):
        if self.require and facts.targets and facts.ipv6_count == 0 and not facts.null_mx:
            return Critical, "no MX reachable over IPv6"
        return Ok, ""


class RedundancyContext(FactContext):
    def __init__(self, *, min_mx=1, min_addresses=1):
        super().__init__("redundancy")
        self.min_mx = min_mx
        self.min_addresses = min_addresses

    def judge(self, facts):
        if facts.null_mx or not facts.targets:
            return Ok, ""
        hints = []
        if len(facts.targets) < self.min_mx:
            hints.append(f"{len(facts.targets)} MX, fewer than {self.min_mx}")
        count = len(facts.addresses)
        if 0 < count < self.min_addresses:  # zero: the targets' own problems say why
            hints.append(f"{count} distinct address{'es' if count != 1 else ''}, "
                         f"fewer than {self.min_addresses}")
        return (Warn if hints else Ok), "; ".join(hints)


class ChangesContext(FactContext):
    def __init__(self):
        super().__init__("changes")

    def judge(self, facts):
        change = facts.change
        if change is None:
            return Ok, ""
        if change.error:
            return Unknown, change.error
        if change.recorded:
            return Ok, "MX set recorded as baseline"
        if not change.added and not change.missing:
            return Ok, ""
        parts = []
        if change.added:
            parts.append("added " + ", ".join(change.added))
        if change.missing:
            parts.append("missing " + ", ".join(change.missing))
        what = "MX set differs from expected" if change.source == "expected" \
            else "MX set changed"
        return Warn, f"{what}: {'; '.join(parts)}"


class DnssecContext(FactContext):
    def __init__(self, *, require=False):
        super().__init__("dnssec")
        self.require = require

    def judge(self, facts):
        if facts.authenticated is None:
            return Ok, ""
        if facts.authenticated:
            return Ok, "DNSSEC authenticated"
        return (Critical if self.require else Ok), "answer not DNSSEC-authenticated"


class PerfContext(nagiosplugin.Context):
    """Numbers for perfdata only; never changes the state."""

    def __init__(self):
        super().__init__("perf")

    def evaluate(self, metric, resource):
        return nagiosplugin.Result(Ok, None, metric)

    def performance(self, metric, resource):
        return nagiosplugin.Performance(metric.name, metric.value, metric.uom,
                                        min=metric.min, max=metric.max)


CONTEXT_NAMES = ("presence", "targets", "scope", "duplicates", "fcrdns", "ipv6",
                 "redundancy", "changes", "dnssec")


# --------------------------------------------------------------------------- phrase


class MxSummary(nagiosplugin.Summary):
    def _facts(self, results) -> MxFacts | None:
        for result in results:
            if result.metric is not None and isinstance(result.metric.value, MxFacts):
                return result.metric.value
        return None

    def _notes(self, results):
        return [r.hint for r in results if r.state == Ok and r.hint]

    def ok(self, results):
        facts = self._facts(results)
        if facts is None:  # pragma: no cover - defensive
            return "no facts"
        if facts.null_mx:
            parts = [facts.domain]
        else:
            addrs = facts.addresses
            parts = [f"{facts.domain}: {len(facts.targets)} MX, {len(addrs)} "
                     f"address{'es' if len(addrs) != 1 else ''} ({facts.ipv6_count} IPv6)"]
            if addrs and not facts.fcrdns_failures:
                parts.append("FCrDNS ok")
        return ", ".join(parts + self._notes(results))

    def problem(self, results):
        facts = self._facts(results)
        bad = sorted((r for r in results if r.state != Ok and r.hint),
                     key=lambda r: -int(r.state))
        text = "; ".join(r.hint for r in bad)
        prefix = f"{facts.domain}: " if facts else ""
        return prefix + text

    def verbose(self, results):
        facts = self._facts(results)
        if facts is None:
            return []
        lines = [f"MX query for {facts.domain}: {facts.status}"
                 + (f" ({facts.detail})" if facts.detail else "")]
        if facts.null_mx:
            lines.append("  0 . (null MX, RFC 7505)")
        for t in facts.targets:
            label = "(implicit MX)" if facts.implicit else str(t.preference)
            problem = f" [{t.problem}{': ' + t.detail if t.detail else ''}]" if t.problem else ""
            lines.append(f"  {label} {t.name}{problem}")
            for a in t.addresses:
                fc = {True: "FCrDNS ok", False: "FCrDNS FAILED", None: "FCrDNS unknown"}[a.fcrdns]
                scope = "" if a.scope == "global" else f" {a.scope}"
                lines.append(f"      {a.address}{scope}: {fc}"
                             + (f" ({a.detail})" if a.detail else ""))
        if facts.duplicates:
            lines.append("duplicate targets: " + ", ".join(facts.duplicates))
        for r in results:
            if r.state != Ok and r.hint:
                lines.append(f"{str(r.state).upper()}: {r.hint}")
        return lines


# --------------------------------------------------------------------------- CLI


def name_list(text: str) -> list:
    names = [norm(n.strip()) for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("empty MX list")
    return names


def build_parser() -> cli.PluginArgumentParser:
    parser = cli.PluginArgumentParser(
        prog="check_mx_sanity",
        description="Check that a domain's MX set is present and sane: null MX, "
                    "CNAME/IP-literal/dangling targets, non-public addresses, duplicates, "
                    "FCrDNS, IPv6, redundancy, changes and DNSSEC.")
    parser.add_argument("-D", "--domain", required=True, help="the mail domain to check")
    cli.add_common_options(parser)
    cli.add_dns_options(parser)
    cli.add_family_options(parser)
    parser.add_argument("--query-timeout", type=cli.positive_float, metavar="SECONDS",
                        help="cap for a single DNS query (default: half of -t)")
    parser.add_argument("--dns-failure", choices=("warning", "critical", "unknown"),
                        default="critical",
                        help="state when the domain's MX lookup fails (default: critical)")
    parser.add_argument("--expect-mail", action="store_true",
                        help="the domain must receive mail: a null MX is CRITICAL")
    parser.add_argument("--allow-private", action="store_true",
                        help="accept loopback, private and reserved MX addresses "
                             "(default: WARNING)")
    parser.add_argument("--fcrdns", choices=("warning", "critical", "ok"), default="warning",
                        help="state when an address has no forward-confirmed reverse DNS "
                             "(default: warning)")
    parser.add_argument("--require-ipv6", action="store_true",
                        help="CRITICAL when no MX has an IPv6 address")
    parser.add_argument("--min-mx", type=cli.whole_number(0), default=1, metavar="N",
                        help="WARNING with fewer MX targets (default: 1)")
    parser.add_argument("--min-addresses", type=cli.whole_number(0), default=1, metavar="N",
                        help="WARNING with fewer distinct MX addresses (default: 1)")
    parser.add_argument("--expect-mx", type=name_list, metavar="HOST[,HOST...]",
                        help="the MX host names expected; a difference is a WARNING")
    parser.add_argument("--state-file", metavar="PATH",
                        help="remember the MX set here; a change is a WARNING until "
                             "--accept-changes")
    parser.add_argument("--accept-changes", action="store_true",
                        help="record the current MX set as the new baseline in --state-file")
    parser.add_argument("--dnssec", action="store_true",
                        help="ask with DNSSEC OK and report whether the MX answer was "
                             "authenticated (AD flag)")
    parser.add_argument("--require-dnssec", action="store_true",
                        help="CRITICAL when the MX answer is not authenticated "
                             "(implies --dnssec)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = cli.parse(parser, argv)
    if not isinstance(args, argparse.Namespace):
        return args
    if args.expect_mx is not None and args.state_file:
        return parser.usage_error("--expect-mx and --state-file exclude each other")
    if args.accept_changes and not args.state_file:
        return parser.usage_error("--accept-changes needs --state-file")
    if args.require_ipv6 and args.family == 4:
        return parser.usage_error("--require-ipv6 contradicts -4")
    domain = args.domain.strip()
    if not valid_hostname(domain):
        return parser.usage_error(f"bad domain name {args.domain!r}")

    deadline = Deadline(args.timeout)
    from check_smtp_posture.dnslookup import DnsClient

    client = DnsClient(deadline, args.dns_server,
                       query_cap=args.query_timeout or args.timeout / 2,
                       dnssec=args.dnssec or args.require_dnssec)
    check = nagiosplugin.Check(
        MxResource(domain, client, family=args.family, state_file=args.state_file,
                   accept_changes=args.accept_changes, expect_mx=args.expect_mx),
        PresenceContext(expect_mail=args.expect_mail, dns_failure=args.dns_failure),
        TargetsContext(),
        AddressScopeContext(allow_private=args.allow_private),
        DuplicatesContext(),
        FcrdnsContext(state=args.fcrdns),
        Ipv6Context(require=args.require_ipv6),
        RedundancyContext(min_mx=args.min_mx, min_addresses=args.min_addresses),
        ChangesContext(),
        DnssecContext(require=args.require_dnssec),
        PerfContext(),
        MxSummary(),
        name=NAME,
    )
    return runner.execute(check, verbose=args.verbose, timeout=args.timeout)


def console_main():
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    console_main()
