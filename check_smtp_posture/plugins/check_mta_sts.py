"""check_mta_sts: is the MTA-STS policy fetchable exactly as senders fetch it, and does it
cover every live MX with a valid certificate? (RFC 8461; TLS-RPT, RFC 8460)

Probe (MtaSts.probe) asks DNS for the `_mta-sts` and `_smtp._tls` records, the
MX set (the family's resolver) and the policy host's addresses at once; then
fetches the policy over HTTPS the way a sending MTA does (no redirects, status
200, text/plain, 64 KiB), opens STARTTLS on every MX endpoint for its
certificate, asks for TLSA records and the report domains' MX, all at once,
and compares with the history in --state-file (mtasts.compare_history). It
yields facts; the Contexts (mta_sts_contexts.py) judge them (the policy's mode
decides how bad an uncovered MX is); StsSummary phrases.
"""

from __future__ import annotations

import time
from collections import namedtuple
from dataclasses import dataclass, field

import nagiosplugin

from check_smtp_posture import targets
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.fanout import all_at_once
from check_smtp_posture.nagios import cli, runner
from check_smtp_posture.nagios.contexts import (
    DEFAULT,
    MxContext,
    StateFileContext,
    TimeContext,
    seconds,
)
from check_smtp_posture.plugins.mta_sts_contexts import (
    CoverageContext,
    DaneContext,
    HistoryContext,
    PolicyContext,
    StsRecordContext,
    StsSummary,
    TlsRptContext,
)

NAME = "MTA_STS"
DEFAULT_TIMEOUT = 30.0
POLICY_PATH = "/.well-known/mta-sts.txt"
HTTPS_PORT = 443
SMTP_PORT = 25


# -- configuration ---------------------------------------------------------------


class Options(namedtuple("Options", cli.CommonOptions._fields + (
        "domain", "ca_file", "state_file", "missing"))):
    """What the run was asked to do, parsed and checked (cli.CommonOptions first)."""

    __slots__ = ()


def build_parser() -> cli.PluginArgumentParser:
    parser = cli.PluginArgumentParser(
        prog="check_mta_sts",
        description="Fetch a mail domain's MTA-STS policy (RFC 8461) exactly as a sending MTA "
                    "does, check that it covers every live MX and that each MX presents a "
                    "valid certificate over STARTTLS; check the TLS-RPT record (RFC 8460); "
                    "with --state-file, warn about changes senders may not have seen yet.")
    target = parser.add_argument_group("target")
    target.add_argument("-D", "--domain", type=cli.domain_name,
                        help="the mail domain (required)")
    cli.add_concurrency_option(target, "MX endpoints probed (and DNS queries asked)")
    cli.add_family_options(target)
    cli.add_dns_options(target)

    probes = parser.add_argument_group("probes")
    cli.add_helo_option(probes)
    probes.add_argument("--ca-file", metavar="FILE",
                        help="trust anchors (PEM) for the policy host's and the MX "
                             "certificates (default: the system trust store)")
    probes.add_argument("--state-file", metavar="PATH",
                        help="remember the policies seen, to warn about a changed policy "
                             "with an unchanged id, a downgrade from enforce, and MX not "
                             "covered by a policy senders may still cache")

    limits = parser.add_argument_group("thresholds and states")
    limits.add_argument("--missing", choices=("ok", "warning", "critical"),
                        default="critical",
                        help="state when the domain publishes no MTA-STS record "
                             "(default: critical)")
    cli.add_threshold_options(limits, what="the policy fetch time, in seconds")
    cli.add_unreachable_option(limits)
    cli.add_common_options(limits, timeout=DEFAULT_TIMEOUT)
    return parser


def options_from(args) -> Options | str:
    """Options from parsed arguments, or a usage error message."""
    from check_smtp_posture.userfiles import option_file_problem

    if not args.domain:
        return "-D/--domain is required"
    problem = option_file_problem((("--ca-file", args.ca_file),), "CA file")
    if problem:
        return problem
    if args.state_file is not None and not args.state_file:
        return "--state-file: empty path"
    return Options(
        *cli.common_options(args, default_helo=True), domain=args.domain,
        ca_file=args.ca_file, state_file=args.state_file, missing=args.missing)


# -- facts -------------------------------------------------------------------------


@dataclass
class RecordFacts:
    """A TXT RRset and the one record of its kind senders would use."""

    name: str
    answer: object  # dnslookup.DnsAnswer
    record: object = None  # mtasts.TxtRecord (None when the lookup failed)


@dataclass
class FetchFacts:
    """The policy fetch: where, what came back, and the policy in it."""

    host: str
    resolution: targets.Resolution | None = None
    address: str | None = None
    response: object = None  # https.HttpsResponse
    error: object = None  # https.HttpsError
    cert: object = None  # tls.CertificateFacts
    policy: object = None  # mtasts.Policy
    elapsed: float | None = None

    @property
    def url(self) -> str:
        return f"https://{self.host}{POLICY_PATH}"

    @property
    def accepted(self) -> bool:
        """Would a sender take the policy from this fetch? (mtasts.response_problem)"""
        from check_smtp_posture import mtasts

        return self.response is not None and self.error is None and \
            not mtasts.response_problem(self.host, self.response, self.cert)


@dataclass
class EndpointTls:
    endpoint: targets.Endpoint
    session: object  # smtp.session.SessionResult
    cert: object = None  # tls.CertificateFacts, when TLS was up

    @property
    def delivers(self) -> bool:
        """Would a sender enforcing MTA-STS deliver here? STARTTLS up, the session not
        stopped, a certificate that passes PKIX validation."""
        from check_smtp_posture import mtasts

        s = self.session
        return s.failure is None and s.stopped is None and s.tls is not None and \
            not mtasts.certificate_problems(self.cert)


@dataclass
class MxTls:
    """One MX host: the policy pattern that names it, and what each address presented."""

    target: targets.Target
    pattern: str | None = None
    endpoints: list = field(default_factory=list)  # of EndpointTls
    tlsa: int = 0  # TLSA records at _25._tcp.<name>

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def unreachable(self) -> list:
        from check_smtp_posture.failures import UNREACHED

        return [e for e in self.endpoints
                if e.session.failure is not None and e.session.failure.kind in UNREACHED]

    @property
    def covered(self) -> bool:
        return self.pattern is not None and bool(self.endpoints) and all(
            e.delivers for e in self.endpoints)


@dataclass
class TlsRptFacts:
    records: RecordFacts
    uris: list = field(default_factory=list)  # of mtasts.ReportUri
    mailto_mx: dict = field(default_factory=dict)  # domain -> targets.Resolution


@dataclass
class StsFacts:
    domain: str
    sts: RecordFacts | None = None
    fetch: FetchFacts | None = None
    resolution: targets.Resolution | None = None
    mx: list = field(default_factory=list)  # of MxTls, one per live MX host
    tlsrpt: TlsRptFacts | None = None
    history: object = None  # mtasts.History, with --state-file and a published record
    state_problem: object = None  # statefile.StateProblem

    @property
    def policy(self):
        return self.fetch.policy if self.fetch is not None else None

    @property
    def usable_policy(self):
        """The policy senders would apply: a valid one behind a valid record and fetch."""
        policy = self.policy
        if policy is None or not policy.valid or not self.sts.record.ok:
            return None
        return policy if self.fetch.accepted else None


# -- probe -------------------------------------------------------------------------


class MtaSts(nagiosplugin.Resource):
    def __init__(self, options: Options, deadline: Deadline):
        self.options = options
        self.deadline = deadline
        self.facts = StsFacts(options.domain)

    def probe(self):
        from check_smtp_posture import mtasts

        opts = self.options
        facts = self.facts
        domain = opts.domain
        client = cli.dns_client(opts, self.deadline)
        host = f"mta-sts.{domain}"
        first = all_at_once({
            "sts": lambda: client.query(f"_mta-sts.{domain}", "TXT"),
            "tlsrpt": lambda: client.query(f"_smtp._tls.{domain}", "TXT"),
            "mx": lambda: targets.resolve_mx(client, domain, family=opts.family,
                                             concurrency=opts.concurrency),
            "host": lambda: targets.resolve_hosts(client, [host], family=opts.family)[0],
        }, 4)
        facts.sts = RecordFacts(f"_mta-sts.{domain}", first["sts"])
        if not first["sts"].failed:
            facts.sts.record = mtasts.sts_record(first["sts"].records)
        facts.tlsrpt = TlsRptFacts(RecordFacts(f"_smtp._tls.{domain}", first["tlsrpt"]))
        if not first["tlsrpt"].failed:
            record = mtasts.tlsrpt_record(first["tlsrpt"].records)
            facts.tlsrpt.records.record = record
            if record.ok:
                facts.tlsrpt.uris = mtasts.report_uris(record.get("rua") or "")
        facts.resolution = first["mx"]
        live = [t for t in facts.resolution.targets if t.addresses]
        facts.mx = [MxTls(t) for t in live]
        published = facts.sts.record is not None and facts.sts.record.count > 0
        if published:
            facts.fetch = FetchFacts(host, first["host"])

        second = {"tlsa": lambda: self._tlsa(client)}
        mailto = sorted({u.domain for u in facts.tlsrpt.uris
                         if u.scheme == "mailto" and not u.problem})
        if mailto:
            second["rua"] = lambda: self._report_domains(client, mailto)
        if published:
            second["fetch"] = lambda: self._fetch(facts.fetch)
            second["tls"] = self._mx_tls
        all_at_once(second)

        if facts.usable_policy is not None:
            for mx in facts.mx:
                mx.pattern = facts.usable_policy.covers(mx.name)
        if opts.state_file and facts.fetch is not None:
            self._history()

        yield nagiosplugin.Metric("mx", facts.resolution, context="mx")
        for name in ("sts_record", "policy", "dane", "coverage", "tlsrpt", "history"):
            yield nagiosplugin.Metric(name, facts, context=name)
        yield nagiosplugin.Metric("state_file", facts.state_problem, context="state_file")
        policy = facts.policy
        if policy is not None and policy.max_age is not None:
            yield nagiosplugin.Metric("policy_max_age", policy.max_age, "s", min=0,
                                      context=DEFAULT)
        if facts.fetch is not None and facts.fetch.elapsed is not None:
            yield seconds("policy_fetch_time", facts.fetch.elapsed)
        if facts.resolution.kind != targets.FAILED:
            yield nagiosplugin.Metric("mx_covered", sum(m.covered for m in facts.mx), min=0,
                                      context=DEFAULT)
            yield nagiosplugin.Metric("mx_total", len(facts.mx), min=0, context=DEFAULT)

    # the parts of the second round, each bounded by the deadline

    def _fetch(self, fetch: FetchFacts) -> None:
        from check_smtp_posture import https, mtasts, tls

        started = time.monotonic()
        addresses = fetch.resolution.addresses if fetch.resolution else []
        for address in addresses:  # the next address only when this one cannot be reached
            fetch.address = address
            try:
                fetch.response = https.get(address, HTTPS_PORT, fetch.host, POLICY_PATH,
                                           self.deadline, limit=mtasts.POLICY_LIMIT)
                fetch.error = None
                break
            except https.HttpsError as exc:
                fetch.error = exc
                if exc.kind != https.CONNECT:
                    break
        if addresses:
            fetch.elapsed = time.monotonic() - started
        response = fetch.response
        if response is None:
            return
        fetch.cert = tls.certificate_facts(response.peer_chain, hostname=fetch.host,
                                           ca_file=self.options.ca_file)
        if response.status == 200 and not response.truncated:
            fetch.policy = mtasts.parse_policy(response.body)

    def _mx_tls(self) -> None:
        from check_smtp_posture import tls
        from check_smtp_posture.fanout import each_endpoint
        from check_smtp_posture.smtp.session import STARTTLS_AUTO, SessionPlan, run_session

        opts = self.options
        # what a sender enforcing the policy needs: STARTTLS and a valid certificate;
        # nothing is asked of the session after TLS, so QUIT without another EHLO
        plan = SessionPlan(helo_name=opts.helo_name, starttls=STARTTLS_AUTO, tls_only=True)
        work = [(mx, targets.Endpoint(address, SMTP_PORT, mx.name))
                for mx in self.facts.mx for address in mx.target.addresses]
        if not work:
            return

        def probe(item, deadline):
            mx, endpoint = item
            session = run_session(endpoint, plan, deadline)
            cert = None
            if session.tls is not None:
                cert = tls.certificate_facts(session.peer_chain, hostname=mx.name,
                                             ca_file=opts.ca_file)
            return mx, EndpointTls(endpoint, session, cert)

        for mx, result in each_endpoint(work, probe, self.deadline, opts.concurrency):
            mx.endpoints.append(result)

    def _tlsa(self, client) -> None:
        def ask(mx: MxTls) -> None:
            answer = client.query(f"_25._tcp.{mx.name}", "TLSA")
            mx.tlsa = len(answer.records) if answer.ok else 0

        if self.facts.mx:
            all_at_once({mx.name: (lambda mx=mx: ask(mx)) for mx in self.facts.mx},
                         self.options.concurrency)

    def _report_domains(self, client, domains: list) -> None:
        opts = self.options
        found = all_at_once({d: (lambda d=d: targets.resolve_mx(
            client, d, family=opts.family, concurrency=opts.concurrency)) for d in domains},
            opts.concurrency)
        self.facts.tlsrpt.mailto_mx.update(found)

    def _history(self) -> None:
        from check_smtp_posture import mtasts
        from check_smtp_posture.nagios.statefile import StateFile

        facts = self.facts
        with StateFile(self.options.state_file, self.deadline) as state:
            key = f"mta-sts:{facts.domain}"
            stored = state.data.get(key) if state.usable else None
            if stored is not None and not mtasts.is_history(stored):
                state.discard(key, f"entry {key!r} is not a policy history")
                stored = None
            entries = stored["policies"] if stored else []
            known_mx = stored["mx"] if stored else None
            current_mx = sorted(m.name for m in facts.mx)
            now = time.time()
            policy = facts.usable_policy
            record_id = facts.sts.record.get("id") if facts.sts.record.ok else None
            facts.history = mtasts.compare_history(entries, known_mx, policy, record_id,
                                                   current_mx, now)
            if state.usable and policy is not None:
                state.data[key] = {"policies": mtasts.remember(entries, policy, record_id, now),
                                   "mx": current_mx}
        facts.state_problem = state.problem


# -- main ----------------------------------------------------------------------------


def build_check(options: Options, deadline: Deadline) -> nagiosplugin.Check:
    resource = MtaSts(options, deadline)
    return runner.new_check(
        resource,
        MxContext(unreachable=options.unreachable_state),
        StsRecordContext(options),
        PolicyContext(options),
        CoverageContext(options),
        TlsRptContext(options),
        DaneContext(options),
        HistoryContext(options),
        StateFileContext(),
        TimeContext("time", warning=options.warning, critical=options.critical),
        StsSummary(resource),
        name=NAME)


main, console_main = runner.entry_points(build_parser, options_from, build_check)


if __name__ == "__main__":
    console_main()
