"""check_mx_sanity: is a domain's MX set present and sane?

Probe, decide, phrase: `MxResource.probe()` takes the domain's MX set from the
family's resolver (targets.py), adds what only this check asks (reverse DNS
of every address, changes since the last run) and records it in an
`MxFacts`. The MX verdict itself (null MX, implicit MX, NXDOMAIN, bad targets)
is the family's `MxContext`, the same in every plugin; the Contexts here judge
the rest (scope, duplicates, FCrDNS, IPv6, redundancy, changes, DNSSEC);
`MxSummary` phrases the result.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import time
from collections import namedtuple

import nagiosplugin
from nagiosplugin.state import Critical, Ok, Warn

from check_smtp_posture import names, targets
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.fanout import each
from check_smtp_posture.nagios import cli, runner, states
from check_smtp_posture.nagios.contexts import (
    DEFAULT,
    MxContext,
    StateFileContext,
    TimeContext,
    seconds,
)
from check_smtp_posture.nagios.statefile import StateFile
from check_smtp_posture.nagios.summary import FamilySummary, capped

NAME = "MX_SANITY"


# -- configuration -----------------------------------------------------------------


class Options(namedtuple("Options", cli.CommonOptions._fields + (
        "domain", "expect_mail", "allow_private", "fcrdns", "require_ipv6", "min_mx",
        "min_addresses", "expect_mx", "state_file", "accept_changes", "dnssec",
        "require_dnssec"))):
    """What the run was asked to do, parsed and checked (cli.CommonOptions first)."""

    __slots__ = ()


def name_list(text: str) -> list:
    names_ = [names.normalize(n) for n in text.split(",") if n.strip()]
    if not names_:
        raise argparse.ArgumentTypeError("empty MX list")
    bad = [n for n in names_ if not names.is_hostname(n)]
    if bad:
        raise argparse.ArgumentTypeError(f"bad MX host name {bad[0]!r}")
    return names_


def build_parser() -> cli.PluginArgumentParser:
    parser = cli.PluginArgumentParser(
        prog="check_mx_sanity",
        description="Check that a domain's MX set is present and sane: null MX, "
                    "CNAME/IP-literal/dangling targets, non-public addresses, duplicates, "
                    "FCrDNS, IPv6, redundancy, changes and DNSSEC.")
    parser.add_argument("-D", "--domain", required=True, type=cli.domain_name,
                        help="the mail domain to check")
    cli.add_common_options(parser)
    cli.add_dns_options(parser)
    cli.add_family_options(parser)
    cli.add_concurrency_option(parser, "DNS queries asked")
    cli.add_unreachable_option(parser)
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
    cli.add_baseline_options(parser, "the MX set", "a change")
    parser.add_argument("--dnssec", action="store_true",
                        help="ask with DNSSEC OK and report whether the MX answer was "
                             "authenticated (AD flag)")
    parser.add_argument("--require-dnssec", action="store_true",
                        help="CRITICAL when the MX answer is not authenticated "
                             "(implies --dnssec)")
    return parser


def options_from(args) -> Options | str:
    """Options from parsed arguments, or a usage error message."""
    if args.expect_mx is not None and args.state_file:
        return "--expect-mx and --state-file exclude each other"
    if args.accept_changes and not args.state_file:
        return "--accept-changes needs --state-file"
    if args.require_ipv6 and args.family == 4:
        return "--require-ipv6 contradicts -4"
    return Options(
        *cli.common_options(args), domain=args.domain, expect_mail=args.expect_mail,
        allow_private=args.allow_private, fcrdns=args.fcrdns, require_ipv6=args.require_ipv6,
        min_mx=args.min_mx, min_addresses=args.min_addresses, expect_mx=args.expect_mx,
        state_file=args.state_file, accept_changes=args.accept_changes,
        dnssec=args.dnssec or args.require_dnssec, require_dnssec=args.require_dnssec)


# -- facts -------------------------------------------------------------------------


class AddressFact:
    __slots__ = ("address", "scope", "ptr_names", "fcrdns", "detail")

    def __init__(self, address: str, scope: str, ptr_names: tuple = (),
                 fcrdns: bool | None = None, detail: str = ""):
        self.address = address
        self.scope = scope  # "global", or why it is not: "loopback", "private", "reserved", ...
        self.ptr_names = ptr_names
        self.fcrdns = fcrdns  # None: not decided (lookup failed)
        self.detail = detail

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version


class ChangeFact:
    __slots__ = ("source", "added", "missing", "recorded")

    def __init__(self, source: str, added: tuple = (), missing: tuple = (),
                 recorded: bool = False):
        self.source = source  # "expected" (--expect-mx) or "state" (--state-file)
        self.added = added
        self.missing = missing
        self.recorded = recorded  # the baseline was (re)written this run


class MxFacts:
    __slots__ = ("resolution", "addresses", "change", "state_problem", "dns_time")

    def __init__(self, resolution: targets.Resolution, addresses: list | None = None,
                 change: ChangeFact | None = None, state_problem=None, dns_time: float = 0.0):
        self.resolution = resolution
        # of AddressFact, one per distinct address
        self.addresses: list = [] if addresses is None else addresses
        self.change = change
        self.state_problem = state_problem  # statefile.StateProblem
        self.dns_time = dns_time

    @property
    def domain(self) -> str:
        return self.resolution.domain

    @property
    def targets(self) -> tuple:
        return self.resolution.targets

    @property
    def null_mx(self) -> bool:
        return self.resolution.kind == targets.NULL

    @property
    def ipv6_count(self) -> int:
        return sum(1 for a in self.addresses if a.version == 6)

    @property
    def fcrdns_failures(self) -> list:
        return [a for a in self.addresses if a.fcrdns is False]


def address_scope(text: str) -> str:
    ip = ipaddress.ip_address(text)
    for attr in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(ip, "is_" + attr):
            return attr.replace("_", "-")
    if not ip.is_global:
        return "reserved"
    return "global"


# -- probe -------------------------------------------------------------------------


class MxResource(nagiosplugin.Resource):
    """Asks DNS about the domain's MX set; decides nothing."""

    def __init__(self, domain, client, deadline, *, family=None, state_file=None,
                 accept_changes=False, expect_mx=None, concurrency=cli.DEFAULT_CONCURRENCY):
        self.domain = domain
        self.client = client
        self.deadline = deadline
        self.family = family
        self.state_file = state_file
        self.accept_changes = accept_changes
        self.expect_mx = expect_mx
        self.concurrency = concurrency

    def probe(self):
        started = time.monotonic()
        resolution = targets.resolve_mx(self.client, self.domain, family=self.family,
                                        concurrency=self.concurrency)
        facts = MxFacts(resolution, [AddressFact(a, address_scope(a))
                                     for a in resolution.addresses])
        self._fcrdns_all(facts.addresses)
        facts.dns_time = time.monotonic() - started
        facts.change = self._changes(facts)
        yield nagiosplugin.Metric("mx", resolution, context="mx")
        for ctx in CONTEXT_NAMES:
            yield nagiosplugin.Metric(ctx, facts, context=ctx)
        yield nagiosplugin.Metric("state_file", facts.state_problem, context="state_file")
        yield nagiosplugin.Metric("mx_count", len(facts.targets), min=0, context=DEFAULT)
        yield nagiosplugin.Metric("address_count", len(facts.addresses), min=0,
                                  context=DEFAULT)
        yield nagiosplugin.Metric("ipv6_address_count", facts.ipv6_count, min=0,
                                  context=DEFAULT)
        yield nagiosplugin.Metric("fcrdns_failures", len(facts.fcrdns_failures), min=0,
                                  context=DEFAULT)
        yield seconds("dns_time", facts.dns_time, "dns_time")

    def _fcrdns_all(self, addresses: list) -> None:
        each(addresses, self._fcrdns, self.concurrency)

    def _fcrdns(self, fact: AddressFact) -> None:
        """Forward-confirmed reverse DNS: a PTR name that resolves back to the address."""
        ptr = self.client.reverse(fact.address)
        if ptr.failed:
            fact.detail = f"PTR lookup {ptr.failure()}"
            return
        if not ptr.ok:
            fact.fcrdns, fact.detail = False, "no PTR"
            return
        fact.ptr_names = tuple(names.normalize(r) for r in ptr.records)
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
        if facts.resolution.kind in (targets.FAILED, targets.NXDOMAIN):
            return None
        current = {"."} if facts.null_mx else {t.name for t in facts.targets}
        if self.expect_mx is not None:
            expected = set(self.expect_mx)
            return ChangeFact("expected", tuple(sorted(current - expected)),
                              tuple(sorted(expected - current)))
        if not self.state_file:
            return None
        key = f"mx:{self.domain}"
        with StateFile(self.state_file, self.deadline) as state:
            baseline = state.data.get(key) if state.usable else None
            if baseline is not None and not (isinstance(baseline, list) and all(
                    isinstance(name, str) for name in baseline)):
                state.discard(key, f"entry {key!r} is not a list of MX names")
                baseline = None
            if state.usable and (baseline is None or self.accept_changes):
                state.data[key] = sorted(current)
        facts.state_problem = state.problem
        if not state.usable:
            return None
        if baseline is None or self.accept_changes:
            return ChangeFact("state", recorded=True)
        baseline = set(baseline)
        return ChangeFact("state", tuple(sorted(current - baseline)),
                          tuple(sorted(baseline - current)))


# -- contexts ----------------------------------------------------------------------


class FactContext(nagiosplugin.Context):
    """A Context that judges the MxFacts with `judge() -> (state, hint)`."""

    def evaluate(self, metric, resource):
        state, hint = self.judge(metric.value)
        return nagiosplugin.Result(state, hint or None, metric)

    def judge(self, facts: MxFacts):  # pragma: no cover - abstract
        raise NotImplementedError


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
        if facts.resolution.duplicates:
            return Warn, "duplicate MX target " + ", ".join(facts.resolution.duplicates)
        return Ok, ""


class FcrdnsContext(FactContext):
    def __init__(self, *, state="warning"):
        super().__init__("fcrdns")
        self.state = states.state(state)

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
        authenticated = facts.resolution.authenticated
        if authenticated is None:
            return Ok, ""
        if authenticated:
            return Ok, "DNSSEC authenticated"
        return (Critical if self.require else Ok), "answer not DNSSEC-authenticated"


CONTEXT_NAMES = ("scope", "duplicates", "fcrdns", "ipv6", "redundancy", "changes", "dnssec")


# -- summary -----------------------------------------------------------------------


class MxSummary(FamilySummary):
    def _facts(self, results) -> MxFacts | None:
        for result in results:
            if result.metric is not None and isinstance(result.metric.value, MxFacts):
                return result.metric.value
        return None

    def headline(self, results):
        facts = self._facts(results)
        if facts is None or facts.null_mx:  # the MX verdict's note says it all
            return ""
        addrs = facts.addresses
        text = (f"{facts.domain}: {len(facts.targets)} MX, {len(addrs)} "
                f"address{'es' if len(addrs) != 1 else ''} ({facts.ipv6_count} IPv6)")
        undecided = [a for a in addrs if a.fcrdns is None]
        if undecided:  # a failed lookup proves nothing either way: say so, never "ok"
            text += ", FCrDNS undecided for " + ", ".join(
                capped([f"{a.address} ({a.detail})" for a in undecided]))
        elif addrs and not facts.fcrdns_failures:
            text += ", FCrDNS ok"
        return text

    def problem(self, results):
        facts = self._facts(results)
        text = super().problem(results)
        if facts is None or re.search(rf"(^|\s){re.escape(facts.domain)}(\s|$)", text):
            return text  # the domain is named already
        return f"{facts.domain}: {text}"

    def details(self, results):
        facts = self._facts(results)
        if facts is None:
            return []
        res = facts.resolution
        lines = [f"MX of {res.domain}: {res.kind}" + (f" ({res.detail})" if res.detail else "")]
        if res.kind in (targets.NULL, targets.NULL_MIXED):
            lines.append("  0 . (null MX, RFC 7505)")
        by_address = {a.address: a for a in facts.addresses}
        for t in res.targets:
            label = "(implicit MX)" if res.kind == targets.IMPLICIT else str(t.preference)
            problem = f" [{t.problem}{': ' + t.detail if t.detail else ''}]" if t.problem else ""
            lines.append(f"  {label} {t.name}{problem}")
            for address in t.addresses:
                a = by_address[address]
                fc = {True: "FCrDNS ok", False: "FCrDNS FAILED", None: "FCrDNS unknown"}[a.fcrdns]
                scope = "" if a.scope == "global" else f" {a.scope}"
                lines.append(f"      {a.address}{scope}: {fc}"
                             + (f" ({a.detail})" if a.detail else ""))
        if res.duplicates:
            lines.append("duplicate targets: " + ", ".join(res.duplicates))
        return lines


# -- main --------------------------------------------------------------------------


def build_check(options: Options, deadline: Deadline) -> nagiosplugin.Check:
    client = cli.dns_client(options, deadline, dnssec=options.dnssec)
    return runner.new_check(
        MxResource(options.domain, client, deadline, family=options.family,
                   state_file=options.state_file, accept_changes=options.accept_changes,
                   expect_mx=options.expect_mx, concurrency=options.concurrency),
        MxContext(unreachable=options.unreachable_state, expect_mail=options.expect_mail),
        AddressScopeContext(allow_private=options.allow_private),
        DuplicatesContext(),
        FcrdnsContext(state=options.fcrdns),
        Ipv6Context(require=options.require_ipv6),
        RedundancyContext(min_mx=options.min_mx, min_addresses=options.min_addresses),
        ChangesContext(),
        DnssecContext(require=options.require_dnssec),
        StateFileContext(),
        TimeContext("dns_time"),
        MxSummary(options.verbose),
        name=NAME,
    )


main, console_main = runner.entry_points(build_parser, options_from, build_check)


if __name__ == "__main__":  # pragma: no cover
    console_main()
