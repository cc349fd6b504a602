"""check_spf: is a domain's SPF record present, unique, valid and within RFC 7208 limits?

Probe, decide, phrase: `SpfResource.probe()` runs the SPF linter (and
check_host() for each --ip / MX address) through `check_smtp_posture.spf`
and yields the facts; the Contexts turn them into states according to the
options; `SpfSummary` phrases them.
"""

from __future__ import annotations

import argparse
from collections import namedtuple

import nagiosplugin
from nagiosplugin.state import Critical, Ok, Warn

from check_smtp_posture import targets
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.nagios import cli, runner, states
from check_smtp_posture.nagios.contexts import DEFAULT, MxContext, TimeContext, seconds
from check_smtp_posture.nagios.summary import FamilySummary
from check_smtp_posture.spf.evaluate import MAX_LOOKUPS as RFC_MAX_LOOKUPS
from check_smtp_posture.spf.evaluate import MAX_VOID as RFC_MAX_VOID
from check_smtp_posture.spf.evaluate import RESULTS

NAME = "SPF"


# -- configuration -----------------------------------------------------------------


class Options(namedtuple("Options", cli.CommonOptions._fields + (
        "domain", "ips", "sender",
        "expect",  # check_host() results that are OK, or None: any but permerror, temperror
        "check_mx", "max_length", "missing", "ptr"))):
    """What the run was asked to do, parsed and checked (cli.CommonOptions first)."""

    __slots__ = ()


def result_list(text: str) -> tuple:
    values = tuple(v.strip().lower() for v in text.split(",") if v.strip())
    bad = [v for v in values if v not in RESULTS]
    if bad or not values:
        raise argparse.ArgumentTypeError(
            f"unknown SPF result {', '.join(bad) or text!r} (one of {', '.join(RESULTS)})")
    return values


def build_parser() -> cli.PluginArgumentParser:
    parser = cli.PluginArgumentParser(
        prog="check_spf",
        description="Check a domain's SPF record (RFC 7208): present, unique, valid, within "
                    "the DNS lookup limits, with a sound policy; optionally evaluate "
                    "check_host() for given addresses or for the domain's MX addresses.")
    parser.add_argument("-D", "--domain", required=True, type=cli.domain_name,
                        help="the domain whose SPF to check")
    cli.add_common_options(parser)
    cli.add_dns_options(parser)
    cli.add_threshold_options(parser, what="DNS-querying terms (dns_lookups)",
                              warning="8", critical=str(RFC_MAX_LOOKUPS))
    parser.add_argument("--ip", type=cli.ip_address, action="append", default=[],
                        metavar="ADDR", help="evaluate check_host() for this client address "
                                             "(repeatable)")
    parser.add_argument("--sender", type=cli.spf_sender, metavar="ADDR",
                        help="MAIL FROM address for check_host() macros (default: "
                             "postmaster@DOMAIN)")
    parser.add_argument("--helo", "--helo-name", dest="helo_name", type=cli.helo_name,
                        metavar="NAME",
                        help="HELO/EHLO name for the %%{h} macro (default: DOMAIN)")
    parser.add_argument("--expect", type=result_list, metavar="RESULT[,RESULT...]",
                        help="CRITICAL unless check_host() gives one of these results "
                             "(pass, fail, softfail, neutral, none, permerror, temperror)")
    parser.add_argument("--check-mx", action="store_true",
                        help="evaluate check_host() for every MX address of the domain "
                             "(expects pass unless --expect says otherwise)")
    cli.add_family_options(parser)
    parser.add_argument("--max-length", type=cli.whole_number(1), default=450, metavar="BYTES",
                        help="WARNING when the SPF record is longer (default: 450)")
    parser.add_argument("--missing", choices=("ok", "warning", "critical"),
                        default="critical", help="state when the domain has no SPF record "
                                                 "(default: critical)")
    parser.add_argument("--ptr", choices=("ok", "warning", "critical"), default="warning",
                        help="state for the deprecated ptr mechanism or %%{p} macro "
                             "(default: warning)")
    cli.add_unreachable_option(parser)
    return parser


def options_from(args) -> Options | str:
    """Options from parsed arguments, or a usage error message."""
    if args.family and not args.check_mx:
        return "-4 and -6 only apply with --check-mx"
    if args.expect and not (args.ip or args.check_mx):
        return "--expect needs --ip or --check-mx"
    return Options(
        *cli.common_options(args), domain=args.domain, ips=tuple(args.ip), sender=args.sender,
        expect=args.expect or (("pass",) if args.check_mx else None), check_mx=args.check_mx,
        max_length=args.max_length, missing=args.missing, ptr=args.ptr)


# -- probe -------------------------------------------------------------------------


class SpfResource(nagiosplugin.Resource):
    """Looks up and evaluates the SPF record; decides nothing."""

    def __init__(self, domain: str, client=None, *, ips=(), sender=None, helo=None,
                 check_mx=False, family=None, max_length=450, lookup=None):
        self.domain = domain
        self.client = client
        self.lookup = lookup  # an SpfDns to use instead of the client (tests)
        self.ips = list(ips)
        self.sender = sender
        self.helo = helo
        self.check_mx = check_mx
        self.family = family
        self.max_length = max_length

    def probe(self):
        from check_smtp_posture.spf import check_host, lint
        from check_smtp_posture.spf.adapter import DnsClientLookup

        dns = self.lookup if self.lookup is not None else DnsClientLookup(self.client)
        report = lint(dns, self.domain, long_record=self.max_length)
        yield nagiosplugin.Metric("record", report, context="record")
        for number, finding in enumerate(visible_findings(report), 1):
            yield nagiosplugin.Metric(f"finding {number}", finding, context="finding")
        yield nagiosplugin.Metric("dns_lookups", report.dns_lookups, min=0,
                                  context="dns_lookups")
        yield nagiosplugin.Metric("void_lookups", report.void_lookups, min=0,
                                  context="void_lookups")
        yield nagiosplugin.Metric("record_length", report.record_length, "B", min=0,
                                  context="record_length")
        yield nagiosplugin.Metric("include_depth", report.include_depth, min=0,
                                  context=DEFAULT)

        clients = [(str(ip), None) for ip in self.ips]
        if self.check_mx:  # the family's resolver: the same MX verdict as every plugin
            resolution = targets.resolve_mx(self.client, self.domain, family=self.family)
            yield nagiosplugin.Metric("mx", resolution, context="mx")
            clients += [(addr, host) for host, addr in resolution.pairs()]
        seen = set()
        for ip, host in clients:
            if ip in seen:
                continue
            seen.add(ip)
            result = check_host(dns, ip, self.domain, self.sender, helo=self.helo)
            yield nagiosplugin.Metric(f"check_host {ip}", (result, host), context="check_host")
        yield seconds("dns_time", getattr(dns, "elapsed", 0.0), "dns_time")


def visible_findings(report) -> list:
    """Findings that get their own result: not the ones other metrics already carry."""
    from check_smtp_posture.spf import linter as lintmod

    skip_top = {lintmod.MISSING, lintmod.LONG}
    if report.status == "temperror":   # the record's own lookup failed: RecordContext says so
        skip_top.add(lintmod.DNS_FAILURE)
    hidden = {lintmod.LOOKUP_LIMIT, lintmod.VOID_LIMIT}
    return [f for f in report.findings
            if f.kind not in hidden
            and not (f.kind in skip_top and f.domain.lower() == report.domain.lower())]


# -- contexts ----------------------------------------------------------------------


class RecordContext(nagiosplugin.Context):
    """Presence of the domain's own record: none and DNS failures of it."""

    def __init__(self, *, missing=Critical, dns_failure=Critical):
        super().__init__("record")
        self.missing = missing
        self.dns_failure = dns_failure

    def evaluate(self, metric, resource):
        report = metric.value
        if report.status == "none":
            text = next((f.text for f in report.findings if f.kind == "missing"),
                        f"no SPF record at {report.domain}")
            return self.result_cls(self.missing, text, metric)
        if report.status == "temperror":
            text = next((f.text for f in report.findings if f.kind == "dns_failure"),
                        "DNS failure")
            return self.result_cls(self.dns_failure, f"temperror: {text}", metric)
        return self.result_cls(Ok, None, metric)


class FindingContext(nagiosplugin.Context):
    """A finding of the linter: permerrors and +all CRITICAL, weak policy WARNING."""

    def __init__(self, *, ptr=Warn, dns_failure=Critical):
        super().__init__("finding")
        self.ptr = ptr
        self.dns_failure = dns_failure

    def evaluate(self, metric, resource):
        from check_smtp_posture.spf import linter as lintmod

        finding = metric.value
        kind = finding.kind
        if kind in lintmod.PERMERROR_KINDS or kind == lintmod.PLUS_ALL:
            state = Critical
        elif kind == lintmod.DNS_FAILURE:
            state = self.dns_failure
        elif kind in (lintmod.NEUTRAL_ALL, lintmod.NO_ALL, lintmod.LONG):
            state = Warn
        elif kind == lintmod.PTR:
            state = self.ptr
        else:
            state = Ok
        return self.result_cls(state, finding.text, metric)


class LimitContext(nagiosplugin.ScalarContext):
    """A counter with user thresholds and an RFC 7208 limit beyond which it is permerror."""

    def __init__(self, name, *, limit, what, warning=None, critical=None):
        super().__init__(name, warning, critical)
        self.limit = limit
        self.what = what

    def evaluate(self, metric, resource):
        value = metric.value
        if value > self.limit:
            return self.result_cls(Critical, f"{value} {self.what}, over the RFC 7208 limit "
                                             f"of {self.limit} (permerror)", metric)
        result = super().evaluate(metric, resource)
        if result.state != Ok:
            return self.result_cls(result.state, f"{value} {self.what} (threshold "
                                                 f"{result.hint})", metric)
        return result


class LengthContext(nagiosplugin.ScalarContext):
    def __init__(self, maximum: int):
        super().__init__("record_length", warning=f"{maximum}")
        self.maximum = maximum

    def evaluate(self, metric, resource):
        if metric.value > self.maximum:
            return self.result_cls(Warn, f"SPF record is {metric.value} bytes, over "
                                         f"{self.maximum} (UDP/512 risk)", metric)
        return self.result_cls(Ok, None, metric)


class CheckHostContext(nagiosplugin.Context):
    """check_host() for one address: compared with --expect when given."""

    def __init__(self, *, expect=None, dns_failure=Critical):
        super().__init__("check_host")
        self.expect = expect
        self.dns_failure = dns_failure

    def evaluate(self, metric, resource):
        result, host = metric.value
        text = result.describe() + (f" [MX {host}]" if host else "")
        if self.expect:
            if result.result in self.expect:
                return self.result_cls(Ok, text, metric)
            state = self.dns_failure if result.result == "temperror" else Critical
            return self.result_cls(state, f"{text}, expected {'/'.join(self.expect)}",
                                   metric)
        if result.result == "temperror":
            return self.result_cls(self.dns_failure, text, metric)
        if result.result == "permerror":
            return self.result_cls(Critical, text, metric)
        return self.result_cls(Ok, text, metric)


# -- summary -----------------------------------------------------------------------


class SpfSummary(FamilySummary):
    def __init__(self, domain: str, verbosity: int = 0):
        super().__init__(verbosity)
        self.domain = domain

    def _report(self, results):
        try:
            return results["record"].metric.value
        except (KeyError, AttributeError):
            return None

    def headline(self, results):
        report = self._report(results)
        if report is None or report.status != "ok":
            return ""  # the record's own result says why (a note with --missing ok)
        policy = report.policy_term or ("redirect" if report.policy_seen else "no all")
        lookups = report.dns_lookups
        return (f"{self.domain}: policy {policy}, {lookups} DNS lookup"
                + ("" if lookups == 1 else "s"))

    def answers(self, results):
        """check_host() for each --ip / MX address: what the user asked, always shown."""
        return [str(r.hint) for r in results if r.metric and r.metric.context == "check_host"]

    def problem(self, results):
        text = super().problem(results)
        bad = [r for r in results if r.state != Ok and r.hint]
        first = max(bad, key=lambda r: int(r.state)).metric.context if bad else ""
        if first not in ("record", "finding") and not text.startswith(self.domain):
            text = f"{self.domain}: {text}"
        return text

    def details(self, results):
        report = self._report(results)
        lines = []
        if report is not None:
            lines.append(f"record: {report.record or '(none)'}")
            lines.append(f"DNS-querying terms: {report.dns_lookups} (limit "
                         f"{RFC_MAX_LOOKUPS}), void lookups: {report.void_lookups} "
                         f"(limit {RFC_MAX_VOID}), include depth: {report.include_depth}")
            for finding in report.findings:
                lines.append(f"finding: {finding.text}")
            if self.verbosity >= 2 and report.trace:
                lines.append("SPF tree (as evaluated for a non-matching client):")
                lines += ["  " + t for t in report.trace]
        for r in results:
            if r.metric is None or r.metric.context != "check_host":
                continue
            result, _host = r.metric.value
            lines.append(f"{result.describe()}; DNS-querying terms {result.dns_lookups}, "
                         f"void lookups {result.void_lookups}")
            if result.explanation:
                lines.append(f"  explanation: {result.explanation}")
            if result.reason and result.mechanism is None:
                lines.append(f"  reason: {result.reason}")
            if self.verbosity >= 3:
                lines += ["  " + t for t in result.trace]
        return lines


# -- main --------------------------------------------------------------------------


def build_check(options: Options, deadline: Deadline, lookup=None) -> nagiosplugin.Check:
    """The check main() runs; `lookup` (an SpfDns such as ZoneDns) replaces DNS in tests."""
    domain = options.domain
    dns_failure = states.state(options.unreachable_state)
    return runner.new_check(
        SpfResource(domain, cli.dns_client(options, deadline), ips=options.ips,
                    sender=options.sender, helo=options.helo_name or domain,
                    check_mx=options.check_mx, family=options.family,
                    max_length=options.max_length, lookup=lookup),
        RecordContext(missing=states.state(options.missing), dns_failure=dns_failure),
        FindingContext(ptr=states.state(options.ptr), dns_failure=dns_failure),
        LimitContext("dns_lookups", limit=RFC_MAX_LOOKUPS, what="DNS-querying terms",
                     warning=options.warning, critical=options.critical),
        LimitContext("void_lookups", limit=RFC_MAX_VOID, what="void lookups",
                     critical=str(RFC_MAX_VOID)),
        LengthContext(options.max_length),
        CheckHostContext(expect=options.expect, dns_failure=dns_failure),
        MxContext(unreachable=options.unreachable_state),
        TimeContext("dns_time"),
        SpfSummary(domain, options.verbose),
        name=NAME,
    )


main, console_main = runner.entry_points(build_parser, options_from, build_check)


if __name__ == "__main__":  # pragma: no cover
    console_main()
