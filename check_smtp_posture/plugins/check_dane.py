"""check_dane: do the TLSA records of every MX, over DNSSEC, match what each endpoint
presents, with a safe rollover (RFC 7672)?

Probe (Dane.probe) gathers facts in the order a sending MTA would: is the
resolver validating at all, is the MX RRset secure, is each MX host's address
RRset secure, what TLSA RRset does `_25._tcp.<host>` hold (and how secure), and
what each endpoint presents over STARTTLS, once as it likes and once restricted
to the other key type (a server with RSA and ECDSA certificates shows a sender
either). Contexts judge; DaneSummary phrases.
"""

from __future__ import annotations

import time
from collections import namedtuple
from dataclasses import dataclass

import nagiosplugin

from check_smtp_posture import dane, names, targets
from check_smtp_posture.dane import LOOKUP_FAILED, NO_TLSA, NOT_APPLICABLE, PUBLISHED, HostTlsa
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.fanout import all_at_once, each_endpoint
from check_smtp_posture.nagios import cli, perfdata, runner, states
from check_smtp_posture.nagios.contexts import MxContext, per_endpoint_contexts
from check_smtp_posture.nagios.summary import ResourceSummary, capped
from check_smtp_posture.sanitize import one_line
from check_smtp_posture.smtp.session import STARTTLS_AUTO, SessionPlan, SessionResult, run_session

NAME = "DANE"
DEFAULT_TIMEOUT = 30.0
#: the validator proof: a name any validating resolver answers with the AD flag, and one
#: whose signatures are broken on purpose (kept so by Comcast for this use)
DEFAULT_SECURE_NAME = "."
DEFAULT_BOGUS_NAME = "dnssec-failed.org"
DAY = 86400.0


# -- configuration ---------------------------------------------------------------


class Options(namedtuple("Options", cli.CommonOptions._fields + (
        "domain", "hostname", "port", "secure_name", "bogus_name", "missing_state"))):
    """What the run was asked to do, parsed and checked (cli.CommonOptions first)."""

    __slots__ = ()


def build_parser() -> cli.PluginArgumentParser:
    parser = cli.PluginArgumentParser(
        prog="check_dane",
        description="Check DANE for SMTP (RFC 7672) on every MX of a mail domain: DNSSEC "
                    "status of the MX, address and TLSA records through a validating "
                    "resolver, each TLSA record against the certificates every endpoint "
                    "presents (RSA and ECDSA), rollover safety and signature expiry.")
    target = parser.add_argument_group("target")
    target.add_argument("-D", "--domain", type=cli.domain_name,
                        help="mail domain: check every address of every MX")
    target.add_argument("-H", "--hostname", type=cli.host_name,
                        help="check this MX host name instead of the MX of --domain (TLSA "
                             "records are per name)")
    target.add_argument("-p", "--port", type=cli.port_number, default=25,
                        help="SMTP port; TLSA records at _PORT._tcp.HOST (default: 25)")
    cli.add_concurrency_option(target, "endpoints probed (and DNS queries asked)")
    cli.add_family_options(target)
    cli.add_dns_options(target)

    dnssec = parser.add_argument_group("DNSSEC")
    dnssec.add_argument("--secure-name", type=_dns_name, default=DEFAULT_SECURE_NAME,
                        metavar="NAME",
                        help="a signed name the resolver must answer with the AD flag to be "
                             f"trusted (default: {DEFAULT_SECURE_NAME!r}, the root)")
    dnssec.add_argument("--bogus-name", type=_dns_name, default=DEFAULT_BOGUS_NAME,
                        metavar="NAME",
                        help="a name with broken signatures the resolver must refuse to "
                             f"answer (default: {DEFAULT_BOGUS_NAME})")

    smtp = parser.add_argument_group("SMTP")
    cli.add_helo_option(smtp)

    limits = parser.add_argument_group("thresholds and states")
    limits.add_argument("--missing", choices=("ok", "warning", "critical"), default="critical",
                        help="state when no MX host publishes TLSA records (default: "
                             "critical)")
    cli.add_threshold_options(limits, what="days left before the earliest signature over "
                                           "the MX and TLSA records expires",
                              warning="7:", critical="3:")
    cli.add_unreachable_option(limits)
    cli.add_perfdata_option(limits)
    cli.add_common_options(limits, timeout=DEFAULT_TIMEOUT)
    return parser


def _dns_name(text: str) -> str:
    return "." if text.strip() == "." else cli.domain_name(text)


def options_from(args) -> Options | str:
    if not args.domain and not args.hostname:
        return "-D/--domain or -H/--hostname is required"
    if args.hostname and names.is_ip_literal(args.hostname):
        return f"-H/--hostname needs a host name, not the address {args.hostname}: TLSA " \
               "records belong to names"
    return Options(
        *cli.common_options(args, default_helo=True), domain=args.domain,
        hostname=args.hostname, port=args.port, secure_name=args.secure_name,
        bogus_name=args.bogus_name, missing_state=args.missing)


# -- probe -------------------------------------------------------------------------


@dataclass(frozen=True)
class Handshake:
    """One STARTTLS session and what its chain says against the TLSA records."""

    asked: str  # "default" or the key type it was restricted to
    session: SessionResult
    check: object = None  # dane.ChainCheck when a chain was presented


@dataclass(frozen=True)
class EndpointDane:
    endpoint: targets.Endpoint
    host: HostTlsa
    handshakes: tuple  # Handshake
    rrsig_expiration: int | None

    @property
    def checks(self) -> list:
        return [h.check for h in self.handshakes if h.check is not None]

    @property
    def failure(self):
        """The first handshake, when it got no chain (its session says why), or None."""
        first = self.handshakes[0]
        if first.check is None:
            return first
        return None

    @property
    def rollover(self):
        return dane.rollover(self.checks)


class Dane(nagiosplugin.Resource):
    def __init__(self, options: Options, deadline: Deadline):
        self.options = options
        self.deadline = deadline
        self.proof = None  # dnslookup.ValidatorProof
        self.resolution: targets.Resolution | None = None
        self.hosts: list[HostTlsa] = []
        self.endpoints: list[EndpointDane] = []
        self.worst: dict = {}  # metric name -> perfdata.Worst, in a run over several endpoints
        self.mta_sts = False

    def probe(self):
        opts = self.options
        client = cli.dns_client(opts, self.deadline, dnssec=True)
        # Questions that need no answer first are asked at once: the validator proof
        # beside the MX set (believed only once the proof holds), later the TLSA
        # records beside _mta-sts. Every query is bounded by the deadline.
        first = all_at_once({
            "proof": lambda: client.prove_validation(opts.secure_name, opts.bogus_name),
            # -H: that host only (-D then names the domain for the MTA-STS note)
            "mx": lambda: targets.resolve_target(opts.hostname, opts.domain, lambda: client,
                                                 family=opts.family,
                                                 concurrency=opts.concurrency)})
        self.proof = first["proof"]
        yield nagiosplugin.Metric("resolver", self.proof, context="resolver")
        if not self.proof.holds:
            return  # nothing it says about DNSSEC can be believed
        self.resolution = first["mx"]
        yield nagiosplugin.Metric("mx", self.resolution, context="mx")
        res = self.resolution
        usable_targets = [t for t in res.targets if t.addresses]
        if not usable_targets:
            return
        if res.kind != targets.HOST and not res.authenticated:
            yield nagiosplugin.Metric("applicable", res, context="applicable")
            return
        jobs = {"hosts": lambda: dane.lookup_tlsa(client, usable_targets, opts.port,
                                                  opts.concurrency)}
        if opts.domain:
            jobs["mta_sts"] = lambda: _has_mta_sts(client, opts.domain)
        found = all_at_once(jobs)
        self.hosts = found["hosts"]
        self.mta_sts = found.get("mta_sts", False)
        yield nagiosplugin.Metric("coverage", self.hosts, context="coverage")
        for host in self.hosts:
            if host.status != PUBLISHED:
                yield nagiosplugin.Metric(f"{host.name}_tlsa", host, context="host")
        published = {h.name: h for h in self.hosts if h.status == PUBLISHED}
        endpoints = [e for e in res.endpoints(opts.port) if e.name in published]
        if endpoints:
            self.endpoints = each_endpoint(
                endpoints, lambda e, d: self._probe_endpoint(e, published[e.name], d),
                self.deadline, opts.concurrency)
        several = opts.domain is not None or len(self.endpoints) > 1
        keys = perfdata.endpoint_keys(result.endpoint for result in self.endpoints)
        for key, result in zip(keys, self.endpoints):
            yield nagiosplugin.Metric(perfdata.label(key if several else "", "dane"), result,
                                      context="dane")
        yield from perfdata.run_metrics(
            [result.endpoint.label for result in self.endpoints],
            [measured(result) for result in self.endpoints], MEASURES,
            # the RRSIG warning names the endpoint where there are several to tell apart
            worst=self.worst if len(self.endpoints) > 1 else {},
            oks=[result.failure is None and all(c.authenticated for c in result.checks)
                 for result in self.endpoints] if several else None,
            keys=keys if opts.perfdata_per_endpoint else None)

    def _probe_endpoint(self, endpoint, host: HostTlsa, deadline: Deadline) -> EndpointDane:
        from check_smtp_posture import tls

        def handshake(asked: str, context) -> Handshake:
            # the certificate is all DANE asks of the session: QUIT once TLS is up
            plan = SessionPlan(helo_name=self.options.helo_name, starttls=STARTTLS_AUTO,
                               require_tls=True, tls_only=True, tls_context=lambda: context)
            session = run_session(endpoint, plan, deadline)
            if session.tls is None or not session.peer_chain:
                return Handshake(asked, session)
            return Handshake(asked, session, dane.check_chain(
                host.records, session.peer_chain, host.reference_names))

        first = handshake("default", tls.client_context())
        handshakes = [first]
        if first.check is not None and first.check.key_type in ("RSA", "ECDSA"):
            # the other key type, if the server has a certificate for it
            other = "ECDSA" if first.check.key_type == "RSA" else "RSA"
            second = handshake(other, tls.key_type_context(other))
            if second.check is not None and second.check.key_type == other:
                handshakes.append(second)
        expirations = [e for e in (self.resolution.rrsig_expiration,
                                   host.answer.rrsig_expiration if host.answer else None)
                       if e is not None]
        return EndpointDane(endpoint, host, tuple(handshakes),
                            min(expirations) if expirations else None)


#: what check_dane counts at each endpoint, the lowest of each in the run: its host's
#: TLSA records, those its certificates matched, the days until the earliest signature
#: over the MX or TLSA records expires (-w/-c)
MEASURES = (
    perfdata.Measure("tlsa_records", perfdata.lowest, min=0),
    perfdata.Measure("tlsa_matched", perfdata.lowest, min=0),
    perfdata.Measure("rrsig_days_left", perfdata.lowest, "rrsig_days_left"))


def measured(result: EndpointDane) -> dict:
    """One endpoint's values of MEASURES."""
    values = {"tlsa_records": len(result.host.records),
              "tlsa_matched": len({o.record for c in result.checks for o in c.matched})}
    if result.rrsig_expiration is not None:
        values["rrsig_days_left"] = round((result.rrsig_expiration - time.time()) / DAY, 1)
    return values


def _has_mta_sts(client, domain: str) -> bool:
    answer = client.query(f"_mta-sts.{domain}", "TXT")
    return answer.ok and any(r.startswith("v=STSv1") for r in answer.records)


# -- contexts ------------------------------------------------------------------------


class ResolverContext(nagiosplugin.Context):
    """A resolver that has not just shown it validates makes every AD flag worthless."""

    def __init__(self, unreachable: str):
        super().__init__("resolver")
        self.unreachable = states.state(unreachable)

    def evaluate(self, metric, resource):
        proof = metric.value  # dnslookup.ValidatorProof
        problem = proof.problem
        if not problem:
            return self.result_cls(nagiosplugin.Ok, "", metric)
        if proof.secure.failed:
            return self.result_cls(self.unreachable, f"resolver check: {problem}", metric)
        return self.result_cls(nagiosplugin.Unknown, "the resolver does not validate DNSSEC: "
                               f"{problem} (use --dns-server with a validating resolver)",
                               metric)


class ApplicableContext(nagiosplugin.Context):
    """An unsigned MX RRset: senders cannot use DANE at all (OK, with a note)."""

    def __init__(self):
        super().__init__("applicable")

    def evaluate(self, metric, resource):
        res: targets.Resolution = metric.value
        return self.result_cls(nagiosplugin.Ok, f"DANE not applicable: the MX records of "
                               f"{res.domain} are not signed (insecure)", metric)


class CoverageContext(nagiosplugin.Context):
    """No MX host with TLSA: --missing; some hosts without: WARNING."""

    def __init__(self, missing: str):
        super().__init__("coverage")
        self.missing = states.state(missing)

    def evaluate(self, metric, resource):
        hosts: list = metric.value
        without = [h for h in hosts if h.status == NO_TLSA]
        if any(h.status == PUBLISHED for h in hosts):
            if without:
                names = ", ".join(capped([h.name for h in without]))
                return self.result_cls(nagiosplugin.Warn, f"DANE covers {len(hosts) - len(without)}"
                                       f" of {len(hosts)} MX hosts: no TLSA records for {names}",
                                       metric)
            return self.result_cls(nagiosplugin.Ok, "", metric)
        if without and len(without) == len(hosts):
            return self.result_cls(self.missing, "no TLSA records for any MX host: DANE not "
                                   "published", metric)
        return self.result_cls(nagiosplugin.Ok, "", metric)


class HostContext(nagiosplugin.Context):
    """A host's TLSA lookup failing makes DANE senders defer; insecure hosts are a note."""

    def __init__(self, unreachable: str):
        super().__init__("host")
        self.unreachable = states.state(unreachable)

    def evaluate(self, metric, resource):
        host: HostTlsa = metric.value
        if host.status == LOOKUP_FAILED:
            state = nagiosplugin.Critical if host.bogus else self.unreachable
            return self.result_cls(state, f"{host.why}: DANE senders will defer mail", metric)
        if host.status == NOT_APPLICABLE:
            return self.result_cls(nagiosplugin.Ok, f"DANE not applicable: {host.why}", metric)
        return self.result_cls(nagiosplugin.Ok, "", metric)


class DaneContext(nagiosplugin.Context):
    """One endpoint whose host publishes TLSA records: could a DANE sender deliver to it?"""

    def __init__(self, unreachable: str):
        super().__init__("dane")
        self.unreachable = unreachable

    def evaluate(self, metric, resource):
        result: EndpointDane = metric.value
        where = result.endpoint.label
        host = result.host
        if not host.usable:
            return self.result_cls(nagiosplugin.Warn, f"{where}: none of {len(host.records)} "
                                   "TLSA records is usable for SMTP: senders fall back to "
                                   "unauthenticated TLS", metric)
        failed = result.failure
        if failed is not None:
            session = failed.session
            if session.failure is not None:
                exc = session.failure
                state = states.failure_state(exc.kind, self.unreachable)
                return self.result_cls(state, f"{where} {exc.phase}: {one_line(exc.detail)} "
                                       "(TLSA published: DANE senders will defer mail)", metric)
            if session.stopped is not None:
                reply = session.replies.get(session.stopped)
                return self.result_cls(nagiosplugin.Critical, f"{where} {session.stopped}: "
                                       f"{one_line(str(reply), 80)} (TLSA published)", metric)
            return self.result_cls(nagiosplugin.Critical, f"{where}: TLSA published but "
                                   "STARTTLS not offered: DANE senders will defer mail", metric)
        unmatched = [c for c in result.checks if not c.authenticated]
        if unmatched:
            check = unmatched[0]
            usable = len(host.usable)
            return self.result_cls(nagiosplugin.Critical, f"{where}: {check.key_type} "
                                   f"certificate matches none of {usable} usable TLSA "
                                   f"record{'s' if usable != 1 else ''}", metric)
        rollover = result.rollover
        if not rollover.ready:
            return self.result_cls(nagiosplugin.Warn, f"{where}: no rollover protection "
                                   f"({rollover.how})", metric)
        return self.result_cls(nagiosplugin.Ok, "", metric)


class RrsigContext(nagiosplugin.ScalarContext):
    """Days until the earliest signature over the MX or TLSA records expires (-w/-c)."""

    def __init__(self, warning, critical):
        super().__init__("rrsig_days_left", warning=warning, critical=critical)

    def evaluate(self, metric, resource):
        result = super().evaluate(metric, resource)
        if result.state == nagiosplugin.Ok:
            return result
        limit = self.critical if result.state == nagiosplugin.Critical else self.warning
        found = resource.worst.get(metric.name)
        where = found.endpoint if found else ""
        return self.result_cls(result.state, f"DNSSEC signatures over the MX/TLSA records "
                               f"{'of ' + where + ' ' if where else ''}expire in "
                               f"{metric.value:g} days (range {limit})", metric)


# -- summary ---------------------------------------------------------------------------


class DaneSummary(ResourceSummary):
    def headline(self, results):
        res = self.resource
        if not res.endpoints:
            return ""
        types = sorted({c.key_type for e in res.endpoints for c in e.checks})
        matched = sorted({" ".join(o.record.short.split()[:3])
                          for e in res.endpoints for c in e.checks for o in c.matched})
        n = len(res.endpoints)
        what = res.resolution.what if res.resolution else ""
        days = [e.rrsig_expiration for e in res.endpoints if e.rrsig_expiration]
        tail = f", signatures valid {(min(days) - time.time()) / DAY:.0f} more days" \
            if days else ""
        return (f"{n} endpoint{'s' if n != 1 else ''} of {what}: DANE authenticated "
                f"({'/'.join(types)}; {', '.join(matched)}), rollover ready{tail}")

    def details(self, results):
        res = self.resource
        opts = res.options
        lines = []
        if opts.helo_note:
            lines.append(f"note: {opts.helo_note}")
        if res.mta_sts:
            lines.append(f"note: {opts.domain} also publishes MTA-STS; senders that do both "
                         "use DANE (RFC 8461 §2)")
        for host in res.hosts:
            if host.status != PUBLISHED:
                lines.append(f"{host.name}: {host.status}" + (f" ({host.why})" if host.why
                                                              else ""))
        for result in res.endpoints:
            lines.extend(_describe_endpoint(result, self.verbosity))
        return lines


def _describe_endpoint(result: EndpointDane, verbosity: int) -> list:
    lines = [f"{result.endpoint.label} port {result.endpoint.port}: "
             f"{len(result.host.records)} TLSA record(s) at {result.host.tlsa_name}"]
    for handshake in result.handshakes:
        check = handshake.check
        if check is None:
            continue
        tls = handshake.session.tls
        lines.append(f"  {check.key_type} certificate ({tls.describe() if tls else 'TLS'}"
                     f"{', asked for ' + handshake.asked if handshake.asked != 'default' else ''}"
                     f"): {'authenticated' if check.authenticated else 'NOT authenticated'}")
        for outcome in check.outcomes:
            lines.append(f"    {outcome.describe()}")
        if not check.authenticated:
            lines.append(f"    the record that would match the live key: {check.live_record}")
    if result.checks:
        rollover = result.rollover
        lines.append(f"  rollover: {'ready' if rollover.ready else 'NOT protected'}: "
                     f"{rollover.how}")
        for text in rollover.stale:
            lines.append(f"  note: {text} matches no issuer of any chain presented: stale?")
    if verbosity >= 3:
        for number, handshake in enumerate(result.handshakes, 1):
            lines.append(f"  transcript of connection {number} ({handshake.asked}):")
            lines.extend("    " + line for line in handshake.session.transcript.lines())
    return lines


# -- main ----------------------------------------------------------------------------


def build_check(options: Options, deadline: Deadline) -> nagiosplugin.Check:
    resource = Dane(options, deadline)
    rrsig = RrsigContext(options.warning, options.critical)
    return runner.new_check(
        resource,
        ResolverContext(options.unreachable_state),
        MxContext(unreachable=options.unreachable_state),
        ApplicableContext(),
        CoverageContext(options.missing_state),
        HostContext(options.unreachable_state),
        DaneContext(options.unreachable_state),
        rrsig,
        *per_endpoint_contexts([rrsig]),
        DaneSummary(resource),
        name=NAME)


main, console_main = runner.entry_points(build_parser, options_from, build_check)


if __name__ == "__main__":
    console_main()
