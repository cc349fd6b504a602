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
from dataclasses import dataclass

import nagiosplugin

from check_smtp_posture import names, targets
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.fanout import each_endpoint
from check_smtp_posture.nagios import cli, runner, states
from check_smtp_posture.nagios.contexts import MxContext
from check_smtp_posture.nagios.summary import FamilySummary, capped
from check_smtp_posture.sanitize import one_line
from check_smtp_posture.smtp.session import STARTTLS_AUTO, SessionPlan, SessionResult, run_session

DEFAULT_TIMEOUT = 30.0
#: the validator proof: a name any validating resolver answers with the AD flag, and one
#: whose signatures are broken on purpose (kept so by Comcast for this use)
DEFAULT_SECURE_NAME = "."
DEFAULT_BOGUS_NAME = "dnssec-failed.org"
DAY = 86400.0

# what DNS says about one MX host's TLSA records
PUBLISHED = "published"  # secure, non-empty
NO_TLSA = "no TLSA"  # securely denied: no DANE for this host
NOT_APPLICABLE = "not applicable"  # the host's addresses or the TLSA RRset are insecure
LOOKUP_FAILED = "lookup failed"  # senders defer mail



# -- configuration ---------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    domain: str | None
    hostname: str | None
    port: int
    family: int | None
    dns_server: tuple | None
    query_timeout: float | None
    concurrency: int
    helo_name: str
    helo_note: str | None
    secure_name: str
    bogus_name: str
    missing_state: str
    unreachable_state: str
    warning: str | None
    critical: str | None
    verbose: int
    timeout: float


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
    smtp.add_argument("--helo-name", type=cli.helo_name, metavar="NAME",
                      help="name to announce in EHLO (default: this host's fully qualified "
                           "name)")

    limits = parser.add_argument_group("thresholds and states")
    limits.add_argument("--missing", choices=("ok", "warning", "critical"), default="critical",
                        help="state when no MX host publishes TLSA records (default: "
                             "critical)")
    cli.add_threshold_options(limits, what="days left before the earliest signature over "
                                           "the MX and TLSA records expires",
                              warning="7:", critical="3:")
    cli.add_unreachable_option(limits)
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
    helo, helo_note = args.helo_name, None
    if helo is None:
        helo, helo_note = cli.default_helo_name(min(1.0, args.timeout / 10))
    return Options(
        domain=args.domain, hostname=args.hostname, port=args.port, family=args.family,
        dns_server=tuple(args.dns_server) if args.dns_server else None,
        query_timeout=args.query_timeout, concurrency=args.concurrency, helo_name=helo,
        helo_note=helo_note, secure_name=args.secure_name, bogus_name=args.bogus_name,
        missing_state=args.missing, unreachable_state=args.unreachable_state,
        warning=args.warning, critical=args.critical, verbose=args.verbose,
        timeout=args.timeout)


# -- probe -------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidatorProof:
    """Did the resolver just show it validates? (AD on a signed name, bogus refused)"""

    secure: object  # DnsAnswer
    bogus: object  # DnsAnswer

    @property
    def problem(self) -> str:
        if self.secure.failed:
            return f"lookup of {self.secure.qname} failed: " + _failure(self.secure)
        if not self.secure.authenticated:
            return f"{self.secure.qname} came back without the AD flag"
        if not self.bogus.failed:
            return f"{self.bogus.qname}, whose signatures are broken, was answered " \
                   f"({self.bogus.status})"
        return ""


@dataclass(frozen=True)
class HostTlsa:
    """What DNS says about one MX host for DANE."""

    name: str
    status: str
    tlsa_name: str
    records: tuple = ()  # dane.TlsaRecord
    answer: object = None  # the TLSA DnsAnswer (None when not asked)
    why: str = ""  # for NOT_APPLICABLE and LOOKUP_FAILED
    reference_names: tuple = ()  # names the certificate may carry (RFC 7672 §3.2.3)

    @property
    def usable(self) -> list:
        return [r for r in self.records if r.usable]

    @property
    def bogus(self) -> bool:
        answer = self.answer
        return answer is not None and answer.bogus


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
        from check_smtp_posture import dane

        return dane.rollover(self.checks)


class Dane(nagiosplugin.Resource):
    def __init__(self, options: Options, deadline: Deadline):
        self.options = options
        self.deadline = deadline
        self.proof: ValidatorProof | None = None
        self.resolution: targets.Resolution | None = None
        self.hosts: list[HostTlsa] = []
        self.endpoints: list[EndpointDane] = []
        self.mta_sts = False

    @property
    def name(self):
        return "DANE"

    def probe(self):
        from concurrent.futures import ThreadPoolExecutor

        opts = self.options
        client = cli.dns_client(opts, self.deadline, dnssec=True)
        # Questions that need no answer first are asked at once: the validator proof
        # beside the MX set (believed only once the proof holds), later the TLSA
        # records beside _mta-sts. Every query is bounded by the deadline.
        pool = ThreadPoolExecutor(max_workers=3)
        try:
            secure = pool.submit(client.query, opts.secure_name, "SOA")
            bogus = pool.submit(client.query, opts.bogus_name, "A")
            # -H: that host only (-D then names the domain for the MTA-STS note)
            mx = pool.submit(targets.resolve_target, opts.hostname, opts.domain,
                             lambda: client, family=opts.family,
                             concurrency=opts.concurrency)
            self.proof = ValidatorProof(secure.result(), bogus.result())
            if not self.proof.problem:
                self.resolution = mx.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        yield nagiosplugin.Metric("resolver", self.proof, context="resolver")
        if self.proof.problem:
            return  # nothing it says about DNSSEC can be believed
        yield nagiosplugin.Metric("mx", self.resolution, context="mx")
        res = self.resolution
        usable_targets = [t for t in res.targets if t.addresses]
        if not usable_targets:
            return
        if res.kind != targets.HOST and not res.authenticated:
            yield nagiosplugin.Metric("applicable", res, context="applicable")
            return
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            mta_sts = pool.submit(_has_mta_sts, client, opts.domain) if opts.domain else None
            self.hosts = _lookup_tlsa(client, usable_targets, opts)
            self.mta_sts = mta_sts.result() if mta_sts is not None else False
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
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
        prefixed = len(self.endpoints) > 1
        for result in self.endpoints:
            prefix = result.endpoint.perf_prefix(prefixed)
            yield nagiosplugin.Metric(prefix + "dane", result, context="dane")
            checks = result.checks
            matched = {o.record for c in checks for o in c.matched}
            yield nagiosplugin.Metric(prefix + "tlsa_records", len(result.host.records), min=0,
                                      context="default")
            yield nagiosplugin.Metric(prefix + "tlsa_matched", len(matched), min=0,
                                      context="default")
            if result.rrsig_expiration is not None:
                days = round((result.rrsig_expiration - time.time()) / DAY, 1)
                yield nagiosplugin.Metric(prefix + "rrsig_days_left", days,
                                          context="rrsig_days_left")

    def _probe_endpoint(self, endpoint, host: HostTlsa, deadline: Deadline) -> EndpointDane:
        from check_smtp_posture import dane, tls

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
            # the other key type, if the server has a certificate for it: TLS 1.2 lets
            # the client choose the certificate's type by the cipher suites it offers
            other = "ECDSA" if first.check.key_type == "RSA" else "RSA"
            context = tls.client_context(max_version=_tls12())
            context.set_ciphers(("aECDSA" if other == "ECDSA" else "aRSA") + ":@SECLEVEL=0")
            second = handshake(other, context)
            if second.check is not None and second.check.key_type == other:
                handshakes.append(second)
        expirations = [e for e in (self.resolution.rrsig_expiration,
                                   host.answer.rrsig_expiration if host.answer else None)
                       if e is not None]
        return EndpointDane(endpoint, host, tuple(handshakes),
                            min(expirations) if expirations else None)


def _tls12():
    import ssl

    return ssl.TLSVersion.TLSv1_2


def _has_mta_sts(client, domain: str) -> bool:
    answer = client.query(f"_mta-sts.{domain}", "TXT")
    return answer.ok and any(r.startswith("v=STSv1") for r in answer.records)


def _lookup_tlsa(client, hosts, opts: Options) -> list:
    """TLSA RRset of every MX host at once (bounded), with the RFC 7672 §2.2.2 alias rule."""
    from concurrent.futures import ThreadPoolExecutor

    def one(target) -> HostTlsa:
        return _host_tlsa(client, target, opts.port)

    if len(hosts) == 1:
        return [one(hosts[0])]
    with ThreadPoolExecutor(max_workers=max(1, min(opts.concurrency, len(hosts)))) as pool:
        return list(pool.map(one, hosts))


def _host_tlsa(client, target, port: int) -> HostTlsa:
    from check_smtp_posture import dane, dnslookup

    name = target.name
    if not target.authenticated:
        return HostTlsa(name, NOT_APPLICABLE, f"_{port}._tcp.{name}",
                        why=f"the address records of {name} are not signed (insecure)")
    # A host name that is a (secure) alias: the TLSA records of where it leads come first,
    # the original name's are the fallback; both names are reference names (§3.2.3).
    names = [target.canonical, name] if target.canonical and target.canonical != name \
        else [name]
    answer = None
    for base in names:
        tlsa_name = f"_{port}._tcp.{base}"
        answer = client.query(tlsa_name, "TLSA")
        if answer.failed:
            detail = _failure(answer)
            return HostTlsa(name, LOOKUP_FAILED, tlsa_name, answer=answer,
                            why=f"TLSA lookup of {tlsa_name} failed: {detail}")
        if not answer.authenticated:
            return HostTlsa(name, NOT_APPLICABLE, tlsa_name, answer=answer,
                            why=f"the TLSA records of {name} are not signed (insecure)")
        if answer.status == dnslookup.NOERROR:
            records = tuple(dane.TlsaRecord.from_text(r) for r in answer.records)
            return HostTlsa(name, PUBLISHED, tlsa_name, records, answer,
                            reference_names=tuple(names))
    return HostTlsa(name, NO_TLSA, f"_{port}._tcp.{name}", answer=answer,
                    why=f"{name} has no TLSA records")


def _failure(answer) -> str:
    detail = answer.status
    extra = "; ".join(x for x in (answer.detail, answer.extended_error) if x)
    return detail + (f" ({one_line(extra, 120)})" if extra else "")


# -- contexts ------------------------------------------------------------------------


class ResolverContext(nagiosplugin.Context):
    """A resolver that has not just shown it validates makes every AD flag worthless."""

    def __init__(self, unreachable: str):
        super().__init__("resolver")
        self.unreachable = states.state(unreachable)

    def evaluate(self, metric, resource):
        proof: ValidatorProof = metric.value
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
        where = metric.name[: -len("rrsig_days_left")].rstrip("_")
        return self.result_cls(result.state, f"DNSSEC signatures over the MX/TLSA records "
                               f"{'of ' + where + ' ' if where else ''}expire in "
                               f"{metric.value:g} days (range {limit})", metric)


# -- summary ---------------------------------------------------------------------------


class DaneSummary(FamilySummary):
    def __init__(self, resource: Dane):
        super().__init__(resource.options.verbose)
        self.resource = resource

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
    return runner.new_check(
        resource,
        ResolverContext(options.unreachable_state),
        MxContext(unreachable=options.unreachable_state),
        ApplicableContext(),
        CoverageContext(options.missing_state),
        HostContext(options.unreachable_state),
        DaneContext(options.unreachable_state),
        RrsigContext(options.warning, options.critical),
        DaneSummary(resource),
        name="DANE")


def main(argv=None) -> int:
    return runner.plugin_main(argv, build_parser, options_from, build_check)


def console_main() -> None:
    runner.console(main)


if __name__ == "__main__":
    console_main()
