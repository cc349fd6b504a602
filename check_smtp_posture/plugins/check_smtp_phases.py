"""check_smtp_phases: the SMTP dialogue of one host, or of every MX endpoint of a
domain, with every phase timed, STARTTLS/implicit TLS and certificate facts.

Probe (SmtpPhases.probe) runs the sessions and yields facts; the Contexts
below turn facts into states according to the options; PhasesSummary phrases.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from dataclasses import dataclass

import nagiosplugin

from check_smtp_posture import cli, runner
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.sanitize import one_line
from check_smtp_posture.smtp.dialogue import PHASES
from check_smtp_posture.smtp.session import (
    STARTTLS_AUTO,
    STARTTLS_NEVER,
    Endpoint,
    SaslCredentials,
    SessionPlan,
    SessionResult,
    run_session,
)

TIMED_PHASES = PHASES  # every phase the dialogue times, each with a <phase>_time label
PASSWORD_ENV = "CHECK_SMTP_PASSWORD"
DEFAULT_MESSAGE = ("Subject: check_smtp_phases probe\r\n"
                   "X-Mailer: check_smtp_posture\r\n\r\n"
                   "Probe message of check_smtp_phases.\r\n")
STATES = {"ok": nagiosplugin.Ok, "warning": nagiosplugin.Warn,
          "critical": nagiosplugin.Critical, "unknown": nagiosplugin.Unknown}
EXIT_STATES = {"ok": 0, "warning": 1, "critical": 2, "unknown": 3}


# -- configuration ---------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What the run was asked to do, parsed and checked."""

    hostname: str | None
    domain: str | None
    port: int
    servername: str | None
    family: int | None
    dns_servers: tuple | None
    concurrency: int
    plan: SessionPlan
    expect: str | None
    responses: tuple[str, ...]
    require_starttls: bool
    ca_file: str | None
    cert_warn_days: float
    cert_crit_days: float
    cert_error_state: str
    transient_state: str
    unreachable_state: str
    ignore_quit_failure: bool
    warning: str | None
    critical: str | None
    phase_thresholds: dict
    verbose: int
    timeout: float


def build_parser() -> cli.PluginArgumentParser:
    parser = cli.PluginArgumentParser(
        prog="check_smtp_phases",
        description="Check an SMTP server, or every MX endpoint of a mail domain, phase by "
                    "phase: banner, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, QUIT, with TLS "
                    "and certificate findings.")
    target = parser.add_argument_group("target")
    which = target.add_mutually_exclusive_group()
    which.add_argument("-H", "--hostname", help="host name or address of the SMTP server")
    which.add_argument("-D", "--domain", help="mail domain: check every address of every MX")
    target.add_argument("-p", "--port", type=cli.port_number,
                        help="TCP port (default: 25, or 465 with --tls)")
    target.add_argument("--servername", metavar="NAME",
                        help="name for SNI and the certificate check (default: the host or MX "
                             "name)")
    target.add_argument("--concurrency", type=cli.whole_number(1), default=8, metavar="N",
                        help="endpoints probed at once with -D (default: 8)")
    cli.add_family_options(target)
    cli.add_dns_options(target)

    smtp = parser.add_argument_group("SMTP dialogue")
    smtp.add_argument("--helo-name", default=None, metavar="NAME",
                      help="name to announce in EHLO/HELO (default: this host's name)")
    smtp.add_argument("--from", dest="mail_from", metavar="ADDR",
                      help="envelope sender for MAIL FROM ('' for the null sender)")
    smtp.add_argument("--to", dest="rcpt_to", action="append", default=[], metavar="ADDR",
                      help="envelope recipient for RCPT TO (repeatable); without --send-data "
                           "the transaction ends with RSET and nothing is delivered")
    smtp.add_argument("--send-data", action="store_true",
                      help="send DATA and the payload: a message IS delivered")
    payload = smtp.add_mutually_exclusive_group()
    payload.add_argument("--payload", metavar="TEXT",
                         help="message sent with --send-data (\\n becomes CRLF)")
    payload.add_argument("--payload-file", metavar="FILE",
                         help="read the message sent with --send-data from FILE")
    smtp.add_argument("--expect", metavar="TEXT",
                      help="text the banner must contain")
    smtp.add_argument("--command", dest="commands", action="append", default=[],
                      metavar="CMD", help="extra command sent after EHLO/AUTH (repeatable)")
    smtp.add_argument("--response", dest="responses", action="append", default=[],
                      metavar="TEXT", help="text the reply to the matching --command must "
                                           "include (one per --command, in order)")
    smtp.add_argument("--ignore-quit-failure", action="store_true",
                      help="a failed QUIT does not change the state")

    tls = parser.add_argument_group("TLS")
    mode = tls.add_mutually_exclusive_group()
    mode.add_argument("--no-starttls", action="store_true",
                      help="do not use STARTTLS even when offered")
    mode.add_argument("--require-starttls", action="store_true",
                      help="CRITICAL when STARTTLS is not offered")
    mode.add_argument("--tls", action="store_true",
                      help="implicit TLS from the first byte (SMTPS, default port 465)")
    tls.add_argument("--ca-file", metavar="FILE",
                     help="PEM bundle of trusted CAs (default: the system trust store)")
    tls.add_argument("--cert-days", default="30,14", metavar="WARN,CRIT",
                     help="days of certificate validity left below which to warn / go "
                          "critical (default: 30,14)")
    tls.add_argument("--cert-error-state", choices=sorted(STATES), default="warning",
                     help="state for an untrusted chain or a name mismatch (default: warning)")

    sasl = parser.add_argument_group("SASL authentication")
    sasl.add_argument("--sasl-mechanism", type=str.upper,
                      choices=("PLAIN", "LOGIN", "CRAM-MD5"),
                      help="authenticate with this mechanism (default with --sasl-user: PLAIN)")
    sasl.add_argument("--sasl-user", metavar="USER", help="authentication identity")
    sasl.add_argument("--sasl-authzid", default="", metavar="ID",
                      help="authorization identity (PLAIN only)")
    sasl.add_argument("--sasl-password-file", metavar="FILE",
                      help=f"read the password from FILE (else from ${PASSWORD_ENV})")

    proxy = parser.add_argument_group("PROXY protocol")
    proxy.add_argument("--proxy-protocol", type=int, choices=(1, 2), metavar="VERSION",
                       help="send a PROXY protocol header (version 1 or 2) before SMTP")
    proxy.add_argument("--proxy-family", choices=("TCP4", "TCP6"), default=None,
                       help="family in the PROXY header (default: TCP4)")
    proxy.add_argument("--proxy-source-address", metavar="ADDR",
                       help="source address in the PROXY header (default: the connection's)")
    proxy.add_argument("--proxy-dest-address", metavar="ADDR",
                       help="destination address in the PROXY header (default: the "
                            "connection's)")
    proxy.add_argument("--proxy-source-port", type=cli.port_number, metavar="PORT",
                       help="source port in the PROXY header (default: the connection's)")
    proxy.add_argument("--proxy-dest-port", type=cli.port_number, metavar="PORT",
                       help="destination port in the PROXY header (default: the target "
                            "port)")

    limits = parser.add_argument_group("thresholds and states")
    cli.add_threshold_options(limits, what="the total time of each endpoint, in seconds")
    limits.add_argument("--phase-threshold", action="append", default=[],
                        metavar="PHASE=WARN[,CRIT]",
                        help="ranges for one phase's time, e.g. banner=2,5 (repeatable)")
    limits.add_argument("--transient-state", choices=sorted(STATES), default="warning",
                        help="state for a 4xx reply where 2xx was expected (default: warning)")
    limits.add_argument("--unreachable-state", choices=sorted(STATES), default="critical",
                        help="state for refused, unreachable, timed out, DNS failure "
                             "(default: critical)")
    cli.add_common_options(limits)
    return parser


def options_from(args, parser) -> Options | str:
    """Options from parsed arguments, or a usage error message."""
    if not args.hostname and not args.domain:
        return "one of -H/--hostname or -D/--domain is required"
    if args.send_data and not args.rcpt_to:
        return "--send-data needs at least one --to"
    if (args.payload or args.payload_file) and not args.send_data:
        return "--payload/--payload-file need --send-data"
    if args.responses and len(args.responses) != len(args.commands):
        return "give one --response per --command"
    proxy_opts = (args.proxy_family, args.proxy_source_address, args.proxy_dest_address,
                  args.proxy_source_port, args.proxy_dest_port)
    if any(v is not None for v in proxy_opts) and not args.proxy_protocol:
        return "PROXY header options need --proxy-protocol"
    try:
        warn_days, crit_days = (float(x) for x in args.cert_days.split(","))
    except ValueError:
        return f"--cert-days takes WARN,CRIT in days, not {args.cert_days!r}"
    if crit_days > warn_days:
        return "--cert-days: the critical number of days must not exceed the warning one"
    thresholds = {}
    for item in args.phase_threshold:
        phase, _, ranges = item.partition("=")
        if phase not in TIMED_PHASES or not ranges:
            return (f"--phase-threshold {item!r}: want PHASE=WARN[,CRIT] with PHASE one of "
                    + ", ".join(TIMED_PHASES))
        warn, _, crit = ranges.partition(",")
        try:
            for value in (warn, crit):
                if value:
                    cli.nagios_range(value)
        except Exception as exc:
            return str(exc)
        thresholds[phase] = (warn or None, crit or None)
    sasl = None
    if args.sasl_user or args.sasl_mechanism:
        if not args.sasl_user:
            return "--sasl-mechanism needs --sasl-user"
        if args.sasl_authzid and (args.sasl_mechanism or "PLAIN") != "PLAIN":
            return "--sasl-authzid works with the PLAIN mechanism only"
        password = read_password(args.sasl_password_file)
        if password is None:
            return (f"SASL needs a password: --sasl-password-file FILE or ${PASSWORD_ENV}")
        sasl = SaslCredentials(args.sasl_mechanism or "PLAIN", args.sasl_user, password,
                               args.sasl_authzid)
    try:
        message = load_message(args)
    except OSError as exc:
        return f"cannot read --payload-file: {exc.strerror}"
    try:
        proxy_header = proxy_builder(args)
    except ValueError as exc:
        return str(exc)
    ca_file = args.ca_file
    if ca_file and not os.access(ca_file, os.R_OK):
        return f"cannot read --ca-file {ca_file}"
    port = args.port or (465 if args.tls else 25)
    mail_from = args.mail_from
    if mail_from is None and args.rcpt_to:
        mail_from = ""  # the null sender: what a bounce uses, accepted everywhere (RFC 5321)
    plan = SessionPlan(
        helo_name=args.helo_name or socket.gethostname() or "localhost",
        starttls=STARTTLS_NEVER if args.no_starttls else STARTTLS_AUTO,
        implicit_tls=args.tls,
        tls_context=None,
        sasl=sasl,
        commands=tuple(args.commands),
        mail_from=mail_from,
        rcpt_to=tuple(args.rcpt_to),
        send_data=args.send_data,
        message=message,
        proxy_header=proxy_header,
    )
    return Options(
        hostname=args.hostname, domain=args.domain, port=port, servername=args.servername,
        family=args.family, dns_servers=tuple(args.dns_server) if args.dns_server else None,
        concurrency=args.concurrency, plan=plan, expect=args.expect,
        responses=tuple(args.responses), require_starttls=args.require_starttls,
        ca_file=ca_file, cert_warn_days=warn_days, cert_crit_days=crit_days,
        cert_error_state=args.cert_error_state, transient_state=args.transient_state,
        unreachable_state=args.unreachable_state,
        ignore_quit_failure=args.ignore_quit_failure, warning=args.warning,
        critical=args.critical, phase_thresholds=thresholds, verbose=args.verbose,
        timeout=args.timeout)


def read_password(path: str | None) -> str | None:
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                return handle.read().rstrip("\r\n")
        except OSError:
            return None
    return os.environ.get(PASSWORD_ENV)


def load_message(args) -> bytes:
    if args.payload_file:
        with open(args.payload_file, "rb") as handle:
            return handle.read()
    if args.payload is not None:
        return args.payload.replace("\\n", "\n").encode("utf-8")
    return DEFAULT_MESSAGE.encode("ascii")


def proxy_builder(args):
    """A function of (local, peer) giving the PROXY header, or None."""
    if not args.proxy_protocol:
        return None
    from check_smtp_posture.smtp import proxy

    version, family = args.proxy_protocol, args.proxy_family or "TCP4"
    for addr in (args.proxy_source_address, args.proxy_dest_address):
        if addr is not None:
            try:
                ip = ipaddress.ip_address(addr)
            except ValueError:
                raise ValueError(f"PROXY address {addr!r} is not an IP address") from None
            if (ip.version == 6) != (family == "TCP6"):
                raise ValueError(f"PROXY address {addr} does not match family {family}")

    def build(local, peer) -> bytes:
        src = args.proxy_source_address or _matching(local[0], family, "127.0.0.1", "::1")
        dst = args.proxy_dest_address or _matching(peer[0], family, "127.0.0.1", "::1")
        return proxy.proxy_header(version, family, src, dst,
                                  args.proxy_source_port or local[1],
                                  args.proxy_dest_port or peer[1])

    return build


def _matching(address: str, family: str, v4: str, v6: str) -> str:
    """The connection's address if it fits the header's family, else a placeholder."""
    is_v6 = ipaddress.ip_address(address).version == 6
    if is_v6 == (family == "TCP6"):
        return address
    return v6 if family == "TCP6" else v4


# -- probe -------------------------------------------------------------------------


@dataclass(frozen=True)
class Resolution:
    """How the target became a list of endpoints, and what went wrong on the way."""

    endpoints: tuple
    problems: tuple  # one line each: "mx2.example: A: TIMEOUT"
    failed: bool  # no endpoint because DNS failed (not because there is none)
    what: str  # "MX of example.org", "host mx1.example"
    dns_time: float = 0.0
    null_mx: bool = False  # the domain says it accepts no mail (RFC 7505)


class SmtpPhases(nagiosplugin.Resource):
    """Runs the planned SMTP session against every endpoint of the target."""

    def __init__(self, options: Options, deadline: Deadline):
        self.options = options
        self.deadline = deadline
        self.resolution: Resolution | None = None
        self.results: list[SessionResult] = []
        self._certificates: dict = {}

    @property
    def name(self):
        return "SMTP_PHASES"

    def probe(self):
        self.resolution = resolve_endpoints(self.options, self.deadline)
        yield nagiosplugin.Metric("resolution", self.resolution, context="resolution")
        endpoints = self.resolution.endpoints
        if not endpoints:
            return
        self.results = run_sessions(endpoints, self.options, self.deadline)
        prefixed = self.options.domain is not None or len(endpoints) > 1
        for result in self.results:
            cert = self.certificate(result)
            yield from endpoint_metrics(result, cert, prefixed)

    def certificate(self, result: SessionResult):
        """Facts about the endpoint's certificate (None without TLS), parsed once."""
        if not result.peer_chain:
            return None
        if id(result) not in self._certificates:
            from check_smtp_posture.smtp import tls

            ep = result.endpoint
            self._certificates[id(result)] = tls.certificate_facts(
                result.peer_chain, hostname=ep.name or ep.address, ca_file=self.options.ca_file)
        return self._certificates[id(result)]


def run_sessions(endpoints, options: Options, deadline: Deadline) -> list[SessionResult]:
    """One session per endpoint, concurrently (bounded) when there are several."""
    if len(endpoints) == 1:
        return [run_session(endpoints[0], options.plan, deadline)]
    from concurrent.futures import ThreadPoolExecutor  # paid only when needed

    with ThreadPoolExecutor(max_workers=min(len(endpoints), options.concurrency)) as pool:
        return list(pool.map(lambda ep: run_session(ep, options.plan, deadline), endpoints))


def resolve_endpoints(options: Options, deadline: Deadline) -> Resolution:
    """Endpoints to probe: the address given, the host's addresses, or every MX address."""
    if options.hostname:
        try:
            ip = ipaddress.ip_address(options.hostname.strip("[]"))
        except ValueError:
            ip = None
        if ip is not None:  # an address: no DNS at all (and no dnspython import)
            ep = Endpoint(str(ip), options.port, options.servername)
            return Resolution((ep,), (), False, f"host {ip}")
    from check_smtp_posture import dnslookup

    client = dnslookup.DnsClient(deadline, servers=options.dns_servers)
    problems: list[str] = []
    failed = False
    started = deadline.elapsed()
    if options.hostname:
        hosts = [options.hostname.rstrip(".")]
        what = f"host {hosts[0]}"
    else:
        what = f"MX of {options.domain}"
        answer = client.query(options.domain, "MX")
        if answer.failed:
            return Resolution((), (f"{options.domain} MX: {answer.status}",), True, what,
                              deadline.elapsed() - started)
        if answer.status == dnslookup.NXDOMAIN:
            return Resolution((), (f"{options.domain}: NXDOMAIN",), False, what,
                              deadline.elapsed() - started)
        pairs = dnslookup.mx_records(answer) if answer.ok else []
        if len(pairs) == 1 and pairs[0][1] == ".":
            return Resolution((), (f"{options.domain} has a null MX (RFC 7505): "
                                   "it accepts no mail",), False, what,
                              deadline.elapsed() - started, null_mx=True)
        if not pairs:  # implicit MX (RFC 5321 §5.1): the domain itself
            problems.append(f"{options.domain} has no MX; using its address records")
            hosts = [options.domain]
        else:
            hosts = [host.rstrip(".") for _, host in pairs if host != "."]
    endpoints = []
    for host in hosts:
        for answer in client.addresses(host, options.family):
            if answer.failed:
                failed = True
                problems.append(f"{host} {answer.rdtype}: {answer.status}")
            for address in answer.records if answer.ok else ():
                endpoints.append(Endpoint(address, options.port,
                                          options.servername or host))
        if not any(ep.name == (options.servername or host) for ep in endpoints) and not failed:
            problems.append(f"{host} has no address")
    dns_time = deadline.elapsed() - started
    endpoints = [Endpoint(ep.address, ep.port, ep.name, dns_time) for ep in endpoints]
    return Resolution(tuple(endpoints), tuple(problems), failed and not endpoints, what,
                      dns_time)


@dataclass(frozen=True)
class Fact:
    """A fact about one endpoint, handed from probe to Context."""

    endpoint: Endpoint
    result: SessionResult
    prefix: str


def endpoint_metrics(result: SessionResult, cert, prefixed: bool):
    ep = result.endpoint
    prefix = f"{ep.name}_{ep.address}_" if prefixed and ep.name else (
        f"{ep.address}_" if prefixed else "")
    fact = Fact(ep, result, prefix)
    yield nagiosplugin.Metric(prefix + "dialogue", fact, context="dialogue")
    yield nagiosplugin.Metric(prefix + "starttls", fact, context="starttls")
    yield nagiosplugin.Metric(prefix + "auth_posture", fact, context="auth_posture")
    for phase in TIMED_PHASES:
        if phase in result.times:
            yield nagiosplugin.Metric(f"{prefix}{phase}_time", round(result.times[phase], 6),
                                      uom="s", min=0, context=f"phase_{phase}")
    yield nagiosplugin.Metric(prefix + "time", round(result.times["total"], 6), uom="s",
                              min=0, context="time")
    if result.tls is not None:
        yield nagiosplugin.Metric(prefix + "tls_protocol", fact, context="tls_protocol")
    if cert is not None:
        yield nagiosplugin.Metric(prefix + "certificate", (fact, cert), context="certificate")
        if cert.days_left is not None:
            # No unit: "d" is not among the units Nagios perfdata defines.
            yield nagiosplugin.Metric(prefix + "cert_days_left", round(cert.days_left, 2),
                                      context="cert_days_left")


# -- contexts: every state decision lives here ------------------------------------


def _where(fact: Fact) -> str:
    return fact.endpoint.label


class ResolutionContext(nagiosplugin.Context):
    def __init__(self, options: Options):
        super().__init__("resolution")
        self.options = options

    def evaluate(self, metric, resource):
        res: Resolution = metric.value
        if res.endpoints:
            hint = "; ".join(res.problems)
            return self.result_cls(nagiosplugin.Ok, hint, metric)
        if res.null_mx:  # nothing to probe, by the domain's own choice
            state = nagiosplugin.Ok
        elif res.failed:
            state = STATES[self.options.unreachable_state]
        else:
            state = nagiosplugin.Critical
        reason = "; ".join(res.problems) or f"no endpoint found for {res.what}"
        return self.result_cls(state, one_line(reason, 200), metric)


class DialogueContext(nagiosplugin.Context):
    """Transport failures, refusing replies, banner/command expectations, QUIT."""

    def __init__(self, options: Options):
        super().__init__("dialogue")
        self.options = options

    def evaluate(self, metric, resource):
        fact: Fact = metric.value
        result = fact.result
        where = _where(fact)
        opts = self.options
        if result.failure is not None:
            exc = result.failure
            state = nagiosplugin.Critical
            if exc.kind in ("connect", "timeout"):
                state = STATES[opts.unreachable_state]
            return self.result_cls(state, f"{where} {exc.phase}: {one_line(exc.detail)}",
                                   metric)
        if result.stopped is not None:
            phase = result.stopped
            reply = result.replies.get(phase)
            if reply is None:  # stopped without a reply: AUTH mechanism not offered
                mech = opts.plan.sasl.mechanism if opts.plan.sasl else "?"
                return self.result_cls(nagiosplugin.Critical,
                                       f"{where} auth: {mech} not offered", metric)
            if phase == "starttls":
                return self.result_cls(nagiosplugin.Ok, "", metric)  # StartTlsContext judges
            if phase == "rcpt":
                bad = [(rcpt, r) for rcpt, r in result.rcpt_replies if not r.positive]
                rcpt, reply = bad[0]
                detail = f"RCPT <{rcpt}>: {reply}"
            else:
                detail = str(reply)
            if phase == "ehlo" and reply.code in (500, 502, 504, 550):
                detail = f"EHLO and HELO refused: {reply}"
            state = STATES[opts.transient_state] if reply.transient else nagiosplugin.Critical
            return self.result_cls(state, f"{where} {phase}: {one_line(detail)}", metric)
        if opts.expect is not None:
            banner = result.replies.get("banner")
            if banner is None or opts.expect not in banner.text:
                return self.result_cls(nagiosplugin.Critical,
                                       f"{where} banner lacks {one_line(opts.expect, 40)!r}",
                                       metric)
        for (command, reply), wanted in zip(result.command_replies, opts.responses):
            if wanted not in str(reply):
                return self.result_cls(
                    nagiosplugin.Critical,
                    f"{where} {one_line(command, 30)}: {one_line(str(reply), 60)} "
                    f"lacks {one_line(wanted, 30)!r}", metric)
        if not opts.responses:
            for command, reply in result.command_replies:
                if not reply.positive:
                    state = STATES[opts.transient_state] if reply.transient \
                        else nagiosplugin.Critical
                    return self.result_cls(state, f"{where} {one_line(command, 30)}: "
                                                  f"{one_line(str(reply))}", metric)
        if not opts.ignore_quit_failure:
            quit_reply = result.replies.get("quit")
            if result.quit_failure is not None:
                return self.result_cls(nagiosplugin.Warn, f"{where} quit: "
                                       f"{one_line(result.quit_failure.detail)}", metric)
            if quit_reply is not None and quit_reply.category != 2:
                return self.result_cls(nagiosplugin.Warn,
                                       f"{where} quit: {one_line(str(quit_reply))}", metric)
        if result.helo_fallback:
            return self.result_cls(nagiosplugin.Warn, f"{where} EHLO refused, HELO accepted",
                                   metric)
        return self.result_cls(nagiosplugin.Ok, "", metric)


class StartTlsContext(nagiosplugin.Context):
    def __init__(self, options: Options):
        super().__init__("starttls")
        self.options = options

    def evaluate(self, metric, resource):
        fact: Fact = metric.value
        result = fact.result
        where = _where(fact)
        if self.options.plan.implicit_tls or result.extensions is None:
            return self.result_cls(nagiosplugin.Ok, "", metric)
        if not result.starttls_offered:
            state = nagiosplugin.Critical if self.options.require_starttls else nagiosplugin.Ok
            return self.result_cls(state, f"{where} STARTTLS not offered", metric)
        if not result.starttls_attempted:
            return self.result_cls(nagiosplugin.Ok, "", metric)
        if result.stopped == "starttls":
            reply = result.replies["starttls"]
            return self.result_cls(nagiosplugin.Critical,
                                   f"{where} STARTTLS refused: {one_line(str(reply))}", metric)
        return self.result_cls(nagiosplugin.Ok, "", metric)


class AuthPostureContext(nagiosplugin.Context):
    def __init__(self):
        super().__init__("auth_posture")

    def evaluate(self, metric, resource):
        fact: Fact = metric.value
        mechs = fact.result.auth_before_tls
        if mechs and fact.result.extensions is not None and fact.result.starttls_offered:
            return self.result_cls(nagiosplugin.Warn, f"{_where(fact)} offers AUTH "
                                   f"({' '.join(mechs)}) before STARTTLS", metric)
        if mechs and not fact.result.starttls_offered and fact.result.tls is None:
            return self.result_cls(nagiosplugin.Warn, f"{_where(fact)} offers AUTH "
                                   f"({' '.join(mechs)}) without TLS", metric)
        return self.result_cls(nagiosplugin.Ok, "", metric)


class TlsProtocolContext(nagiosplugin.Context):
    OLD = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1")

    def __init__(self):
        super().__init__("tls_protocol")

    def evaluate(self, metric, resource):
        fact: Fact = metric.value
        tls = fact.result.tls
        if tls.version in self.OLD:
            return self.result_cls(nagiosplugin.Warn,
                                   f"{_where(fact)} negotiated {tls.version} (below TLS 1.2)",
                                   metric)
        return self.result_cls(nagiosplugin.Ok, "", metric)


class CertificateContext(nagiosplugin.Context):
    """Expiry, validity start, trust, name, key and signature of the peer certificate."""

    def __init__(self, options: Options):
        super().__init__("certificate")
        self.options = options

    def evaluate(self, metric, resource):
        fact, cert = metric.value
        where = _where(fact)
        if cert.error:
            return self.result_cls(nagiosplugin.Critical,
                                   f"{where} certificate unreadable: {one_line(cert.error)}",
                                   metric)
        if cert.expired:
            return self.result_cls(nagiosplugin.Critical, f"{where} certificate expired "
                                   f"{cert.not_after:%Y-%m-%d}", metric)
        if cert.not_yet_valid:
            return self.result_cls(nagiosplugin.Critical, f"{where} certificate not valid "
                                   f"before {cert.not_before:%Y-%m-%d}", metric)
        problems = []
        if not cert.chain_trusted:
            problems.append(f"untrusted chain ({one_line(cert.chain_error or 'unknown', 60)})")
        if not cert.hostname_matches:
            problems.append(f"name mismatch for {fact.endpoint.name or fact.endpoint.address}")
        if problems:
            state = STATES[self.options.cert_error_state]
            return self.result_cls(state, f"{where} certificate: {', '.join(problems)}", metric)
        weak = []
        if cert.weak_key:
            weak.append(f"weak key {cert.key_type} {cert.key_bits} bits")
        if cert.weak_signature:
            weak.append(f"{cert.signature_hash} signature")
        if weak:
            return self.result_cls(nagiosplugin.Warn, f"{where} certificate: {', '.join(weak)}",
                                   metric)
        return self.result_cls(nagiosplugin.Ok, "", metric)


class CertDaysContext(nagiosplugin.ScalarContext):
    """Days left as perfdata, with the --cert-days window as thresholds."""

    def __init__(self, options: Options):
        super().__init__("cert_days_left", warning=f"{options.cert_warn_days:g}:",
                         critical=f"{options.cert_crit_days:g}:")

    def evaluate(self, metric, resource):
        if metric.value < 0:  # expired: CertificateContext says so already
            return self.result_cls(nagiosplugin.Ok, "", metric)
        result = super().evaluate(metric, resource)
        if result.state != nagiosplugin.Ok:
            label = metric.name[: -len("cert_days_left")].rstrip("_") or "certificate"
            return self.result_cls(result.state, f"{label} certificate expires in "
                                   f"{metric.value:.0f} days", metric)
        return result


class TimeContext(nagiosplugin.ScalarContext):
    """Thresholds on a time; the hint names the endpoint and phase."""

    def performance(self, metric, resource):
        # Fixed-point: perfdata parsers choke on Python's "7.9e-05".
        perf = super().performance(metric, resource)
        return perf._replace(value=f"{metric.value:.6f}")

    def evaluate(self, metric, resource):
        result = super().evaluate(metric, resource)
        if result.state != nagiosplugin.Ok:
            return self.result_cls(result.state, f"{metric.name} {metric.value:.3f}s "
                                   f"({result.hint})", metric)
        return result


# -- summary -----------------------------------------------------------------------


class PhasesSummary(nagiosplugin.Summary):
    def __init__(self, resource: SmtpPhases):
        self.resource = resource

    def ok(self, results):
        res = self.resource.results
        if not res:
            hints = [r.hint for r in results if r.hint]
            return "; ".join(hints) or "nothing to check"
        if len(res) == 1:
            return describe_ok(res[0])
        slowest = max(res, key=lambda r: r.times.get("total", 0))
        return (f"{len(res)} endpoints OK for {self.resource.resolution.what}, slowest "
                f"{slowest.endpoint.label} {slowest.times['total']:.3f}s")

    def problem(self, results):
        worst = results.most_significant_state
        hints = [r.hint for r in results if r.state == worst and r.hint]
        if not hints:
            hints = [str(results.first_significant)]
        more = f" (+{len(hints) - 3} more)" if len(hints) > 3 else ""
        return "; ".join(hints[:3]) + more

    def verbose(self, results):
        lines = []
        for result in results:
            if result.state != nagiosplugin.Ok and result.hint:
                lines.append(f"{str(result.state).lower()}: {result.hint}")
        res = self.resource.resolution
        if res is not None and res.problems and res.endpoints:
            lines.extend(f"dns: {p}" for p in res.problems)
        verbosity = self.resource.options.verbose
        for session in self.resource.results:
            lines.extend(describe_session(session, self.resource.certificate(session),
                                          verbosity))
        return lines


def describe_ok(result: SessionResult) -> str:
    banner = result.replies.get("banner")
    parts = [result.endpoint.label]
    if banner is not None:
        parts.append(f"banner {banner.code}")
    if result.tls is not None:
        parts.append(f"{'TLS' if result.extensions_tls is None else 'STARTTLS'} "
                     f"{result.tls.version}")
    elif result.extensions is not None and not result.starttls_offered:
        parts.append("no STARTTLS")
    if result.rcpt_replies:
        parts.append(f"{len(result.rcpt_replies)} RCPT accepted")
    if "body" in result.replies:
        parts.append(f"message accepted: {one_line(str(result.replies['body']), 60)}")
    parts.append(f"{result.times['total']:.3f}s")
    return ", ".join(parts)


INVENTORY = ("PIPELINING", "8BITMIME", "SIZE", "SMTPUTF8", "CHUNKING", "DSN",
             "ENHANCEDSTATUSCODES", "STARTTLS", "AUTH", "REQUIRETLS")


def describe_session(result: SessionResult, cert, verbosity: int) -> list[str]:
    """Long output for one endpoint: phases, extensions, TLS, transcript at -vvv."""
    lines = [f"{result.endpoint.label} port {result.endpoint.port}:"]
    # result.times is filled as the dialogue goes, so its order is the phases' order
    phases = ", ".join(f"{p} {t:.3f}s" for p, t in result.times.items()
                       if p in TIMED_PHASES)
    lines.append(f"  phases: {phases}, total {result.times['total']:.3f}s")
    banner = result.replies.get("banner")
    if banner is not None:
        lines.append(f"  banner: {one_line(str(banner), 100)}")
    ext = result.final_extensions
    if ext is not None:
        present = []
        for keyword in INVENTORY:
            if keyword in ext:
                params = ext.params(keyword)
                present.append(f"{keyword}={params}" if params and keyword in ("SIZE", "AUTH")
                               else keyword)
        missing = [k for k in ("PIPELINING", "8BITMIME", "SIZE", "SMTPUTF8", "CHUNKING", "DSN")
                   if k not in ext]
        lines.append(f"  extensions: {' '.join(present) or 'none'}")
        if missing:
            lines.append(f"  not offered: {' '.join(missing)}")
        if result.helo_fallback:
            lines.append("  EHLO refused; HELO accepted")
    if result.extensions is not None and result.tls is None and not result.starttls_offered \
            and not result.failure:
        lines.append("  STARTTLS not offered: mail to this endpoint travels in clear text")
    if result.tls is not None:
        lines.append(f"  tls: {result.tls.describe()}, SNI {result.tls.sni or '-'}")
    if cert is not None and not cert.error:
        lines.append(f"  certificate: subject {cert.subject}; issuer {cert.issuer}; "
                     f"valid {cert.not_before:%Y-%m-%d} to {cert.not_after:%Y-%m-%d}; "
                     f"{cert.key_type} {cert.key_bits} bits, {cert.signature_hash}")
        if cert.san_dns or cert.san_ip:
            lines.append("  names: " + " ".join(cert.san_dns + cert.san_ip))
    for recipient, reply in result.rcpt_replies:
        lines.append(f"  RCPT <{recipient}>: {one_line(str(reply), 100)}")
    for command, reply in result.command_replies:
        lines.append(f"  {one_line(command, 40)}: {one_line(str(reply), 100)}")
    if result.failure is not None:
        lines.append(f"  failed in {result.failure.phase}: {one_line(result.failure.detail)}")
    if verbosity >= 3:
        lines.append("  transcript:")
        lines.extend("    " + line for line in result.transcript.lines())
    return lines


# -- main --------------------------------------------------------------------------


def build_check(options: Options, deadline: Deadline) -> nagiosplugin.Check:
    resource = SmtpPhases(options, deadline)
    contexts = [
        ResolutionContext(options),
        DialogueContext(options),
        StartTlsContext(options),
        AuthPostureContext(),
        TlsProtocolContext(),
        CertificateContext(options),
        CertDaysContext(options),
        TimeContext("time", warning=options.warning, critical=options.critical),
    ]
    for phase in TIMED_PHASES:
        warn, crit = options.phase_thresholds.get(phase, (None, None))
        contexts.append(TimeContext(f"phase_{phase}", warning=warn, critical=crit))
    return nagiosplugin.Check(resource, *contexts, PhasesSummary(resource),
                              name="SMTP_PHASES")


def main(argv=None) -> int:
    parser = build_parser()
    args = cli.parse(parser, argv)
    if isinstance(args, int):
        return args
    options = options_from(args, parser)
    if isinstance(options, str):
        return parser.usage_error(options)
    deadline = Deadline(options.timeout)
    check = build_check(options, deadline)
    return runner.execute(check, verbose=options.verbose, timeout=options.timeout,
                          timeout_state=EXIT_STATES[options.unreachable_state])


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
