"""check_mail_roundtrip: does a message sent through every MX come back through the
forwarding loop, and how long does each hop take?

One probe per MX endpoint (every address of every MX), delivered directly on
port 25 through the family's SMTP library, or all through --submit. The
receiving side forwards the probe address to a mailbox (--mailbox: IMAP with
IDLE, POP3, Maildir), where the probe is found by its token, timed end to end
and hop by hop (Received:), and deleted.

Synchronous: send, wait until every probe is back or the deadline, report.
Asynchronous (--state-file): each run sends new probes and collects those of
earlier runs, since a mail loop of minutes does not fit a check's timeout.

RoundTrip.probe() gathers facts (one ProbeOutcome per MX endpoint, the mailbox
failure if any); the Contexts judge; RoundTripSummary phrases.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import nagiosplugin

from check_smtp_posture import probemail, targets
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.nagios import cli, runner, states
from check_smtp_posture.nagios.contexts import (
    MxContext,
    OAuthContext,
    StateFileContext,
    TimeContext,
    seconds,
)
from check_smtp_posture.nagios.summary import FamilySummary
from check_smtp_posture.sanitize import one_line, printable

MAILBOX_PASSWORD_ENV = "CHECK_MAILBOX_PASSWORD"
SASL_PASSWORD_ENV = "CHECK_SMTP_PASSWORD"  # as check_smtp_phases
DEFAULT_TIMEOUT = 60.0
DEFAULT_WARNING, DEFAULT_CRITICAL = "60", "300"
SUBMISSION_PORT, SMTPS_PORT = 587, 465
#: seconds kept back from the wait for cleanup and the report
CLEANUP_RESERVE = 2.0

# what became of a probe (UNCHECKED: sent, but the mailbox failed before it was found)
BACK, JUNK, LOST, IN_FLIGHT, SENT, SEND_FAILED, UNCHECKED = (
    "back", "junk", "lost", "in flight", "sent", "send failed", "not looked for")


# -- configuration ---------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    domain: str
    to: str
    sender: str
    mailbox: object  # mailbox.MailboxSpec
    mailbox_password: str | None
    mailbox_auth: str  # mailbox.PASSWORD, mailbox.OAUTH or an OAuth SASL mechanism
    mailbox_ca_file: str | None
    junk_folders: tuple
    idle: bool
    poll_interval: float
    submit: tuple | None  # (host, port)
    submit_implicit_tls: bool
    sasl: object  # smtp.session.SaslCredentials or None
    oauth: object  # oauth.OAuthSettings or None
    ca_file: str | None
    state_file: str | None
    port: int
    family: int | None
    dns_server: tuple | None
    query_timeout: float | None
    concurrency: int
    helo_name: str
    helo_note: str | None
    unreachable_state: str
    warning: str | None
    critical: str | None
    verbose: int
    timeout: float

    @property
    def lost_after(self) -> float:
        """A probe not back after this many seconds is lost (the -c range's end)."""
        return _range_end(self.critical) or float(DEFAULT_CRITICAL)

    @property
    def late_after(self) -> float | None:
        return _range_end(self.warning)


def _range_end(text: str | None) -> float | None:
    if not text:
        return None
    end = nagiosplugin.Range(text).end
    return end if end != float("inf") else None


def build_parser() -> cli.PluginArgumentParser:
    parser = cli.PluginArgumentParser(
        prog="check_mail_roundtrip",
        description="Send a probe message through every MX endpoint of a mail domain to an "
                    "address that forwards it to a mailbox; find it there (IMAP IDLE, POP3, "
                    "Maildir), time the loop end to end and hop by hop, read the receiving "
                    "side's Authentication-Results, delete it.")
    target = parser.add_argument_group("the loop")
    target.add_argument("-D", "--domain", type=cli.domain_name,
                        help="mail domain: one probe through every address of every MX "
                             "(required)")
    target.add_argument("--to", type=cli.recipient_address, metavar="ADDR",
                        help="the probe address on the domain, forwarded to the mailbox "
                             "(required)")
    target.add_argument("--from", dest="sender", type=cli.sender_address, metavar="ADDR",
                        help="envelope sender and From of the probes (default: the mailbox "
                             "user when it is an address)")
    target.add_argument("-p", "--port", type=cli.port_number, default=25,
                        help="MX port (default: 25)")
    cli.add_concurrency_option(target, "endpoints sent to (and DNS queries asked)")
    cli.add_family_options(target)
    cli.add_dns_options(target)
    target.add_argument("--helo-name", type=cli.helo_name, metavar="NAME",
                        help="name to announce in EHLO (default: this host's fully qualified "
                             "name)")

    box = parser.add_argument_group("the mailbox where the loop ends")
    box.add_argument("--mailbox", metavar="URL",
                     help="imap://USER@HOST[:PORT]/FOLDER, imaps://..., pop3://USER@HOST[:PORT],"
                          " pop3s://... or maildir:/PATH (required)")
    box.add_argument("--mailbox-password-file", metavar="FILE",
                     help=f"read the mailbox password from FILE (else from "
                          f"${MAILBOX_PASSWORD_ENV})")
    box.add_argument("--mailbox-auth", type=str.lower, default="password",
                     choices=("password", "oauth2", "xoauth2", "oauthbearer"),
                     help="log in with the password, or with an OAuth access token (the "
                          "--oauth2-* options) by the SASL mechanism the server offers "
                          "(oauth2) or the one named (default: password)")
    box.add_argument("--mailbox-ca-file", metavar="FILE",
                     help="PEM bundle of CAs for the mailbox's TLS (default: the system "
                          "trust store)")
    box.add_argument("--junk-folder", action="append", default=[], metavar="NAME",
                     help="a folder that counts as junk besides the special-use \\Junk folder"
                          " (repeatable; Maildir default: Junk)")
    box.add_argument("--no-idle", action="store_true",
                     help="poll even when the IMAP server offers IDLE")
    box.add_argument("--poll-interval", type=cli.positive_float, default=2.0,
                     metavar="SECONDS",
                     help="between looks at a mailbox without IDLE (default: 2)")

    submit = parser.add_argument_group("sending through a submission server")
    submit.add_argument("--submit", metavar="HOST[:PORT]",
                        help="send every probe through this server (port 587: STARTTLS, "
                             "465: implicit TLS) instead of each MX: no per-MX split")
    submit.add_argument("--sasl-user", metavar="USER", help="authentication identity")
    submit.add_argument("--sasl-mechanism", type=str.upper,
                        choices=("PLAIN", "LOGIN", "CRAM-MD5", *cli.OAUTH_SASL_MECHANISMS),
                        help="SASL mechanism (default with --sasl-user: PLAIN); XOAUTH2 and "
                             "OAUTHBEARER send an OAuth access token (the --oauth2-* options)")
    submit.add_argument("--sasl-password-file", metavar="FILE",
                        help=f"read the password from FILE (else from ${SASL_PASSWORD_ENV})")
    submit.add_argument("--ca-file", metavar="FILE",
                        help="PEM bundle of CAs for the submission server's certificate")

    limits = parser.add_argument_group("thresholds, states and modes")
    limits.add_argument("--state-file", metavar="FILE",
                        help="asynchronous mode: each run sends new probes and collects "
                             "those of earlier runs")
    cli.add_threshold_options(limits, what="the roundtrip of each probe, in seconds (a probe"
                              " older than the critical end is lost)",
                              warning=DEFAULT_WARNING, critical=DEFAULT_CRITICAL)
    cli.add_unreachable_option(limits)
    cli.add_common_options(limits, timeout=DEFAULT_TIMEOUT)
    cli.add_oauth_options(parser)
    parser.add_argument_group("OAuth 2.0 set-up (once, by a person)").add_argument(
        "--oauth2-authorize", nargs="?", const="", metavar="AUTH_URL",
        help="instead of a check: the authorisation-code grant (PKCE, loopback redirect) at "
             "AUTH_URL (default with --oauth2-tenant: Entra ID's); prints the URL to open, "
             "stores the refresh token in --oauth2-refresh-token-file (mode 0600)")
    return parser


def options_from(args) -> Options | str:
    """Options from parsed arguments, or a usage error message."""
    from check_smtp_posture.mailbox import parse_url
    from check_smtp_posture.secrets import SecretError, read_secret

    for needed, name in ((args.domain, "-D/--domain"), (args.to, "--to"),
                         (args.mailbox, "--mailbox")):
        if not needed:
            return f"{name} is required"
    try:
        spec = parse_url(args.mailbox)
    except ValueError as exc:
        return f"--mailbox {exc}"
    sender = args.sender
    if sender is None:
        if spec.user and "@" in spec.user:
            sender = spec.user
        else:
            return "--from is required when the mailbox user is no address"
    password = None
    mailbox_auth = args.mailbox_auth
    if mailbox_auth != "password":
        if spec.scheme == "maildir":
            return "--mailbox-auth is for IMAP and POP3 mailboxes"
        mailbox_auth = mailbox_auth.upper() if mailbox_auth != "oauth2" else "oauth2"
    elif spec.scheme != "maildir":
        try:
            password = read_secret(args.mailbox_password_file, MAILBOX_PASSWORD_ENV)
        except SecretError as exc:
            return f"--mailbox-password-file: {exc}"
        if password is None:
            return (f"the mailbox needs a password: --mailbox-password-file FILE or "
                    f"${MAILBOX_PASSWORD_ENV}")
    submit, sasl = None, None
    if args.submit:
        try:
            submit = _host_port(args.submit)
        except ValueError as exc:
            return f"--submit {exc}"
    if args.sasl_user:
        if not submit:
            return "--sasl-user needs --submit (an MX takes no AUTH from a stranger)"
        from check_smtp_posture.smtp.session import SaslCredentials

        secret, error = cli.sasl_secret(args, SASL_PASSWORD_ENV)
        if error:
            return error
        sasl = SaslCredentials(args.sasl_mechanism or "PLAIN", args.sasl_user, secret)
    elif args.sasl_mechanism or args.sasl_password_file:
        return "--sasl-mechanism and --sasl-password-file need --sasl-user"
    oauth = cli.oauth_settings(args, mailbox_auth != "password" or bool(
        sasl and sasl.mechanism in cli.OAUTH_SASL_MECHANISMS))
    if isinstance(oauth, str):
        return oauth
    from check_smtp_posture.userfiles import option_file_problem

    problem = option_file_problem((("--mailbox-ca-file", args.mailbox_ca_file),
                                   ("--ca-file", args.ca_file)), "CA file")
    if problem:
        return problem
    if args.state_file is not None and not args.state_file:
        return "--state-file: empty path"
    if args.ca_file and not submit:
        return "--ca-file is for --submit (probes to an MX use STARTTLS unverified, as MTAs do)"
    if args.no_idle and not spec.scheme.startswith("imap"):
        return "--no-idle is for IMAP mailboxes"
    for name, text in (("-w", args.warning), ("-c", args.critical)):
        if text and _range_end(text) is None:
            return f"{name} {text}: a roundtrip range needs an upper end (e.g. 60 or 10:60)"
    helo, helo_note = args.helo_name, None
    if helo is None:
        helo, helo_note = cli.default_helo_name(min(1.0, args.timeout / 10))
    return Options(
        domain=args.domain, to=args.to, sender=sender, mailbox=spec,
        mailbox_password=password, mailbox_auth=mailbox_auth, mailbox_ca_file=args.mailbox_ca_file,
        junk_folders=tuple(args.junk_folder), idle=not args.no_idle,
        poll_interval=args.poll_interval, submit=submit,
        submit_implicit_tls=bool(submit and submit[1] == SMTPS_PORT), sasl=sasl, oauth=oauth,
        ca_file=args.ca_file, state_file=args.state_file, port=args.port,
        family=args.family, dns_server=tuple(args.dns_server) if args.dns_server else None,
        query_timeout=args.query_timeout, concurrency=args.concurrency, helo_name=helo,
        helo_note=helo_note, unreachable_state=args.unreachable_state,
        warning=args.warning, critical=args.critical, verbose=args.verbose,
        timeout=args.timeout)


def _host_port(text: str) -> tuple:
    """--submit's HOST[:PORT] ([ADDR]:PORT for IPv6); ValueError with the reason."""
    import argparse

    host, number = text, None
    if text.startswith("["):  # [2001:db8::1]:587
        host, closed, rest = text[1:].partition("]")
        if not closed or (rest and not rest.startswith(":")):
            raise ValueError(f"{text!r}: not HOST[:PORT]")
        number = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, _, number = text.partition(":")
    try:
        port = cli.port_number(number) if number is not None else SUBMISSION_PORT
    except argparse.ArgumentTypeError:
        raise ValueError(f"{text!r}: the port is not a number from 1 to 65535") from None
    try:
        return cli.host_or_address(host), port
    except argparse.ArgumentTypeError:
        raise ValueError(f"{text!r}: not HOST[:PORT]") from None


# -- facts -------------------------------------------------------------------------


class ProbeOutcome:
    """What became of the probe through one endpoint (or of an earlier run's probe)."""

    __slots__ = ("label", "prefix", "status", "token", "sent", "roundtrip", "to_second",
                 "folder", "hops", "auth", "session", "matched", "age")

    def __init__(self, label: str, prefix: str, status: str, token: str | None = None,
                 sent: float | None = None):
        self.label = label
        self.prefix = prefix
        self.status = status
        self.token = token
        self.sent = sent
        self.roundtrip: float | None = None
        self.to_second = False  # the roundtrip ends at a time of whole seconds
        self.folder: str | None = None
        self.hops: list = []  # received.HopDelay, oldest first
        self.auth: list = []  # authresults.Verdict
        self.session = None  # the SessionResult of the sending
        self.matched: str | None = None
        self.age: float | None = None  # async: seconds since an unanswered probe was sent


class RoundTrip(nagiosplugin.Resource):
    def __init__(self, options: Options, deadline: Deadline):
        self.options = options
        self.deadline = deadline
        self.resolution: targets.Resolution | None = None
        self.outcomes: list[ProbeOutcome] = []
        self.mailbox_error = None
        self.token: str | None = None  # the OAuth access token of this run
        self.token_cached = False
        self.transcript: list = []  # the mailbox dialogue, for -vvv
        self.deleted = 0
        self.stale_deleted = 0
        self.first_run = False
        self.state_problem = None

    @property
    def name(self):
        return "MAIL_ROUNDTRIP"

    def probe(self):
        opts = self.options
        endpoints = self._endpoints()
        if self.resolution is not None:
            yield nagiosplugin.Metric("mx", self.resolution, context="mx")
        if not endpoints:
            return
        if opts.oauth is not None:
            error = self._get_token()
            yield nagiosplugin.Metric("oauth", error, context="oauth")
            if error is not None:  # nothing is sent that could not be collected
                return
        box = self._open_mailbox()
        if box is None:  # nothing is sent that could not be collected
            yield nagiosplugin.Metric("mailbox", self.mailbox_error, context="mailbox")
            return
        try:
            if opts.state_file:
                yield from self._asynchronous(box, endpoints)
            else:
                yield from self._synchronous(box, endpoints)
        finally:
            box.close()
        yield nagiosplugin.Metric("mailbox", self.mailbox_error, context="mailbox")
        yield nagiosplugin.Metric("mailbox_skipped", list(box.skipped),
                                  context="mailbox_skipped")

    # -- the two modes -------------------------------------------------------------
    def _synchronous(self, box, endpoints):
        sent = self._send(endpoints)
        pending = {o.token: o for o in sent if o.status == SENT}
        self._collect(box, pending, wait=True)
        for outcome in pending.values():
            if outcome.status == SENT:
                outcome.age = time.time() - outcome.sent
                # a mailbox that failed was not looked in: the probe is not known lost
                outcome.status = UNCHECKED if self.mailbox_error else LOST
        self.outcomes = sent
        yield from self._metrics()

    def _asynchronous(self, box, endpoints):
        from check_smtp_posture.nagios.statefile import StateFile

        opts = self.options
        with StateFile(opts.state_file, self.deadline) as state:
            earlier = self._load(state)
            self.first_run = not earlier and state.problem is None and not state.data.get(
                "seen")
            pending = {token: outcome for token, outcome in earlier.items()}
            self._collect(box, pending, wait=False)
            now = time.time()
            for outcome in pending.values():
                if outcome.status == SENT:
                    outcome.age = now - outcome.sent
                    lost = outcome.age > opts.lost_after and self.mailbox_error is None
                    outcome.status = LOST if lost else IN_FLIGHT
            # probes whose tokens cannot be kept could never be collected: none are sent
            sent = self._send(endpoints) if state.usable else []
            if state.usable:
                state.data["seen"] = True
                state.data[opts.domain] = {
                    o.token: {"label": o.label, "prefix": o.prefix, "sent": o.sent}
                    for o in list(pending.values()) + sent
                    if o.status in (SENT, IN_FLIGHT)}
        self.state_problem = state.problem
        self.outcomes = _latest_per_endpoint(list(pending.values()), sent)
        yield nagiosplugin.Metric("state_file", self.state_problem, context="state_file")
        yield from self._metrics()

    def _load(self, state) -> dict:
        entries = state.data.get(self.options.domain, {})
        if not isinstance(entries, dict):
            state.discard(self.options.domain, "not a table of probes")
            return {}
        earlier = {}
        for token, entry in entries.items():
            try:
                outcome = ProbeOutcome(str(entry["label"]), str(entry["prefix"]), SENT, token,
                                       float(entry["sent"]))
            except (KeyError, TypeError, ValueError):
                state.discard(self.options.domain, f"probe {token!r} is malformed")
                return {}
            earlier[token] = outcome
        return earlier

    # -- sending -----------------------------------------------------------------------
    def _endpoints(self) -> tuple:
        opts = self.options
        factory = lambda: cli.dns_client(opts, self.deadline)  # noqa: E731
        if opts.submit:
            host, port = opts.submit
            self.resolution = targets.resolve_target(host, None, factory, family=opts.family)
            return self.resolution.endpoints(port, host if not _is_literal(host) else None)
        self.resolution = targets.resolve_target(None, opts.domain, factory,
                                                 family=opts.family,
                                                 concurrency=opts.concurrency)
        return self.resolution.endpoints(opts.port, None)

    def _send(self, endpoints) -> list:
        from check_smtp_posture.fanout import each_endpoint

        opts = self.options
        prefixed = len(endpoints) > 1 or not opts.submit
        reserve = min(self.deadline.remaining() / 2, 15.0)  # the rest is for the wait

        def send(endpoint, deadline):
            from check_smtp_posture.smtp.session import run_session

            label = endpoint.label
            sent = time.time()
            token = probemail.new_token(sent)
            outcome = ProbeOutcome(label, endpoint.perf_prefix(prefixed), SENT, token, sent)
            message = probemail.build(token=token, domain=opts.domain, mx_label=label,
                                      sender=opts.sender, recipient=opts.to,
                                      helo_name=opts.helo_name, sent=sent)
            outcome.session = run_session(endpoint, self._plan(message), deadline)
            result = outcome.session
            if result.failure is not None or result.stopped is not None or \
                    result.withheld is not None or "body" not in result.replies:
                outcome.status = SEND_FAILED
            return outcome

        sending = self.deadline.share(reserve)
        return each_endpoint(endpoints, send, sending, opts.concurrency)

    def _plan(self, message: bytes):
        from check_smtp_posture.smtp.session import STARTTLS_AUTO, SessionPlan

        opts = self.options
        context = None
        if opts.submit:
            from check_smtp_posture.tls import verified_context

            context = lambda: verified_context(opts.ca_file)  # noqa: E731
        sasl = opts.sasl
        if sasl is not None and sasl.mechanism in cli.OAUTH_SASL_MECHANISMS:
            sasl = sasl._replace(password=self.token)
        return SessionPlan(helo_name=opts.helo_name, starttls=STARTTLS_AUTO,
                           implicit_tls=opts.submit_implicit_tls,
                           require_tls=opts.sasl is not None, tls_context=context,
                           sasl=sasl, mail_from=opts.sender, rcpt_to=(opts.to,),
                           send_data=True, message=message)

    # -- OAuth ---------------------------------------------------------------------------
    def _get_token(self):
        """Fetch (or take from the cache) the access token; the oauth.OAuthError, or None."""
        from check_smtp_posture import oauth

        try:
            self.token, self.token_cached = oauth.token_for_run(self.options.oauth,
                                                                self.options, self.deadline)
        except oauth.OAuthError as exc:
            return exc
        self.transcript.append(oauth.transcript_line(self.options.oauth, self.token_cached))
        return None

    # -- the mailbox -------------------------------------------------------------------
    def _open_mailbox(self):
        from check_smtp_posture import mailbox

        opts = self.options
        spec = opts.mailbox
        try:
            address = None
            if spec.host is not None and not _is_literal(spec.host):
                address = self._mailbox_address(spec.host)
            oauth = opts.mailbox_auth != mailbox.PASSWORD
            return mailbox.open_mailbox(
                spec, address=address, password=self.token if oauth else opts.mailbox_password,
                auth=opts.mailbox_auth,
                ca_file=opts.mailbox_ca_file, deadline=self.deadline,
                junk_folders=opts.junk_folders, idle=opts.idle,
                poll_interval=opts.poll_interval, transcript=self.transcript)
        except mailbox.MailboxError as exc:
            self.mailbox_error = exc
            return None

    def _mailbox_address(self, host: str) -> str:
        from check_smtp_posture.failures import CONNECT
        from check_smtp_posture.mailbox import MailboxError

        opts = self.options
        found = targets.resolve_hosts(cli.dns_client(opts, self.deadline), [host],
                                      family=opts.family)[0]
        addresses = found.addresses
        if not addresses:
            problem = found.targets[0].describe_problem() if found.targets else "no address"
            raise MailboxError(CONNECT, f"{host}: {problem}")
        return addresses[0]

    def _collect(self, box, pending: dict, *, wait: bool) -> None:
        """Find pending probes (and stale ones of ours); record, then delete them."""
        from check_smtp_posture.mailbox import MailboxError

        opts = self.options
        needle = probemail.header_needle(opts.domain)
        stale: dict = {}
        found: list = []
        try:
            while True:
                waiting = {t for t, o in pending.items() if o.status == SENT}
                for seen in box.scan(needle, waiting):
                    facts = probemail.facts(seen.header, seen.matched)
                    outcome = pending.get(facts.token)
                    if outcome is not None and outcome.status == SENT:
                        self._record(outcome, seen, facts)
                        found.append(seen)
                    elif outcome is None and self._stale(facts):
                        stale[seen.ref] = seen
                left = self.deadline.remaining() - CLEANUP_RESERVE
                if not wait or left <= 0 or not any(o.status == SENT for o in pending.values()):
                    break
                box.wait(left)
            self.deleted = box.delete(found) if found else 0
            self.stale_deleted = box.delete(list(stale.values())) if stale else 0
        except MailboxError as exc:
            self.mailbox_error = exc

    def _stale(self, facts) -> bool:
        """Our own probe of an earlier run: our domain and sender, older than lost."""
        opts = self.options
        sent = facts.sent
        return (facts.domain == opts.domain and facts.sender == opts.sender.lower()
                and sent is not None and time.time() - sent > opts.lost_after)

    def _record(self, outcome: ProbeOutcome, seen, facts) -> None:
        from check_smtp_posture import clock, received

        outcome.status = JUNK if seen.junk else BACK
        outcome.folder = seen.folder
        outcome.matched = seen.matched
        chain = received.hops(probemail.field_values(seen.header, "Received"))
        sent_at = clock.utc(outcome.sent)
        outcome.hops = received.hop_delays(chain, sent_at)
        arrival = None
        if self.options.state_file:  # found runs after it came: when the store took it
            if seen.arrived is not None:
                arrival = clock.utc(seen.arrived)
            elif chain and chain[-1].timestamp is not None:
                arrival = chain[-1].timestamp
        if arrival is None:
            outcome.roundtrip = seen.noticed - outcome.sent
        else:  # INTERNALDATE and Received: dates are to the second
            outcome.roundtrip = received.seconds_between(sent_at, arrival)
            outcome.to_second = arrival.microsecond == 0
        values = probemail.field_values(seen.header, "Authentication-Results")
        if values:
            from check_smtp_posture import authresults

            outcome.auth = authresults.verdicts(values)

    # -- metrics -------------------------------------------------------------------------
    def _metrics(self):
        from check_smtp_posture import received

        for outcome in self.outcomes:
            # one endpoint may have a lost probe and one that came back: two names
            kind = {LOST: "lost", SEND_FAILED: "send"}.get(outcome.status, "probe")
            yield nagiosplugin.Metric(outcome.prefix + kind, outcome, context="probe")
            if outcome.status in (BACK, JUNK) and outcome.roundtrip is not None:
                yield seconds(outcome.prefix + "roundtrip_time", max(0.0, outcome.roundtrip),
                              context="roundtrip")
                yield nagiosplugin.Metric(outcome.prefix + "hops", len(outcome.hops), min=0,
                                          context="default")
                slowest = received.slowest(outcome.hops)
                if slowest is not None and slowest.delay is not None:
                    yield seconds(outcome.prefix + "slowest_hop_time", max(0.0, slowest.delay),
                                  context="default")


def _latest_per_endpoint(earlier: list, sent: list) -> list:
    """What an asynchronous run reports: per endpoint, the newest probe that came back
    and the newest lost one; a probe in flight where none came back; this run's sending
    failures; and this run's probes where nothing else is known (the first run)."""

    def newest(outcomes, statuses):
        chosen: dict = {}
        for outcome in sorted(outcomes, key=lambda o: o.sent):
            if outcome.status in statuses:
                chosen[outcome.label] = outcome
        return chosen

    back = newest(earlier, (BACK, JUNK))
    lost = newest(earlier, (LOST,))
    flying = {label: o for label, o in newest(earlier, (IN_FLIGHT,)).items()
              if label not in back}
    known = set(back) | set(lost) | set(flying)
    return (list(back.values()) + list(lost.values()) + list(flying.values())
            + [o for o in sent if o.status == SEND_FAILED or o.label not in known])


def _is_literal(host: str) -> bool:
    from check_smtp_posture.names import is_ip_literal

    return is_ip_literal(host)


# -- contexts ------------------------------------------------------------------------


class ProbeContext(nagiosplugin.Context):
    """A probe that did not come back, landed in junk, or could not be sent."""

    def __init__(self, options: Options):
        super().__init__("probe")
        self.options = options

    def evaluate(self, metric, resource):
        outcome: ProbeOutcome = metric.value
        opts = self.options
        where = outcome.label
        if outcome.status == SEND_FAILED:
            return self._send_failure(outcome, metric)
        if outcome.status == JUNK:
            return self.result_cls(nagiosplugin.Warn, f"probe via {where} landed in junk "
                                   f"folder {printable(outcome.folder, 40)}", metric)
        if outcome.status == LOST:
            if opts.state_file:
                return self.result_cls(nagiosplugin.Critical, f"probe via {where} lost: not "
                                       f"back after {outcome.age:.0f}s", metric)
            return self.result_cls(nagiosplugin.Critical, f"probe via {where} not back "
                                   f"within {outcome.age:.1f}s", metric)
        if outcome.status == IN_FLIGHT and opts.late_after is not None \
                and outcome.age > opts.late_after:
            return self.result_cls(nagiosplugin.Warn, f"probe via {where} not back after "
                                   f"{outcome.age:.0f}s", metric)
        return self.result_cls(nagiosplugin.Ok, "", metric)

    def _send_failure(self, outcome, metric):
        result = outcome.session
        where = outcome.label
        if result.failure is not None:
            exc = result.failure
            return self.result_cls(states.failure_state(exc.kind, self.options.unreachable_state),
                                   f"sending via {where} {exc.phase}: {one_line(exc.detail)}",
                                   metric)
        if result.withheld is not None:
            return self.result_cls(nagiosplugin.Critical, f"sending via {where}: no TLS, so "
                                   "the password was not sent", metric)
        phase = result.stopped or "data"
        reply = result.replies.get(phase)
        if phase == "rcpt" and result.rcpt_replies:
            reply = result.rcpt_replies[-1][1]
        said = one_line(str(reply), 80) if reply is not None else "not offered"
        return self.result_cls(nagiosplugin.Critical, f"sending via {where} refused at "
                               f"{phase}: {said}", metric)


class MailboxContext(nagiosplugin.Context):
    """The mailbox could not be used: unreachable (--unreachable-state), else CRITICAL."""

    def __init__(self, options: Options):
        super().__init__("mailbox")
        self.options = options

    def evaluate(self, metric, resource):
        error = metric.value
        if error is None:
            return self.result_cls(nagiosplugin.Ok, "", metric)
        label = self.options.mailbox.label
        state = states.failure_state(error.kind, self.options.unreachable_state)
        return self.result_cls(state, f"mailbox {label}: {one_line(error.detail, 120)}", metric)


class SkippedContext(nagiosplugin.Context):
    """Entries of the mailbox that are no message it can read (a named pipe, a symbolic
    link loop in a Maildir): skipped, never opened; WARNING, since a probe could hide
    behind such a store."""

    def __init__(self, options: Options):
        super().__init__("mailbox_skipped")
        self.options = options

    def evaluate(self, metric, resource):
        skipped = metric.value
        if not skipped:
            return self.result_cls(nagiosplugin.Ok, "", metric)
        more = f" (+{len(skipped) - 1} more)" if len(skipped) > 1 else ""
        return self.result_cls(nagiosplugin.Warn, f"mailbox {self.options.mailbox.label}: "
                                                  f"{one_line(skipped[0], 120)}, skipped{more}",
                               metric)


# -- summary ---------------------------------------------------------------------------


class RoundTripSummary(FamilySummary):
    def __init__(self, resource: RoundTrip):
        super().__init__(resource.options.verbose)
        self.resource = resource

    def headline(self, results):
        res = self.resource
        outcomes = res.outcomes
        if not outcomes:
            return ""
        opts = res.options
        back = [o for o in outcomes if o.status == BACK]
        labels = {o.label for o in outcomes}
        through = f"through {opts.submit[0]} (submission: no per-MX split)" \
            if opts.submit else f"via {len(labels)} MX endpoints of {opts.domain}" \
            if len(labels) > 1 else f"via {outcomes[0].label}"
        if opts.state_file and not back:
            flying = sum(o.status in (SENT, IN_FLIGHT) for o in outcomes)
            if res.first_run:
                return f"first run: {flying} probes sent {through}, results on the next run"
            return f"{flying} probes in flight {through}"
        slowest = max(back, key=lambda o: o.roundtrip) if back else None
        if len(outcomes) == 1 and slowest is not None:
            return f"probe back {through} {_with_note(*took(slowest, 'in '))}, " \
                   f"{len(slowest.hops)} hops"
        count = f"{len(back)} probes" if len(back) == len(outcomes) else \
            f"{len(back)} of {len(outcomes)} probes"
        if slowest is None:
            return f"no probe back {through}"
        return f"{count} back {through}, slowest {slowest.label} " \
               f"{_with_note(*took(slowest))}"

    def details(self, results):
        res = self.resource
        lines = []
        if res.options.helo_note:
            lines.append(f"note: {res.options.helo_note}")
        if res.options.submit:
            lines.append("note: sent through submission, so the probe's MX is the domain's "
                         "choice: no per-MX result")
        for outcome in res.outcomes:
            lines.extend(describe_outcome(outcome, self.verbosity))
        if res.deleted or res.stale_deleted:
            lines.append(f"mailbox {res.options.mailbox.label}: deleted {res.deleted} "
                         f"probe(s) found" + (f" and {res.stale_deleted} stale probe(s) of "
                                              "earlier runs" if res.stale_deleted else ""))
        if self.verbosity >= 3 and res.transcript:
            lines.append("mailbox dialogue:")
            lines.extend("  " + printable(line, 200) for line in res.transcript)
        return lines


def took(outcome: ProbeOutcome, lead: str = "") -> tuple:
    """(how long the probe took, a note on it or None), never a negative time.

    `lead` ("in ") goes before a duration. An arrival dated to the second (IMAP
    INTERNALDATE, a Received date) in the second the probe was sent in is
    "within 1s"; one dated before that second is the clocks' doing.
    """
    seconds = outcome.roundtrip
    if not outcome.to_second:
        return f"{lead}{seconds:.3f}s", None
    if seconds < 0:
        return f"dated {-seconds:.0f}s before it was sent", "clock skew"
    if seconds < 1:
        return "within 1s", "the mailbox dates arrivals to the second"
    return f"{lead}{seconds:.0f}s", None


def _with_note(text: str, note: str | None) -> str:
    return f"{text} ({note})" if note else text


def describe_outcome(outcome: ProbeOutcome, verbosity: int) -> list:
    from check_smtp_posture import received

    head = f"{outcome.label}: {outcome.status}"
    if outcome.status in (BACK, JUNK) and outcome.roundtrip is not None:
        text, note = took(outcome, "in ")
        head += f" {text} ({printable(outcome.folder or '', 40)}"
        head += f"; {note}" if note else ""
        head += ", found by the token in the text)" if outcome.matched != "header" else ")"
        head += f", {len(outcome.hops)} hops"
        skewed = [d for d in outcome.hops if d.skewed]
        if skewed:
            head += f", clock skew at {len(skewed)} hop(s)"
    elif outcome.age is not None:
        head += f" ({outcome.age:.0f}s since sent)"
    lines = [head]
    if outcome.auth:
        from check_smtp_posture import authresults

        lines.append("  Authentication-Results: " + printable(authresults.describe(outcome.auth),
                                                              200))
    if verbosity >= 2:
        for delay in outcome.hops:
            lines.append("  hop " + received.describe_hop(delay))
    if verbosity >= 3 and outcome.session is not None:
        lines.append("  SMTP transcript:")
        lines.extend("    " + line for line in outcome.session.transcript.lines())
    return lines


# -- main ----------------------------------------------------------------------------


def build_check(options: Options, deadline: Deadline) -> nagiosplugin.Check:
    resource = RoundTrip(options, deadline)
    return runner.new_check(
        resource,
        MxContext(unreachable=options.unreachable_state),
        ProbeContext(options),
        MailboxContext(options),
        OAuthContext(options.mailbox.label if options.mailbox_auth != "password"
                     else f"{options.sasl.user} at {options.submit[0]}" if options.sasl
                     else "", options.unreachable_state),
        SkippedContext(options),
        StateFileContext(),
        TimeContext("roundtrip", warning=options.warning, critical=options.critical),
        RoundTripSummary(resource),
        name="MAIL_ROUNDTRIP")


def authorize(parser, args) -> int | None:
    """--oauth2-authorize: the one-time grant that gives the refresh token (oauth.authorize),
    within -t; None when not asked for."""
    if args.oauth2_authorize is None:
        return None
    import os

    from check_smtp_posture import oauth
    from check_smtp_posture.deadline import Deadline
    from check_smtp_posture.secrets import Redactor

    url = args.oauth2_authorize
    if not url and args.oauth2_tenant:
        url = oauth.ENTRA_AUTHORIZE_URL.format(tenant=args.oauth2_tenant)
    try:
        oauth.check_token_url(url or "")
    except ValueError as exc:
        return parser.usage_error(f"--oauth2-authorize: the authorisation endpoint {exc}")
    path = args.oauth2_refresh_token_file
    if not path:
        return parser.usage_error("--oauth2-authorize needs --oauth2-refresh-token-file FILE "
                                  "(where the refresh token goes)")
    try:  # the file the token goes into, readable by its owner only, from the start
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW, 0o600))
    except OSError as exc:
        return parser.usage_error(f"--oauth2-refresh-token-file {path}: {exc.strerror}")
    settings = cli.oauth_settings(args, True)
    if isinstance(settings, str):
        return parser.usage_error(settings)
    deadline = Deadline(args.timeout)
    try:
        oauth.authorize(settings, url, deadline, oauth.run_resolver(args, deadline),
                        Redactor(), lambda link: print(
                            f"Open this URL in a browser on this machine and sign in:\n{link}",
                            flush=True))
    except oauth.OAuthError as exc:
        print(f"OAuth authorisation failed: {one_line(exc.detail, 200)}")
        return 2
    print(f"Authorised: the refresh token is in {path} (mode 0600).")
    return 0


def main(argv=None) -> int:
    return runner.plugin_main(argv, build_parser, options_from, build_check, authorize)


def console_main() -> None:
    runner.console(main)


if __name__ == "__main__":
    console_main()
