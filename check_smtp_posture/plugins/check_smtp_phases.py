"""check_smtp_phases: the SMTP dialogue of one host, or of every MX endpoint of a
domain, with every phase timed, STARTTLS/implicit TLS and certificate facts.

Probe (SmtpPhases.probe) runs the sessions and yields facts; the Contexts of
smtp_phases_contexts.py turn facts into states according to the options;
PhasesSummary phrases.
"""

from __future__ import annotations

import argparse
import os
import re
from collections import namedtuple

import nagiosplugin

from check_smtp_posture import targets
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.fanout import each_endpoint
from check_smtp_posture.nagios import cli, perfdata, runner, states
from check_smtp_posture.nagios.contexts import (
    MxContext,
    OAuthContext,
    TimeContext,
    per_endpoint_contexts,
)
from check_smtp_posture.plugins.smtp_phases_contexts import (
    AuthPostureContext,
    CertDaysContext,
    CertificateContext,
    DialogueContext,
    PhasesSummary,
    StartTlsContext,
    TlsProtocolContext,
)
from check_smtp_posture.smtp.dialogue import PHASES
from check_smtp_posture.smtp.session import (
    STARTTLS_AUTO,
    STARTTLS_NEVER,
    SessionPlan,
    SessionResult,
    run_session,
)
from check_smtp_posture.userfiles import UserFileError, option_file_problem, read_user_file

NAME = "SMTP_PHASES"
TIMED_PHASES = PHASES  # every phase the dialogue times, each with a <phase>_time label
PROBE_SUBJECT = "check_smtp_phases probe"
PROBE_BODY = "Probe message of check_smtp_phases.\n"
#: --cert-days beyond this is a typo: no certificate lives 100 years
MAX_CERT_DAYS = 36500
#: one number of --cert-days: a decimal with at most 4 places, which a threshold range
#: takes as written (a smaller fraction would be printed 1e-05, which it does not)
CERT_DAYS = r"\d+(?:\.\d{1,4})?"
#: --payload-file larger than this is refused (a probe message, not a mailbox)
MAX_PAYLOAD = 10 * 1024 * 1024


# -- configuration ---------------------------------------------------------------


class Options(namedtuple("Options", cli.CommonOptions._fields + (
        "hostname", "domain", "port", "servername",
        "plan",  # smtp.session.SessionPlan
        "expect", "responses", "require_starttls", "ca_file", "cert_warn_days",
        "cert_crit_days", "cert_error_state", "transient_state", "ignore_quit_failure",
        "phase_thresholds",  # phase -> (warning range, critical range)
        "oauth"))):  # oauth.OAuthSettings for an OAuth SASL mechanism, or None
    """What the run was asked to do, parsed and checked (cli.CommonOptions first)."""

    __slots__ = ()


def build_parser() -> cli.PluginArgumentParser:
    parser = cli.PluginArgumentParser(
        prog="check_smtp_phases",
        description="Check an SMTP server, or every MX endpoint of a mail domain, phase by "
                    "phase: banner, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, QUIT, with TLS "
                    "and certificate findings.")
    target = parser.add_argument_group("target")
    which = target.add_mutually_exclusive_group()
    which.add_argument("-H", "--hostname", type=cli.host_or_address,
                       help="host name or address of the SMTP server")
    which.add_argument("-D", "--domain", type=cli.domain_name,
                       help="mail domain: check every address of every MX")
    target.add_argument("-p", "--port", type=cli.port_number,
                        help="TCP port (default: 25, or 465 with --tls)")
    target.add_argument("--servername", metavar="NAME",
                        help="name for SNI and the certificate check (default: the host or MX "
                             "name)")
    cli.add_concurrency_option(target, "endpoints probed (and DNS queries asked) with -D")
    cli.add_family_options(target)
    cli.add_dns_options(target)

    smtp = parser.add_argument_group("SMTP dialogue")
    cli.add_helo_option(smtp, "EHLO/HELO")
    smtp.add_argument("--from", dest="mail_from", type=cli.sender_address, metavar="ADDR",
                      help="envelope sender for MAIL FROM: addr, <addr>, or <> (also '') for "
                           "the null sender; sent in one pair of brackets")
    smtp.add_argument("--to", dest="rcpt_to", type=cli.recipient_address, action="append",
                      default=[], metavar="ADDR",
                      help="envelope recipient for RCPT TO, addr or <addr> (repeatable); "
                           "without --send-data the transaction ends with RSET and nothing "
                           "is delivered")
    smtp.add_argument("--send-data", action="store_true",
                      help="send DATA and the payload: a message IS delivered")
    smtp.add_argument("--header-from", type=cli.header_address, metavar="ADDR",
                      help="From field of the message --send-data builds (default: the "
                           "envelope sender)")
    payload = smtp.add_mutually_exclusive_group()
    payload.add_argument("--payload", metavar="TEXT",
                         help="message sent with --send-data (\\n becomes CRLF)")
    payload.add_argument("--payload-file", metavar="FILE",
                         help="read the message sent with --send-data from FILE")
    smtp.add_argument("--expect", metavar="TEXT",
                      help="text the banner must contain")
    smtp.add_argument("--command", dest="commands", action="append", default=[],
                      type=cli.smtp_line,
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
    tls.add_argument("--cert-error-state", choices=states.NAMES, default="warning",
                     help="state for an untrusted chain or a name mismatch (default: warning)")

    sasl = parser.add_argument_group("SASL authentication")
    cli.add_sasl_options(sasl)
    sasl.add_argument("--sasl-authzid", default="", metavar="ID",
                      help="authorization identity (PLAIN only)")
    sasl.add_argument("--allow-plaintext-auth", action="store_true",
                      help="send AUTH even when the connection has no TLS (default: AUTH "
                           "is withheld and the check is CRITICAL)")

    proxy = parser.add_argument_group("PROXY protocol")
    proxy.add_argument("--proxy-protocol", type=int, choices=(1, 2), metavar="VERSION",
                       help="send a PROXY protocol header (version 1 or 2) before SMTP")
    proxy.add_argument("--proxy-family", choices=("TCP4", "TCP6"), default=None,
                       help="family in the PROXY header (default: the connection's)")
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
    cli.add_transient_option(limits, "a 4xx reply where 2xx was expected")
    cli.add_unreachable_option(limits)
    cli.add_perfdata_option(limits)
    cli.add_common_options(limits)
    cli.add_oauth_options(parser)
    return parser


def options_from(args) -> Options | str:
    """Options from parsed arguments, or a usage error message."""
    if not args.hostname and not args.domain:
        return "one of -H/--hostname or -D/--domain is required"
    if args.send_data and not args.rcpt_to:
        return "--send-data needs at least one --to"
    if (args.payload is not None or args.payload_file is not None) and not args.send_data:
        return "--payload/--payload-file need --send-data"
    if args.header_from and not args.send_data:
        return "--header-from needs --send-data"
    if args.header_from and (args.payload is not None or args.payload_file is not None):
        return "--header-from sets the built message's From: not with --payload/--payload-file"
    if args.responses and len(args.responses) != len(args.commands):
        return "give one --response per --command"
    proxy_opts = (args.proxy_family, args.proxy_source_address, args.proxy_dest_address,
                  args.proxy_source_port, args.proxy_dest_port)
    if any(v is not None for v in proxy_opts) and not args.proxy_protocol:
        return "PROXY header options need --proxy-protocol"
    try:
        # plain decimals, as a threshold range writes them (not 1e-7, nan, inf)
        if not re.fullmatch(rf"\s*{CERT_DAYS}\s*,\s*{CERT_DAYS}\s*", args.cert_days):
            raise ValueError
        warn_days, crit_days = (float(x) for x in args.cert_days.split(","))
        if not all(0 <= days <= MAX_CERT_DAYS for days in (warn_days, crit_days)):
            raise ValueError
    except ValueError:
        return (f"--cert-days takes WARN,CRIT in days (0 to {MAX_CERT_DAYS}), "
                f"not {args.cert_days!r}")
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
        except argparse.ArgumentTypeError as exc:
            return f"--phase-threshold {item!r}: {exc}"
        thresholds[phase] = (warn or None, crit or None)
    sasl = None
    if args.sasl_user is not None and not args.sasl_user.strip():
        return "--sasl-user is empty: give the authentication identity"
    if args.allow_plaintext_auth and not args.sasl_user:
        return "--allow-plaintext-auth needs --sasl-user"
    if args.sasl_user or args.sasl_mechanism:
        if not args.sasl_user:
            return "--sasl-mechanism needs --sasl-user"
        if args.sasl_authzid and (args.sasl_mechanism or "PLAIN") != "PLAIN":
            return "--sasl-authzid works with the PLAIN mechanism only"
        sasl = cli.sasl_credentials(args, args.sasl_authzid)
        if isinstance(sasl, str):
            return sasl
    oauth = cli.oauth_settings(args, bool(sasl and sasl.mechanism in cli.OAUTH_SASL_MECHANISMS))
    if isinstance(oauth, str):
        return oauth
    common = cli.common_options(args, default_helo=True)
    mail_from = args.mail_from
    if mail_from is None and args.rcpt_to:
        mail_from = ""  # the null sender: what a bounce uses, accepted everywhere (RFC 5321)
    try:
        message = load_message(args, mail_from, common.helo_name) if args.send_data else b""
    except UserFileError as exc:
        return f"--payload-file: {exc}"
    try:
        proxy_spec = proxy_from(args)
    except ValueError as exc:
        return str(exc)
    ca_file = args.ca_file
    problem = option_file_problem((("--ca-file", ca_file),), "CA file")
    if problem:
        return problem
    port = args.port or (465 if args.tls else 25)
    plan = SessionPlan(
        helo_name=common.helo_name,
        starttls=STARTTLS_NEVER if args.no_starttls else STARTTLS_AUTO,
        implicit_tls=args.tls,
        require_tls=args.require_starttls,
        plaintext_auth=args.allow_plaintext_auth,
        tls_context=None,
        sasl=sasl,
        commands=tuple(args.commands),
        mail_from=mail_from,
        rcpt_to=tuple(args.rcpt_to),
        send_data=args.send_data,
        message=message,
        proxy=proxy_spec,
    )
    return Options(
        *common, hostname=args.hostname, domain=args.domain, port=port,
        servername=args.servername, plan=plan, expect=args.expect,
        responses=tuple(args.responses), require_starttls=args.require_starttls,
        ca_file=ca_file, cert_warn_days=warn_days, cert_crit_days=crit_days,
        cert_error_state=args.cert_error_state, transient_state=args.transient_state,
        ignore_quit_failure=args.ignore_quit_failure, phase_thresholds=thresholds,
        oauth=oauth)


def load_message(args, mail_from: str, helo: str) -> bytes:
    """What --send-data sends: the user's payload exactly, else a whole RFC 5322 message."""
    if args.payload_file is not None:
        return read_user_file(args.payload_file, "payload file", MAX_PAYLOAD)
    if args.payload is not None:
        # The user's bytes, as the shell gave them (argv is decoded with
        # surrogateescape, so 8-bit text comes back unchanged).
        return os.fsencode(args.payload.replace("\\n", "\n"))
    from check_smtp_posture.smtp.message import probe_message

    return probe_message(header_from=args.header_from or mail_from or f"check_smtp_phases@{helo}",
                         recipients=tuple(args.rcpt_to), helo_name=helo,
                         subject=PROBE_SUBJECT, body=PROBE_BODY)


def proxy_from(args):
    """The PROXY header asked for (a ProxySpec), or None; ValueError for bad options."""
    if not args.proxy_protocol:
        return None
    from check_smtp_posture.smtp.proxy import ProxySpec

    return ProxySpec(args.proxy_protocol, args.proxy_family, args.proxy_source_address,
                     args.proxy_dest_address, args.proxy_source_port, args.proxy_dest_port)


# -- probe -------------------------------------------------------------------------


class SmtpPhases(nagiosplugin.Resource):
    """Runs the planned SMTP session against every endpoint of the target."""

    def __init__(self, options: Options, deadline: Deadline):
        self.options = options
        self.deadline = deadline
        self.resolution: targets.Resolution | None = None
        self.results: list[SessionResult] = []
        self.worst: dict = {}  # metric name -> perfdata.Worst, in a run over several endpoints
        self._certificates: dict = {}
        self.oauth_note: str | None = None  # where the OAuth access token came from

    def probe(self):
        self.resolution = resolve(self.options, self.deadline)
        yield nagiosplugin.Metric("mx", self.resolution, context="mx")
        endpoints = self.resolution.endpoints(self.options.port, self.options.servername)
        if not endpoints:
            return
        options = self.options
        if options.oauth is not None:  # the token first: one for every endpoint
            from check_smtp_posture import oauth

            try:
                token, cached = oauth.token_for_run(options.oauth, options, self.deadline)
            except oauth.OAuthError as exc:
                yield nagiosplugin.Metric("oauth", exc, context="oauth")
                return
            self.oauth_note = oauth.transcript_line(options.oauth, cached)
            plan = options.plan._replace(sasl=options.plan.sasl._replace(password=token))
            options = options._replace(plan=plan)
        self.results = run_sessions(endpoints, options, self.deadline)
        several = self.options.domain is not None or len(endpoints) > 1
        keys = perfdata.endpoint_keys(result.endpoint for result in self.results)
        for key, result in zip(keys, self.results):
            yield from endpoint_facts(result, self.certificate(result), key if several else "")
        yield from perfdata.run_metrics(
            [result.endpoint.label for result in self.results],
            [measured(result, self.certificate(result)) for result in self.results],
            MEASURES, worst=self.worst if several else {},
            oks=[completed(result) for result in self.results] if several else None,
            keys=keys if self.options.perfdata_per_endpoint else None)

    def certificate(self, result: SessionResult):
        """Facts about the endpoint's certificate (None without TLS), parsed once."""
        if not result.peer_chain:
            return None
        if id(result) not in self._certificates:
            from check_smtp_posture import tls

            ep = result.endpoint
            self._certificates[id(result)] = tls.certificate_facts(
                result.peer_chain, hostname=ep.name or ep.address, ca_file=self.options.ca_file)
        return self._certificates[id(result)]


def resolve(options: Options, deadline: Deadline) -> targets.Resolution:
    """The endpoints' source: the address given, the host's addresses, or every MX's."""
    return targets.resolve_target(
        options.hostname, options.domain, lambda: cli.dns_client(options, deadline),
        servername=options.servername, family=options.family,
        concurrency=options.concurrency)


def run_sessions(endpoints, options: Options, deadline: Deadline) -> list[SessionResult]:
    """One session per endpoint, each within its share of -t (fanout.each_endpoint)."""
    return each_endpoint(endpoints, lambda ep, share: run_session(ep, options.plan, share),
                         deadline, options.concurrency)


#: a fact about one endpoint (targets.Endpoint and its SessionResult), handed from probe
#: to Context
Fact = namedtuple("Fact", ("endpoint", "result"))

#: what check_smtp_phases measures at each endpoint: the time of each phase (thresholds
#: from --phase-threshold) and the total (-w/-c), the slowest endpoint's in a run over
#: several; the certificate's days left (--cert-days), the lowest
MEASURES = tuple(perfdata.Measure(f"{phase}_time", perfdata.slowest, f"phase_{phase}", "s", 0)
                 for phase in TIMED_PHASES) + (
    perfdata.Measure("time", perfdata.slowest, "time", "s", 0),
    perfdata.Measure("cert_days_left", perfdata.lowest, "cert_days_left"))


def endpoint_facts(result: SessionResult, cert, key: str):
    """The facts of one endpoint for the Contexts (`key`: its perfdata.endpoint_keys()
    key in a run over several endpoints, else "")."""
    fact = Fact(result.endpoint, result)
    yield nagiosplugin.Metric(perfdata.label(key, "dialogue"), fact, context="dialogue")
    yield nagiosplugin.Metric(perfdata.label(key, "starttls"), fact, context="starttls")
    yield nagiosplugin.Metric(perfdata.label(key, "auth_posture"), fact, context="auth_posture")
    if result.tls is not None:
        yield nagiosplugin.Metric(perfdata.label(key, "tls_protocol"), fact,
                                  context="tls_protocol")
    if cert is not None:
        yield nagiosplugin.Metric(perfdata.label(key, "certificate"), (fact, cert),
                                  context="certificate")


def measured(result: SessionResult, cert) -> dict:
    """One endpoint's values of MEASURES (a time in seconds, six places)."""
    values = {f"{phase}_time": round(result.times[phase], 6)
              for phase in TIMED_PHASES if phase in result.times}
    values["time"] = round(result.times["total"], 6)
    if cert is not None and cert.days_left is not None:
        # No unit: "d" is not among the units Nagios perfdata defines.
        values["cert_days_left"] = round(cert.days_left, 2)
    return values


def completed(result: SessionResult) -> bool:
    """The endpoint's dialogue ran as planned: reached, nothing refused or withheld."""
    return result.failure is None and result.stopped is None and result.withheld is None


# -- main --------------------------------------------------------------------------


def build_check(options: Options, deadline: Deadline) -> nagiosplugin.Check:
    resource = SmtpPhases(options, deadline)
    contexts = [
        MxContext(unreachable=options.unreachable_state),
        OAuthContext(options.plan.sasl.user if options.plan.sasl else "",
                     options.unreachable_state),
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
    contexts += per_endpoint_contexts(contexts)
    return runner.new_check(resource, *contexts, PhasesSummary(resource), name=NAME)


main, console_main = runner.entry_points(build_parser, options_from, build_check)


if __name__ == "__main__":
    console_main()
