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
failure if any; roundtrip_probe.py); the Contexts judge and RoundTripSummary
phrases (roundtrip_contexts.py). This module: the options and main().
"""

from __future__ import annotations

from collections import namedtuple

import nagiosplugin

from check_smtp_posture.deadline import Deadline
from check_smtp_posture.nagios import cli, runner
from check_smtp_posture.nagios.contexts import (
    MxContext,
    OAuthContext,
    StateFileContext,
    TimeContext,
    per_endpoint_contexts,
)
from check_smtp_posture.plugins.roundtrip_contexts import (
    MailboxContext,
    ProbeContext,
    RoundTripSummary,
    SkippedContext,
)
from check_smtp_posture.plugins.roundtrip_probe import RoundTrip
from check_smtp_posture.sanitize import one_line

NAME = "MAIL_ROUNDTRIP"
MAILBOX_PASSWORD_ENV = "CHECK_MAILBOX_PASSWORD"
DEFAULT_TIMEOUT = 60.0
DEFAULT_WARNING, DEFAULT_CRITICAL = "60", "300"
SUBMISSION_PORT, SMTPS_PORT = 587, 465


# -- configuration ---------------------------------------------------------------


class Options(namedtuple("Options", cli.CommonOptions._fields + (
        "domain", "to", "sender",
        "mailbox",  # mailbox.MailboxSpec
        "mailbox_password",
        "mailbox_auth",  # mailbox.PASSWORD, mailbox.OAUTH or an OAuth SASL mechanism
        "mailbox_ca_file", "junk_folders", "idle", "poll_interval",
        "submit",  # (host, port) or None
        "submit_implicit_tls",
        "sasl",  # smtp.session.SaslCredentials or None
        "oauth",  # oauth.OAuthSettings or None
        "ca_file", "state_file", "port"))):
    """What the run was asked to do, parsed and checked (cli.CommonOptions first)."""

    __slots__ = ()

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
    cli.add_helo_option(target)

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
    cli.add_sasl_options(submit)
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
    cli.add_perfdata_option(limits)
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
        sasl = cli.sasl_credentials(args)
        if isinstance(sasl, str):
            return sasl
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
    return Options(
        *cli.common_options(args, default_helo=True), domain=args.domain, to=args.to,
        sender=sender, mailbox=spec, mailbox_password=password, mailbox_auth=mailbox_auth,
        mailbox_ca_file=args.mailbox_ca_file, junk_folders=tuple(args.junk_folder),
        idle=not args.no_idle, poll_interval=args.poll_interval, submit=submit,
        submit_implicit_tls=bool(submit and submit[1] == SMTPS_PORT), sasl=sasl, oauth=oauth,
        ca_file=args.ca_file, state_file=args.state_file, port=args.port)


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


# -- main ----------------------------------------------------------------------------


def build_check(options: Options, deadline: Deadline) -> nagiosplugin.Check:
    resource = RoundTrip(options, deadline)
    roundtrip = TimeContext("roundtrip", warning=options.warning, critical=options.critical)
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
        roundtrip,
        *per_endpoint_contexts([roundtrip]),
        RoundTripSummary(resource),
        name=NAME)


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


main, console_main = runner.entry_points(build_parser, options_from, build_check, authorize)


if __name__ == "__main__":
    console_main()
