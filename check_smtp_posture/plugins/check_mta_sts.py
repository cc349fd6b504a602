"""check_mta_sts: is the MTA-STS policy fetchable exactly as senders fetch it, and does it
cover every live MX with a valid certificate? (RFC 8461; TLS-RPT, RFC 8460)

Probe (MtaSts.probe) asks DNS for the `_mta-sts` and `_smtp._tls` records, the
MX set (the family's resolver) and the policy host's addresses at once; then
fetches the policy over HTTPS the way a sending MTA does (no redirects, status
200, text/plain, 64 KiB), opens STARTTLS on every MX endpoint for its
certificate, asks for TLSA records and the report domains' MX, all at once,
and compares with the history in --state-file. It yields facts; the Contexts
judge them (the policy's mode decides how bad an uncovered MX is); StsSummary
phrases.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import nagiosplugin
from nagiosplugin.state import Critical, Ok, Warn

from check_smtp_posture import targets
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.nagios import cli, runner, states
from check_smtp_posture.nagios.contexts import (
    DEFAULT,
    MxContext,
    StateFileContext,
    TimeContext,
    seconds,
)
from check_smtp_posture.nagios.summary import FamilySummary, capped
from check_smtp_posture.sanitize import one_line

NAME = "MTA_STS"
DEFAULT_TIMEOUT = 30.0
POLICY_PATH = "/.well-known/mta-sts.txt"
HTTPS_PORT = 443
SMTP_PORT = 25
#: entries of policy history kept per domain in --state-file
HISTORY_CAP = 10
#: certificate findings that fail PKIX validation (weak keys are check_smtp_phases' matter)
PKIX_FAILURES = ("unreadable", "expired", "not yet valid", "untrusted", "name mismatch")


# -- configuration ---------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    domain: str
    family: int | None
    dns_server: tuple | None
    query_timeout: float | None
    concurrency: int
    helo_name: str
    helo_note: str | None
    ca_file: str | None
    state_file: str | None
    missing: str
    unreachable_state: str
    warning: str | None
    critical: str | None
    verbose: int
    timeout: float


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
    probes.add_argument("--helo-name", type=cli.helo_name, metavar="NAME",
                        help="name to announce in EHLO (default: this host's fully qualified "
                             "name)")
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
    helo, helo_note = args.helo_name, None
    if helo is None:
        helo, helo_note = cli.default_helo_name(min(1.0, args.timeout / 10))
    return Options(
        domain=args.domain, family=args.family,
        dns_server=tuple(args.dns_server) if args.dns_server else None,
        query_timeout=args.query_timeout, concurrency=args.concurrency, helo_name=helo,
        helo_note=helo_note, ca_file=args.ca_file, state_file=args.state_file,
        missing=args.missing, unreachable_state=args.unreachable_state,
        warning=args.warning, critical=args.critical, verbose=args.verbose,
        timeout=args.timeout)


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


@dataclass
class EndpointTls:
    endpoint: targets.Endpoint
    session: object  # smtp.session.SessionResult
    cert: object = None  # tls.CertificateFacts, when TLS was up

    @property
    def problem(self) -> str:
        """Why a sender enforcing MTA-STS would not deliver here ('' when it would)."""
        s = self.session
        if s.failure is not None:
            return f"{s.failure.phase}: {one_line(s.failure.detail, 80)}"
        if s.stopped is not None:
            return f"{s.stopped}: {one_line(str(s.replies.get(s.stopped)), 60)}"
        if s.tls is None:
            return "no STARTTLS"
        bad = [phrase for kind, phrase in self.cert.findings() if kind in PKIX_FAILURES]
        return "certificate " + ", ".join(bad) if bad else ""


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
    def invalid(self) -> list:
        """Endpoints that answered but would fail an MTA-STS sender."""
        return [e for e in self.endpoints if e not in self.unreachable and e.problem]

    @property
    def covered(self) -> bool:
        return self.pattern is not None and bool(self.endpoints) and not any(
            e.problem for e in self.endpoints)


@dataclass
class TlsRptFacts:
    records: RecordFacts
    uris: list = field(default_factory=list)  # of mtasts.ReportUri
    mailto_mx: dict = field(default_factory=dict)  # domain -> targets.Resolution


@dataclass
class HistoryFacts:
    findings: list = field(default_factory=list)  # of (phrase, until) that WARN
    notes: list = field(default_factory=list)
    problem: object = None  # statefile.StateProblem


@dataclass
class StsFacts:
    domain: str
    sts: RecordFacts | None = None
    fetch: FetchFacts | None = None
    resolution: targets.Resolution | None = None
    mx: list = field(default_factory=list)  # of MxTls, one per live MX host
    tlsrpt: TlsRptFacts | None = None
    history: HistoryFacts = field(default_factory=HistoryFacts)

    @property
    def policy(self):
        return self.fetch.policy if self.fetch is not None else None

    @property
    def usable_policy(self):
        """The policy senders would apply: a valid one behind a valid record and fetch."""
        policy = self.policy
        if policy is None or not policy.valid or not self.sts.record.ok:
            return None
        if fetch_problem(self.fetch):
            return None
        return policy


# -- probe -------------------------------------------------------------------------


def _all_at_once(jobs: dict, workers: int) -> dict:
    """name -> job() for every job, run concurrently; a job's exception is raised here.

    Every job is bounded by the run's deadline, so waiting for them is bounded too.
    """
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs))))
    try:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class MtaSts(nagiosplugin.Resource):
    def __init__(self, options: Options, deadline: Deadline):
        self.options = options
        self.deadline = deadline
        self.facts = StsFacts(options.domain)

    @property
    def name(self):
        return NAME

    def probe(self):
        from check_smtp_posture import mtasts

        opts = self.options
        facts = self.facts
        domain = opts.domain
        client = cli.dns_client(opts, self.deadline)
        host = f"mta-sts.{domain}"
        first = _all_at_once({
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
        _all_at_once(second, len(second))

        if facts.usable_policy is not None:
            for mx in facts.mx:
                mx.pattern = facts.usable_policy.covers(mx.name)
        if opts.state_file and facts.fetch is not None:
            self._history()

        yield nagiosplugin.Metric("mx", facts.resolution, context="mx")
        for name in ("sts_record", "policy", "dane", "coverage", "tlsrpt", "history"):
            yield nagiosplugin.Metric(name, facts, context=name)
        yield nagiosplugin.Metric("state_file", facts.history.problem, context="state_file")
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
            _all_at_once({mx.name: (lambda mx=mx: ask(mx)) for mx in self.facts.mx},
                         self.options.concurrency)

    def _report_domains(self, client, domains: list) -> None:
        opts = self.options
        found = _all_at_once({d: (lambda d=d: targets.resolve_mx(
            client, d, family=opts.family, concurrency=opts.concurrency)) for d in domains},
            opts.concurrency)
        self.facts.tlsrpt.mailto_mx.update(found)

    def _history(self) -> None:
        from check_smtp_posture.nagios.statefile import StateFile

        facts = self.facts
        with StateFile(self.options.state_file, self.deadline) as state:
            key = f"mta-sts:{facts.domain}"
            stored = state.data.get(key) if state.usable else None
            if stored is not None and not _history_shape(stored):
                state.discard(key, f"entry {key!r} is not a policy history")
                stored = None
            entries = stored["policies"] if stored else []
            known_mx = stored["mx"] if stored else None
            current_mx = sorted(m.name for m in facts.mx)
            now = time.time()
            policy = facts.usable_policy
            record_id = facts.sts.record.get("id") if facts.sts.record.ok else None
            facts.history = judge_history(entries, known_mx, policy, record_id, current_mx,
                                          now)
            if state.usable and policy is not None:
                state.data[key] = {"policies": remember(entries, policy, record_id, now),
                                   "mx": current_mx}
        facts.history.problem = state.problem


def _history_shape(stored) -> bool:
    """Is a state entry what remember() wrote? (anything else is corrupt)"""
    if not isinstance(stored, dict) or not isinstance(stored.get("policies"), list):
        return False
    if not isinstance(stored.get("mx"), list) or not all(isinstance(m, str)
                                                         for m in stored["mx"]):
        return False
    for entry in stored["policies"]:
        if not isinstance(entry, dict):
            return False
        if not all(isinstance(entry.get(k), str) for k in ("id", "digest", "mode")):
            return False
        if not all(isinstance(entry.get(k), (int, float)) and not isinstance(entry.get(k), bool)
                   for k in ("max_age", "seen")):
            return False
        if not isinstance(entry.get("mx"), list) or not all(isinstance(p, str)
                                                            for p in entry["mx"]):
            return False
    return True


def _cached_until(entry: dict) -> float:
    return entry["seen"] + entry["max_age"]


def judge_history(entries: list, known_mx, policy, record_id, current_mx: list,
                  now: float) -> HistoryFacts:
    """What the policies seen before say about the one fetched now (facts, not states).

    An older policy matters while senders may still cache it: until its last
    fetch plus its max_age (RFC 8461 §5.1).
    """
    from check_smtp_posture import clock, mtasts

    out = HistoryFacts()
    if known_mx is not None and sorted(known_mx) != current_mx:
        added = sorted(set(current_mx) - set(known_mx))
        gone = sorted(set(known_mx) - set(current_mx))
        out.notes.append("MX set changed since the last run: "
                         + ", ".join([f"+{m}" for m in added] + [f"-{m}" for m in gone]))
    if policy is None:
        cached = [e for e in entries if _cached_until(e) > now]
        if cached:
            latest = max(cached, key=lambda e: e["seen"])
            out.notes.append(f"senders that cached policy id {latest['id']} keep it until "
                             f"{clock.minute(_cached_until(latest))}")
        return out
    older = [e for e in entries if _cached_until(e) > now
             and not (e["id"] == record_id and e["digest"] == policy.digest)]
    for entry in older:
        until = clock.minute(_cached_until(entry))
        if entry["id"] == record_id:
            out.findings.append(f"policy changed but its id {record_id} did not: senders keep "
                                f"the old one until {until}")
        if entry["mode"] == mtasts.ENFORCE and policy.mode != mtasts.ENFORCE:
            out.findings.append(f"policy downgraded from enforce (id {entry['id']}) to "
                                f"{policy.mode}; the enforce policy may be cached until "
                                f"{until}")
        if entry["mode"] in (mtasts.ENFORCE, mtasts.TESTING):
            uncovered = [m for m in current_mx
                         if not any(mtasts.mx_matches(p, m) for p in entry["mx"])]
            if uncovered:
                out.findings.append(f"{', '.join(uncovered)} not in the older policy id "
                                    f"{entry['id']} ({entry['mode']}) senders may cache "
                                    f"until {until}")
    return out


def remember(entries: list, policy, record_id: str | None, now: float) -> list:
    """The history to store: this policy first (seen now), the ones still cached after it."""
    current = {"id": record_id or "", "digest": policy.digest, "mode": policy.mode,
               "max_age": policy.max_age, "mx": list(policy.mx), "seen": int(now)}
    rest = [e for e in entries if _cached_until(e) > now
            and not (e["id"] == current["id"] and e["digest"] == current["digest"])]
    return [current] + sorted(rest, key=lambda e: -e["seen"])[: HISTORY_CAP - 1]


def fetch_problem(fetch: FetchFacts) -> tuple:
    """(state kind, phrase) for a fetch senders would not accept, or () if they would.

    The kind is "unreachable" (no connection, no address lookup answer) or "critical".
    """
    from check_smtp_posture import mtasts

    res = fetch.resolution
    if res is None or not res.addresses:
        target = res.targets[0] if res is not None and res.targets else None
        if target is not None and target.problem == targets.LOOKUP_FAILED:
            return "unreachable", f"policy host {one_line(target.describe_problem(), 120)}"
        why = target.problem if target is not None and target.problem else "no address"
        return "critical", f"policy host {fetch.host}: {why}"
    if fetch.error is not None:
        kind = "unreachable" if fetch.error.kind in ("connect", "timeout") else "critical"
        return kind, f"policy host {fetch.host}[{fetch.address}] {fetch.error.phase}: " \
                     f"{one_line(fetch.error.detail, 100)}"
    response = fetch.response
    bad = [phrase for k, phrase in fetch.cert.findings() if k in PKIX_FAILURES]
    if bad:
        return "critical", f"policy host {fetch.host} certificate {', '.join(bad)}"
    if 300 <= response.status < 400:
        location = one_line(response.header("location") or "nowhere", 80)
        return "critical", f"policy fetch answered {response.status} redirect to {location} " \
                           "(senders do not follow redirects)"
    if response.status != 200:
        return "critical", f"policy fetch answered {response.status} " \
                           f"{one_line(response.reason, 40)}"
    if response.media_type != "text/plain":
        return "critical", f"policy served as {one_line(response.media_type or 'no type', 40)}" \
                           ", not text/plain"
    if response.truncated:
        return "critical", f"policy larger than {mtasts.POLICY_LIMIT // 1024} KiB"
    return ()


# -- contexts ------------------------------------------------------------------------


class FactContext(nagiosplugin.Context):
    """A Context judging the StsFacts with `judge() -> (state, hint)`."""

    def __init__(self, name: str, options: Options):
        super().__init__(name)
        self.options = options

    def evaluate(self, metric, resource):
        state, hint = self.judge(metric.value)
        return self.result_cls(state, hint or None, metric)

    def judge(self, facts: StsFacts):  # pragma: no cover - abstract
        raise NotImplementedError


class StsRecordContext(FactContext):
    """The `_mta-sts` TXT record: missing --missing; failed lookup --unreachable-state;
    several or invalid CRITICAL (senders then apply no policy)."""

    def judge(self, facts):
        sts = facts.sts
        if sts.answer.failed:
            return (states.state(self.options.unreachable_state),
                    f"{sts.name} TXT lookup failed: {_dns_failure(sts.answer)}")
        record = sts.record
        if record.count == 0:
            why = "NXDOMAIN" if sts.answer.status == "NXDOMAIN" else record.problem
            return states.state(self.options.missing), f"no MTA-STS record at {sts.name} " \
                                                       f"({why})"
        if not record.ok:
            return Critical, f"{sts.name}: {one_line(record.problem, 100)} (senders apply " \
                             "no policy)"
        return Ok, ""


class PolicyContext(FactContext):
    """The fetch and the policy: anything a sender would refuse is CRITICAL, an unreachable
    policy host --unreachable-state; mode none and unknown keys are notes."""

    def judge(self, facts):
        fetch = facts.fetch
        if fetch is None:
            return Ok, ""
        problem = fetch_problem(fetch)
        if problem:
            kind, phrase = problem
            state = states.state(self.options.unreachable_state) if kind == "unreachable" \
                else Critical
            return state, phrase
        policy = fetch.policy
        if not policy.valid:
            listed = "; ".join(capped(list(policy.problems), 2))
            return Critical, f"policy invalid: {one_line(listed, 160)}"
        notes = []
        if policy.mode == "none":
            notes.append("mode none: senders apply no policy")
        if policy.unknown_keys:
            notes.append("unknown policy keys ignored: "
                         + one_line(", ".join(policy.unknown_keys), 80))
        return Ok, "; ".join(notes)


class CoverageContext(FactContext):
    """Every live MX named by a policy pattern with a valid STARTTLS certificate:
    enforce CRITICAL, testing WARNING, none a note; an MX not reached --unreachable-state."""

    def judge(self, facts):
        policy = facts.usable_policy
        if policy is None:
            return Ok, ""
        unreachable = [(mx, e) for mx in facts.mx for e in mx.unreachable]
        hints = []
        for mx in facts.mx:
            if mx.pattern is None:
                hints.append(f"{mx.name} not covered by the policy")
                continue
            for e in mx.invalid:
                hints.append(f"{e.endpoint.label} {e.problem}")
        state = {"enforce": Critical, "testing": Warn}.get(policy.mode, Ok)
        if hints:
            text = "; ".join(capped(hints, 2))
            if state == Ok:
                return Ok, f"{text} (not enforced)"
            return state, f"{policy.mode} policy: {text}"
        if unreachable:
            mx, e = unreachable[0]
            more = f" (+{len(unreachable) - 1} more)" if len(unreachable) > 1 else ""
            failure = e.session.failure
            return (states.failure_state(failure.kind, self.options.unreachable_state),
                    f"{e.endpoint.label} {failure.phase}: {one_line(failure.detail, 80)}{more}")
        return Ok, ""


class TlsRptContext(FactContext):
    """TLS-RPT: absent a note; several records, a bad rua, a mailto domain without MX
    WARNING (reports get lost, mail does not); failed lookup --unreachable-state."""

    def judge(self, facts):
        rpt = facts.tlsrpt
        answer = rpt.records.answer
        name = rpt.records.name
        if answer.failed:
            return (states.state(self.options.unreachable_state),
                    f"{name} TXT lookup failed: {_dns_failure(answer)}")
        record = rpt.records.record
        if record.count == 0:
            return Ok, "no TLS-RPT record"
        if not record.ok:
            return Warn, f"TLS-RPT {name}: {one_line(record.problem, 100)}"
        bad = [f"{one_line(u.uri, 60) or 'empty'}: {u.problem}" for u in rpt.uris if u.problem]
        for domain, res in sorted(rpt.mailto_mx.items()):
            if res.kind in (targets.MX, targets.IMPLICIT):
                continue
            if res.kind == targets.FAILED:
                continue  # undecided: said in the long output
            bad.append(f"report domain {domain} takes no mail ({_mx_kind(res)})")
        if bad:
            return Warn, "TLS-RPT rua " + "; ".join(capped(bad, 2))
        return Ok, ""


class DaneContext(FactContext):
    """TLSA records at an MX: a note (RFC 8461 §2: senders doing both apply DANE)."""

    def judge(self, facts):
        with_tlsa = [mx.name for mx in facts.mx if mx.tlsa]
        if not with_tlsa:
            return Ok, ""
        return Ok, f"DANE TLSA at {', '.join(capped(with_tlsa, 2))} (takes precedence over " \
                   "MTA-STS)"


class HistoryContext(FactContext):
    """--state-file findings: each WARNING, until the date it names."""

    def judge(self, facts):
        findings = facts.history.findings
        if findings:
            return Warn, "; ".join(capped(findings, 2))
        return Ok, ""


def _dns_failure(answer) -> str:
    return one_line(answer.status + (f" ({answer.detail})" if answer.detail else ""), 80)


def _mx_kind(res: targets.Resolution) -> str:
    return {targets.NULL: "null MX", targets.NXDOMAIN: "NXDOMAIN",
            targets.NO_MAIL_HOST: "no MX, no address"}.get(res.kind, res.kind)


# -- summary ---------------------------------------------------------------------------


class StsSummary(FamilySummary):
    def __init__(self, resource: MtaSts):
        super().__init__(resource.options.verbose)
        self.resource = resource

    def headline(self, results):
        facts = self.resource.facts
        policy = facts.usable_policy
        if policy is None:
            return f"{facts.domain}: no MTA-STS policy" if facts.fetch is None else ""
        covered = sum(m.covered for m in facts.mx)
        return (f"{facts.domain}: policy id {facts.sts.record.get('id')} mode {policy.mode}, "
                f"{covered} of {len(facts.mx)} MX covered, max_age "
                f"{policy.max_age}s, fetched in {facts.fetch.elapsed:.3f}s")

    def details(self, results):
        opts = self.resource.options
        facts = self.resource.facts
        lines = []
        if opts.helo_note:
            lines.append(f"note: {opts.helo_note}")
        lines.extend(describe(facts, self.verbosity))
        return lines


def describe(facts: StsFacts, verbosity: int) -> list:
    """The long output: the record, the fetch, the policy, each MX, TLS-RPT, history."""
    lines = []
    sts = facts.sts
    if sts.record is not None and sts.record.text:
        lines.append(f"{sts.name} TXT: {one_line(sts.record.text, 200)}")
    fetch = facts.fetch
    if fetch is not None:
        lines.extend(_describe_fetch(fetch, verbosity))
    for mx in facts.mx:
        pattern = f"covered by {mx.pattern}" if mx.pattern else "not covered"
        dane = f", {mx.tlsa} TLSA records" if mx.tlsa else ""
        lines.append(f"MX {mx.target.preference} {mx.name}: {pattern}{dane}")
        for e in mx.endpoints:
            lines.append(f"  {e.endpoint.address}: " + _describe_endpoint(e))
            if verbosity >= 3:
                lines.extend("    " + line for line in e.session.transcript.lines())
    rpt = facts.tlsrpt
    if rpt.records.record is not None and rpt.records.record.text:
        lines.append(f"{rpt.records.name} TXT: {one_line(rpt.records.record.text, 200)}")
    for domain, res in sorted(rpt.mailto_mx.items()):
        lines.append(f"  report domain {domain}: {_mx_kind(res)}"
                     + (f" ({one_line(res.detail, 80)})" if res.detail else ""))
    for note in facts.history.notes:
        lines.append(f"history: {note}")
    return lines


def _describe_fetch(fetch: FetchFacts, verbosity: int) -> list:
    lines = []
    where = f" from {fetch.address}" if fetch.address else ""
    response = fetch.response
    if response is None:
        return [f"policy {fetch.url}{where}: not fetched"]
    kind = response.header("content-type") or "no Content-Type"
    size = f"{len(response.body)}{'+' if response.truncated else ''} bytes"
    lines.append(f"policy {fetch.url}{where}: {response.status} "
                 f"{one_line(response.reason, 40)}, {one_line(kind, 60)}, {size}, "
                 f"{response.tls.describe() if response.tls else 'no TLS'}")
    cert = fetch.cert
    if cert is not None and not cert.error:
        lines.append(f"  certificate {one_line(cert.subject, 80)}, issuer "
                     f"{one_line(cert.issuer, 80)}, valid until {cert.not_after:%Y-%m-%d}"
                     + ("" if not cert.problems() else f": {', '.join(cert.problems())}"))
    policy = fetch.policy
    if policy is not None:
        lines.append(f"  policy: version {policy.version}, mode {policy.mode}, max_age "
                     f"{policy.max_age}, mx {', '.join(policy.mx) or 'none'}, "
                     f"{policy.line_ending} line endings")
        for problem in policy.problems:
            lines.append(f"  policy problem: {problem}")
    if verbosity >= 3:
        lines.extend(f"  < {one_line(k, 40)}: {one_line(v, 100)}" for k, v in response.headers)
    return lines


def _describe_endpoint(e: EndpointTls) -> str:
    session = e.session
    if session.tls is None:
        return e.problem or "no TLS"
    cert = e.cert
    text = f"STARTTLS {session.tls.describe()}"
    if cert is not None and not cert.error:
        text += f", certificate {one_line(cert.subject, 60)}, valid until " \
                f"{cert.not_after:%Y-%m-%d}"
    problem = e.problem
    return text + (f": {problem}" if problem else ", valid for the MX name")


# -- main ----------------------------------------------------------------------------


def build_check(options: Options, deadline: Deadline) -> nagiosplugin.Check:
    resource = MtaSts(options, deadline)
    return runner.new_check(
        resource,
        MxContext(unreachable=options.unreachable_state),
        StsRecordContext("sts_record", options),
        PolicyContext("policy", options),
        CoverageContext("coverage", options),
        TlsRptContext("tlsrpt", options),
        DaneContext("dane", options),
        HistoryContext("history", options),
        StateFileContext(),
        TimeContext("time", warning=options.warning, critical=options.critical),
        StsSummary(resource),
        name=NAME)


def main(argv=None) -> int:
    return runner.plugin_main(argv, build_parser, options_from, build_check)


def console_main() -> None:
    runner.console(main)


if __name__ == "__main__":
    console_main()
