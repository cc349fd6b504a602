"""check_open_relay: does any MX endpoint relay mail for strangers, and does each
accept what RFC 5321 says it must (the null sender, postmaster)?

Every probe is a mail transaction that stops at RCPT: MAIL FROM, RCPT TO (when
MAIL was accepted), RSET. DATA and BDAT are never sent; each connection ends
with QUIT. A server that offers PIPELINING gets the probes' commands in groups
(RFC 2920), unless --no-pipelining: one round trip for them all instead of
three per probe. Probe (OpenRelay.probe) runs them and yields facts; the Contexts
judge; RelaySummary phrases.
"""

from __future__ import annotations

import fnmatch
from collections import namedtuple
from dataclasses import dataclass

import nagiosplugin

from check_smtp_posture import targets
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.fanout import each_endpoint
from check_smtp_posture.nagios import cli, perfdata, runner, states
from check_smtp_posture.nagios.contexts import (
    MxContext,
    OptionsContext,
    TimeContext,
    per_endpoint_contexts,
    reply_state,
)
from check_smtp_posture.nagios.summary import HINT_CAP, ResourceSummary, capped
from check_smtp_posture.sanitize import one_line
from check_smtp_posture.smtp.address import path
from check_smtp_posture.smtp.session import (
    STARTTLS_AUTO,
    STARTTLS_NEVER,
    Probe,
    ProbeResult,
    SessionPlan,
    SessionResult,
    run_probes,
)

NAME = "OPEN_RELAY"
DEFAULT_EXTERNAL_FROM = "relay-probe@example.org"
DEFAULT_EXTERNAL_RCPT = "relay-probe@example.net"
#: the "external host" of the IP-literal probe: TEST-NET-1 (RFC 5737), nobody's server
EXTERNAL_IP = "192.0.2.1"
DEFAULT_TIMEOUT = 30.0

#: relay probe forms: name -> recipient, from the external recipient's local part
#: and domain and the tested mail domain; each is sent with the external sender
#: and again with the null sender ("<name>/null")
RELAY_FORMS = {
    "plain": "{local}@{ext}",
    "percent-hack": "{local}%{ext}@{domain}",
    "source-route": "@{domain}:{local}@{ext}",
    "bang-path": "{ext}!{local}@{domain}",
    "quoted": '"{local}@{ext}"@{domain}',
    "double-at": "{local}@{ext}@{domain}",
    "ip-literal": "{local}@[" + EXTERNAL_IP + "]",
    "unqualified": "{local}",
}
NULL_SUFFIX = "/null"

# what a probe's reply means
RELAYED, REFUSED, INCONCLUSIVE, UNTESTED = "accepted", "refused", "inconclusive", "untested"


# -- configuration ---------------------------------------------------------------


class Options(namedtuple("Options", cli.CommonOptions._fields + (
        "domain", "hostname", "port",
        "plan",  # smtp.session.SessionPlan
        "relay_probes",  # frozenset: names of the relay probes in plan.probes
        "allow_open_relay", "transient_state"))):
    """What the run was asked to do, parsed and checked (cli.CommonOptions first)."""

    __slots__ = ()


def build_parser() -> cli.PluginArgumentParser:
    parser = cli.PluginArgumentParser(
        prog="check_open_relay",
        description="Probe every MX endpoint of a mail domain for open relaying (plain, "
                    "percent hack, source route, bang path, quoted, double @, IP literal, "
                    "unqualified; with an external and the null sender) and check that each "
                    "accepts the null sender and postmaster. Stops at RCPT, never sends DATA.")
    target = parser.add_argument_group("target")
    target.add_argument("-D", "--domain", type=cli.domain_name,
                        help="mail domain: probe every address of every MX (required)")
    target.add_argument("-H", "--hostname", type=cli.host_or_address,
                        help="probe this host instead of the MX of --domain")
    target.add_argument("-p", "--port", type=cli.port_number, default=25,
                        help="TCP port (default: 25)")
    cli.add_concurrency_option(target, "endpoints probed (and DNS queries asked)")
    cli.add_family_options(target)
    cli.add_dns_options(target)

    smtp = parser.add_argument_group("probes")
    cli.add_helo_option(smtp)
    smtp.add_argument("--no-starttls", action="store_true",
                      help="probe in clear text even when STARTTLS is offered")
    smtp.add_argument("--no-pipelining", action="store_true",
                      help="send each command after the reply to the one before (lock step), "
                           "even when the server offers PIPELINING (RFC 2920)")
    smtp.add_argument("--external-from", type=cli.sender_address,
                      default=DEFAULT_EXTERNAL_FROM, metavar="ADDR",
                      help=f"sender from outside the domain (default: {DEFAULT_EXTERNAL_FROM})")
    smtp.add_argument("--external-rcpt", type=cli.recipient_address,
                      default=DEFAULT_EXTERNAL_RCPT, metavar="ADDR",
                      help="recipient outside the domain that a relay would deliver to "
                           f"(default: {DEFAULT_EXTERNAL_RCPT})")
    smtp.add_argument("--probe", dest="probes", action="append", default=[],
                      metavar="NAME",
                      help="run only the relay probes matching NAME (shell pattern, "
                           "repeatable), e.g. percent-hack or '*/null'")
    smtp.add_argument("--rcpt", action="append", default=[], type=cli.recipient_address,
                      metavar="ADDR",
                      help="a real mailbox that must accept mail from --external-from "
                           "(repeatable)")
    smtp.add_argument("--no-null-sender", action="store_true",
                      help="do not require the null sender <> to be accepted")
    smtp.add_argument("--no-postmaster", action="store_true",
                      help="do not require postmaster@DOMAIN to be accepted")

    limits = parser.add_argument_group("thresholds and states")
    limits.add_argument("--allow-open-relay", action="store_true",
                        help="an accepted relay probe is OK, with a note (relaying is "
                             "intended)")
    cli.add_transient_option(limits, "a probe answered 4xx (greylisting: inconclusive)")
    cli.add_threshold_options(limits, what="the time of each endpoint, in seconds")
    cli.add_unreachable_option(limits)
    cli.add_perfdata_option(limits)
    cli.add_common_options(limits, timeout=DEFAULT_TIMEOUT)
    return parser


def relay_probes(domain: str, external_from: str, external_rcpt: str) -> list[Probe]:
    """Every relay probe, in RELAY_FORMS order, each with the external then the null sender."""
    local, _, ext = external_rcpt.rpartition("@")
    probes = []
    for sender, suffix in ((external_from, ""), ("", NULL_SUFFIX)):
        for name, form in RELAY_FORMS.items():
            recipient = form.format(local=local, ext=ext, domain=domain)
            probes.append(Probe(name + suffix, sender, recipient))
    return probes


def acceptance_probes(args) -> list[Probe]:
    """What every MX must accept: <> and postmaster (RFC 5321 §4.5.5, §4.5.1), --rcpt."""
    probes = []
    null_sender = "" if not args.no_null_sender else args.external_from
    if not args.no_postmaster:
        probes.append(Probe("postmaster", null_sender, f"postmaster@{args.domain}"))
    elif not args.no_null_sender:
        # the null sender alone: to a --rcpt mailbox if there is one, else no recipient
        # at all (MAIL FROM:<> and its reply): no mailbox is known to take mail
        probes.append(Probe("null-sender", "", args.rcpt[0] if args.rcpt else None))
    for mailbox in args.rcpt:
        probes.append(Probe(f"rcpt {mailbox}", args.external_from, mailbox))
    return probes


def options_from(args) -> Options | str:
    """Options from parsed arguments, or a usage error message."""
    if not args.domain:
        return "-D/--domain is required (with -H, the domain the probes address)"
    if "@" not in args.external_rcpt:
        return "--external-rcpt needs a domain: local@domain"
    relay = relay_probes(args.domain, args.external_from, args.external_rcpt)
    if args.probes:
        unmatched = [p for p in args.probes
                     if not any(fnmatch.fnmatchcase(probe.name, p) for probe in relay)]
        if unmatched:
            names = ", ".join(dict.fromkeys(p.name.removesuffix(NULL_SUFFIX) for p in relay))
            return f"--probe {unmatched[0]!r} matches no probe; probes: {names} (each also " \
                   f"as NAME{NULL_SUFFIX})"
        relay = [p for p in relay if any(fnmatch.fnmatchcase(p.name, pat) for pat in args.probes)]
    common = cli.common_options(args, default_helo=True)
    probes = acceptance_probes(args) + relay  # acceptance first: before error limits bite
    plan = SessionPlan(helo_name=common.helo_name,
                       starttls=STARTTLS_NEVER if args.no_starttls else STARTTLS_AUTO,
                       probes=tuple(probes), pipelining=not args.no_pipelining)
    return Options(
        *common, domain=args.domain, hostname=args.hostname, port=args.port, plan=plan,
        relay_probes=frozenset(p.name for p in relay), allow_open_relay=args.allow_open_relay,
        transient_state=args.transient_state)


# -- probe -------------------------------------------------------------------------


def classify(outcome: ProbeResult) -> str:
    """What a probe's deciding reply says: accepted, refused, inconclusive or untested."""
    reply = outcome.verdict
    if reply is None or not outcome.answered:
        return UNTESTED
    if reply.positive:
        return RELAYED
    return INCONCLUSIVE if reply.transient else REFUSED


@dataclass(frozen=True)
class EndpointProbes:
    """Everything one endpoint answered, over one or more connections."""

    endpoint: targets.Endpoint
    sessions: tuple  # SessionResult per connection, in order

    @property
    def outcomes(self) -> list[ProbeResult]:
        """The deciding outcome of each probe: the last attempt of it."""
        latest: dict[str, ProbeResult] = {}
        for session in self.sessions:
            for outcome in session.probe_results:
                latest[outcome.probe.name] = outcome
        return list(latest.values())

    @property
    def last(self) -> SessionResult:
        return self.sessions[-1]

    @property
    def time(self) -> float:
        return sum(s.times.get("total", 0.0) for s in self.sessions)

    def untested(self, plan: SessionPlan) -> list[Probe]:
        answered = {o.probe.name for o in self.outcomes if o.answered}
        return [p for p in plan.probes if p.name not in answered]


class OpenRelay(nagiosplugin.Resource):
    def __init__(self, options: Options, deadline: Deadline):
        self.options = options
        self.deadline = deadline
        self.resolution: targets.Resolution | None = None
        self.results: list[EndpointProbes] = []
        self.worst: dict = {}  # metric name -> perfdata.Worst, in a run over several endpoints

    def probe(self):
        opts = self.options
        self.resolution = targets.resolve_target(
            opts.hostname, opts.domain, lambda: cli.dns_client(opts, self.deadline),
            family=opts.family, concurrency=opts.concurrency)
        yield nagiosplugin.Metric("mx", self.resolution, context="mx")
        endpoints = self.resolution.endpoints(opts.port, None)
        if not endpoints:
            return

        def probe_endpoint(endpoint, deadline):
            return EndpointProbes(endpoint, tuple(run_probes(endpoint, opts.plan, deadline)))

        self.results = each_endpoint(endpoints, probe_endpoint, self.deadline, opts.concurrency)
        several = opts.hostname is None or len(endpoints) > 1
        keys = perfdata.endpoint_keys(result.endpoint for result in self.results)
        values = []
        for key, result in zip(keys, self.results):
            key = key if several else ""
            yield nagiosplugin.Metric(perfdata.label(key, "session"), result, context="session")
            yield nagiosplugin.Metric(perfdata.label(key, "relay"), result, context="relay")
            yield nagiosplugin.Metric(perfdata.label(key, "acceptance"), result,
                                      context="acceptance")
            values.append(measured(result, opts))
        yield from perfdata.run_metrics(
            [result.endpoint.label for result in self.results], values, MEASURES,
            worst=self.worst if several else {},
            oks=[not result.untested(opts.plan) and not row["relay_accepted"]
                 for result, row in zip(self.results, values)] if several else None,
            keys=keys if opts.perfdata_per_endpoint else None)


#: what check_open_relay counts at each endpoint, and the run's worst: the most relay
#: probes accepted (and inconclusive), the fewest refused, the probes sent, the slowest
#: endpoint's time (-w/-c)
MEASURES = (
    perfdata.Measure("relay_accepted", perfdata.slowest, min=0),
    perfdata.Measure("relay_refused", perfdata.lowest, min=0),
    perfdata.Measure("relay_inconclusive", perfdata.slowest, min=0),
    perfdata.Measure("probes", perfdata.slowest, min=0),
    perfdata.Measure("time", perfdata.slowest, "time", "s", 0))


def measured(result: EndpointProbes, opts: Options) -> dict:
    """One endpoint's values of MEASURES."""
    verdicts = [classify(o) for o in result.outcomes if o.probe.name in opts.relay_probes]
    return {"relay_accepted": verdicts.count(RELAYED), "relay_refused": verdicts.count(REFUSED),
            "relay_inconclusive": verdicts.count(INCONCLUSIVE),
            "probes": len(opts.plan.probes), "time": round(result.time, 6)}


# -- contexts ------------------------------------------------------------------------


def _path_line(outcome: ProbeResult) -> str:
    probe = outcome.probe
    mail = f"MAIL FROM:{path(probe.sender)}"
    return mail if probe.recipient is None else f"{mail} RCPT TO:{path(probe.recipient)}"


class SessionContext(OptionsContext):
    """Could the endpoint be probed at all: connection, banner, EHLO, STARTTLS."""

    context_name = "session"

    def evaluate(self, metric, resource):
        result: EndpointProbes = metric.value
        last = result.last
        where = result.endpoint.label
        untested = result.untested(self.options.plan)
        if last.failure is not None:
            exc = last.failure
            if not untested and exc.kind == "closed":
                return self.result_cls(nagiosplugin.Ok, "", metric)  # hung up after the last
            left = f" ({len(untested)} probes untested)" if untested else ""
            return self.result_cls(states.failure_state(exc.kind, self.options.unreachable_state),
                                   f"{where} {exc.phase}: {one_line(exc.detail)}{left}", metric)
        if last.stopped is not None:
            reply = last.replies.get(last.stopped)
            return self.result_cls(reply_state(reply, self.options.transient_state),
                                   f"{where} {last.stopped}: {one_line(str(reply))}", metric)
        if untested:  # the server hung up on a connection that answered nothing
            closing = last.closed_by_server  # a 421, transient; a bare hang-up is not
            state = reply_state(closing, self.options.transient_state) if closing \
                else nagiosplugin.Critical
            why = one_line(str(closing)) if closing else "connection closed"
            return self.result_cls(state, f"{where}: {len(untested)} probes untested, {why}",
                                   metric)
        return self.result_cls(nagiosplugin.Ok, "", metric)


class RelayContext(OptionsContext):
    """Accepted relay probes: CRITICAL (OK with --allow-open-relay); 4xx: inconclusive."""

    context_name = "relay"

    def evaluate(self, metric, resource):
        result: EndpointProbes = metric.value
        where = result.endpoint.label
        relay = [o for o in result.outcomes if o.probe.name in self.options.relay_probes]
        accepted = [o for o in relay if classify(o) == RELAYED]
        if accepted and not self.options.allow_open_relay:
            first = accepted[0]
            return self.result_cls(
                nagiosplugin.Critical,
                f"{where} open relay: {len(accepted)} of {len(relay)} relay probes accepted: "
                f"{_listed(accepted)}; RCPT TO:<{one_line(first.probe.recipient, 60)}>: "
                f"{one_line(str(first.verdict), 40)}", metric)
        inconclusive = [o for o in relay if classify(o) == INCONCLUSIVE]
        state, hints = nagiosplugin.Ok, []
        if inconclusive:
            first = inconclusive[0]
            state = states.state(self.options.transient_state)
            hints.append(f"{where} {len(inconclusive)} relay probes inconclusive "
                         f"({first.probe.name}: {one_line(str(first.verdict), 60)})")
        if accepted:  # and allowed: relaying is intended
            hints.append(f"{where} relays ({_listed(accepted)}): allowed by "
                         "--allow-open-relay")
        return self.result_cls(state, "; ".join(hints), metric)


def _listed(outcomes: list) -> str:
    names = capped([o.probe.name for o in outcomes])
    more = names.pop() if len(outcomes) > HINT_CAP else ""  # "(+N more)", after no comma
    return " ".join(filter(None, (", ".join(names), more)))


class AcceptanceContext(OptionsContext):
    """The null sender, postmaster and every --rcpt must be accepted."""

    context_name = "acceptance"

    def evaluate(self, metric, resource):
        result: EndpointProbes = metric.value
        where = result.endpoint.label
        worst, hints = nagiosplugin.Ok, []
        for outcome in result.outcomes:
            if outcome.probe.name in self.options.relay_probes:
                continue
            kind = classify(outcome)
            if kind in (RELAYED, UNTESTED):
                continue
            state = reply_state(outcome.verdict, self.options.transient_state)
            worst = max(worst, state)
            hints.append(f"{_acceptance_phrase(outcome)} {one_line(str(outcome.verdict), 60)}")
        if not hints:
            return self.result_cls(nagiosplugin.Ok, "", metric)
        return self.result_cls(worst, f"{where} refuses " + "; ".join(hints), metric)


def _acceptance_phrase(outcome: ProbeResult) -> str:
    probe = outcome.probe
    sender = "the null sender" if probe.sender == "" else f"<{probe.sender}>"
    if outcome.mail is not None and not outcome.mail.positive:
        return f"{sender}:"
    return f"{sender} to <{probe.recipient}>:"


# -- summary ---------------------------------------------------------------------------


class RelaySummary(ResourceSummary):
    def headline(self, results):
        res = self.resource.results
        if not res:
            return ""
        opts = self.resource.options
        # what each endpoint answered: an OK run may hold relaying allowed by
        # --allow-open-relay and 4xx judged OK by --transient-state, neither refused
        kinds = [{o.probe.name: classify(o) for o in r.outcomes} for r in res]
        relay = len(opts.relay_probes)
        refused = sorted({sum(k.get(n) == REFUSED for n in opts.relay_probes) for k in kinds})
        counted = f"{relay}" if refused == [relay] else \
            "-".join(str(n) for n in sorted({refused[0], refused[-1]})) + f" of {relay}"
        accepted = [p.name for p in opts.plan.probes if p.name not in opts.relay_probes
                    and all(k.get(p.name) == RELAYED for k in kinds)]
        tail = f", {_accepted_phrase(accepted)} accepted" if accepted else ""
        if len(res) == 1:
            return (f"{res[0].endpoint.label}: {counted} relay probes refused{tail}, "
                    f"{res[0].time:.3f}s")
        slowest = max(res, key=lambda r: r.time)
        return (f"{len(res)} endpoints of {self.resource.resolution.what}: {counted} relay "
                f"probes refused each{tail}, slowest {slowest.endpoint.label} "
                f"{slowest.time:.3f}s")

    def details(self, results):
        lines = []
        if self.resource.options.helo_note:
            lines.append(f"note: {self.resource.options.helo_note}")
        for result in self.resource.results:
            lines.extend(describe_endpoint(result, self.resource.options, self.verbosity))
        return lines


def _accepted_phrase(names: list[str]) -> str:
    words = {"postmaster": "<> to postmaster", "null-sender": "<>"}
    return ", ".join(words.get(n, n.removeprefix("rcpt ")) for n in names)


def describe_endpoint(result: EndpointProbes, options: Options, verbosity: int) -> list[str]:
    """Long output of one endpoint: a line per probe with the path sent and the reply."""
    first = result.sessions[0]
    tls = f", {first.tls.version}" if first.tls is not None else \
        (", no TLS" if first.extensions is not None else "")
    lines = [f"{result.endpoint.label} port {result.endpoint.port}: "
             f"{len(result.sessions)} connection(s){tls}, {result.time:.3f}s"]
    for session in result.sessions:
        for outcome in session.probe_results:
            reply = outcome.verdict
            kind = classify(outcome)
            answer = one_line(str(reply), 80) if reply else "no reply"
            lines.append(f"  {kind:<12} {outcome.probe.name:<18} "
                         f"{one_line(_path_line(outcome), 90)}: {answer}")
        if session is not result.last:
            why = one_line(str(session.closed_by_server)) if session.closed_by_server \
                else one_line(session.failure.detail) if session.failure else "closed"
            lines.append(f"  the server closed connection {session.probe_results[-1].connection}"
                         f" ({why}); reconnected for the rest")
    for probe in result.untested(options.plan):
        lines.append(f"  {UNTESTED:<12} {probe.name}")
    if verbosity >= 3:
        for number, session in enumerate(result.sessions, 1):
            lines.append(f"  transcript of connection {number}:")
            lines.extend("    " + line for line in session.transcript.lines())
    return lines


# -- main ----------------------------------------------------------------------------


def build_check(options: Options, deadline: Deadline) -> nagiosplugin.Check:
    resource = OpenRelay(options, deadline)
    timing = TimeContext("time", warning=options.warning, critical=options.critical)
    return runner.new_check(
        resource,
        MxContext(unreachable=options.unreachable_state),
        SessionContext(options),
        RelayContext(options),
        AcceptanceContext(options),
        timing,
        *per_endpoint_contexts([timing]),
        RelaySummary(resource),
        name=NAME)


main, console_main = runner.entry_points(build_parser, options_from, build_check)


if __name__ == "__main__":
    console_main()
