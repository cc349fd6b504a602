"""check_spf: is a domain's SPF record present, unique, valid and within RFC 7208 limits?

Probe, decide, phrase: `SpfResource.probe()` runs the SPF linter (and
check_host() for each --ip / MX address) through `check_smtp_posture.spf`
and yields the facts; the Contexts turn them into states according to the
options; `SpfSummary` phrases them.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

import nagiosplugin
from nagiosplugin.state import Critical, Ok, Unknown, Warn

from check_smtp_posture import cli, runner
from check_smtp_posture.deadline import Deadline

NAME = "SPF"
STATES = {"ok": Ok, "warning": Warn, "critical": Critical, "unknown": Unknown}
RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")
RFC_MAX_LOOKUPS = 10
RFC_MAX_VOID = 2


# --------------------------------------------------------------------------- probe


class MxTargets:
    """What --check-mx found: (host, address) pairs, or why there are none."""

    def __init__(self, status: str = "OK", detail: str = "", pairs=()):
        self.status = status
        self.detail = detail
        self.pairs = list(pairs)


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

    @property
    def name(self):
        return NAME

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
        yield nagiosplugin.Metric("include_depth", report.include_depth, min=0, context="perf")

        targets = [(str(ip), None) for ip in self.ips]
        if self.check_mx:
            mx = self._mx_targets(dns)
            yield nagiosplugin.Metric("mx", mx, context="mx")
            targets += [(addr, host) for host, addr in mx.pairs]
        seen = set()
        for ip, host in targets:
            if ip in seen:
                continue
            seen.add(ip)
            result = check_host(dns, ip, self.domain, self.sender, helo=self.helo)
            yield nagiosplugin.Metric(f"check_host {ip}", (result, host), context="check_host")
        elapsed = round(getattr(dns, "elapsed", 0.0), 4)
        yield nagiosplugin.Metric("dns_time", elapsed, "s", min=0, context="perf")

    def _mx_targets(self, dns) -> MxTargets:
        answer = dns.query(self.domain, "MX")
        if answer.error:
            return MxTargets("ERROR", f"DNS failure looking up MX {self.domain}: "
                                      f"{answer.detail}")
        hosts = [host for _pref, host in sorted(answer.records) if host not in (".", "")]
        if not hosts:
            return MxTargets("EMPTY", f"{self.domain} has no MX host to evaluate")
        kinds = {4: ["A"], 6: ["AAAA"], None: ["A", "AAAA"]}[self.family]
        pairs, failures = [], []
        for host in hosts:
            for kind in kinds:
                addresses = dns.query(host, kind)
                if addresses.error:
                    failures.append(f"{kind} {host}: {addresses.detail}")
                pairs.extend((host, addr) for addr in addresses.records
                             if addresses.status == "OK")
        if failures and not pairs:
            return MxTargets("ERROR", "DNS failure looking up MX addresses: "
                             + "; ".join(failures))
        if not pairs:
            return MxTargets("EMPTY", f"the MX hosts of {self.domain} have no address")
        return MxTargets("PARTIAL" if failures else "OK",
                         "DNS failure looking up MX addresses: " + "; ".join(failures)
                         if failures else "", pairs)


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


# --------------------------------------------------------------------------- contexts


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


class PerfContext(nagiosplugin.ScalarContext):
    """Performance data only."""

    def __init__(self):
        super().__init__("perf")

    def evaluate(self, metric, resource):
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


class MxContext(nagiosplugin.Context):
    def __init__(self, *, dns_failure=Critical):
        super().__init__("mx")
        self.dns_failure = dns_failure

    def evaluate(self, metric, resource):
        mx = metric.value
        if mx.status in ("ERROR", "PARTIAL"):
            return self.result_cls(self.dns_failure, mx.detail, metric)
        if mx.status == "EMPTY":
            return self.result_cls(Warn, mx.detail, metric)
        return self.result_cls(Ok, None, metric)


# --------------------------------------------------------------------------- summary


class SpfSummary(nagiosplugin.Summary):
    def __init__(self, domain: str, verbosity: int = 0):
        self.domain = domain
        self.verbosity = verbosity

    def _report(self, results):
        try:
            return results["record"].metric.value
        except (KeyError, AttributeError):
            return None

    def ok(self, results):
        report = self._report(results)
        parts = []
        if report is not None and report.status != "ok":
            parts.append(str(results["record"].hint or f"no SPF record at {self.domain}"))
        elif report is not None:
            policy = report.policy_term or ("redirect" if report.policy_seen else "no all")
            lookups = report.dns_lookups
            parts.append(f"{self.domain}: policy {policy}, {lookups} DNS lookup"
                         + ("" if lookups == 1 else "s"))
        parts += [r.hint for r in results if r.metric and r.metric.context == "check_host"]
        return "; ".join(parts)

    def problem(self, results):
        bad = sorted((r for r in results if r.state != Ok and r.hint),
                     key=lambda r: -int(r.state))
        hints = list(dict.fromkeys(str(r.hint) for r in bad))
        first = bad[0].metric.context if bad and bad[0].metric else ""
        text = "; ".join(hints)
        if first not in ("record", "finding") and not text.startswith(self.domain):
            text = f"{self.domain}: {text}"
        return text

    def verbose(self, results):
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


# --------------------------------------------------------------------------- main


def ip_address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def result_list(text: str) -> tuple:
    values = tuple(v.strip().lower() for v in text.split(",") if v.strip())
    bad = [v for v in values if v not in RESULTS]
    if bad or not values:
        raise argparse.ArgumentTypeError(
            f"unknown SPF result {', '.join(bad) or text!r} (one of {', '.join(RESULTS)})")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = cli.PluginArgumentParser(
        prog="check_spf",
        description="Check a domain's SPF record (RFC 7208): present, unique, valid, within "
                    "the DNS lookup limits, with a sound policy; optionally evaluate "
                    "check_host() for given addresses or for the domain's MX addresses.")
    parser.add_argument("-D", "--domain", required=True, help="the domain whose SPF to check")
    cli.add_common_options(parser)
    cli.add_dns_options(parser)
    cli.add_threshold_options(parser, what="DNS-querying terms (dns_lookups)",
                              warning="8", critical=str(RFC_MAX_LOOKUPS))
    parser.add_argument("--ip", type=ip_address, action="append", default=[],
                        metavar="ADDR", help="evaluate check_host() for this client address "
                                             "(repeatable)")
    parser.add_argument("--sender", metavar="ADDR",
                        help="MAIL FROM address for check_host() macros (default: "
                             "postmaster@DOMAIN)")
    parser.add_argument("--helo", "--helo-name", dest="helo", metavar="NAME",
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
    parser.add_argument("--dns-failure", choices=("warning", "critical", "unknown"),
                        default="critical",
                        help="state when a DNS lookup fails or times out (temperror; "
                             "default: critical)")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = cli.parse(parser, argv)
    if not isinstance(args, argparse.Namespace):
        return args
    domain = args.domain.strip()
    domain = domain[:-1] if domain.endswith(".") and domain != "." else domain
    from check_smtp_posture.spf.evaluate import valid_name

    if any(c.isspace() for c in domain) or not valid_name(domain, multi_label=True):
        # RFC 7208 §4.3 would answer "none"; a name that cannot exist is the caller's mistake
        return parser.usage_error(f"bad domain name {args.domain!r}")
    if args.family and not args.check_mx:
        return parser.usage_error("-4 and -6 only apply with --check-mx")
    if args.expect and not (args.ip or args.check_mx):
        return parser.usage_error("--expect needs --ip or --check-mx")
    expect = args.expect or (("pass",) if args.check_mx else None)

    deadline = Deadline(args.timeout)
    from check_smtp_posture.dnslookup import DnsClient

    client = DnsClient(deadline, args.dns_server)
    dns_failure = STATES[args.dns_failure]
    check = nagiosplugin.Check(
        SpfResource(domain, client, ips=args.ip, sender=args.sender,
                    helo=args.helo or domain, check_mx=args.check_mx, family=args.family,
                    max_length=args.max_length),
        RecordContext(missing=STATES[args.missing], dns_failure=dns_failure),
        FindingContext(ptr=STATES[args.ptr], dns_failure=dns_failure),
        LimitContext("dns_lookups", limit=RFC_MAX_LOOKUPS, what="DNS-querying terms",
                     warning=args.warning, critical=args.critical),
        LimitContext("void_lookups", limit=RFC_MAX_VOID, what="void lookups",
                     critical=str(RFC_MAX_VOID)),
        LengthContext(args.max_length),
        CheckHostContext(expect=expect, dns_failure=dns_failure),
        MxContext(dns_failure=dns_failure),
        PerfContext(),
        SpfSummary(domain, args.verbose),
        name=NAME,
    )
    return runner.execute(check, verbose=args.verbose, timeout=args.timeout,
                          timeout_state=int(dns_failure))


def console_main():
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    console_main()
