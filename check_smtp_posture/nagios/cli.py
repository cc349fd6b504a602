"""Command-line conventions shared by every plugin of the family.

A usage error must read as UNKNOWN (exit 3), not argparse's exit 2, which
Nagios and Icinga would show as CRITICAL.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import sys
from collections import namedtuple

from check_smtp_posture import __version__, names
from check_smtp_posture.nagios import states

UNKNOWN_EXIT = 3


class PluginArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors print to stdout and exit 3."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("-V", "--version", action="version",
                          version=f"%(prog)s {__version__}")

    def error(self, message):  # argparse calls this for every usage error
        sys.exit(self.usage_error(message))

    def usage_error(self, message: str) -> int:
        """Usage and `message` on stdout; the exit code for a usage error (3).

        For arguments that parse but contradict each other, found after parsing.
        """
        self.print_usage(sys.stdout)
        print(f"{self.prog}: error: {message}")
        return UNKNOWN_EXIT


def parse(parser: argparse.ArgumentParser, argv=None):
    """Parse `argv`; returns the namespace, or the exit code when parsing ended the run.

    `--help` and `--version` end it with 0, a usage error with 3; `main()`
    returns that code instead of raising SystemExit, so tests can call it.
    """
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else UNKNOWN_EXIT


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be greater than zero: {text!r}")
    return value


#: the longest -t taken: a day (the last-resort alarm cannot be armed for much longer)
MAX_TIMEOUT = 86400.0


def timeout_seconds(text: str) -> float:
    """-t: a finite number of seconds, more than zero, at most MAX_TIMEOUT."""
    value = positive_float(text)
    if value > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_TIMEOUT:g} seconds: {text!r}")
    return value


def smtp_line(text: str) -> str:
    """Text sent as one SMTP command line: UTF-8, no line break, no NUL, not empty."""
    if any(ch in text for ch in "\r\n\0"):
        raise argparse.ArgumentTypeError(f"a line break or NUL in a command line: {text!r}")
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty command line")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # argv bytes that are no UTF-8 (surrogate escapes)
        raise argparse.ArgumentTypeError(f"not UTF-8 text: {text!r}") from None
    return text


def whole_number(minimum: int):
    """An argparse type: a whole number of at least `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}: {text!r}")
        return value

    return parse


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"port out of range 1-65535: {text!r}")
    return value


def nagios_range(text: str) -> str:
    """Validate Nagios range syntax (`10`, `10:`, `~:10`, `@10:20`) at parse time."""
    import nagiosplugin

    try:
        nagiosplugin.Range(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad threshold range {text!r}: {exc}") from None
    return text


def ip_address(text: str) -> str:
    """An IPv4 or IPv6 address; IPv4-mapped IPv6 (::ffff:192.0.2.1) is the IPv4 address."""
    try:
        return names.plain_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an IP address: {text!r}") from None


def host_name(text: str) -> str:
    """A DNS name a host can have, normalised (lower case, no root dot)."""
    if not names.is_hostname(text):
        raise argparse.ArgumentTypeError(f"bad host name {text!r}")
    return names.normalize(text)


def host_or_address(text: str) -> str:
    """-H: an IP address (optionally in brackets) or a host name."""
    try:
        return names.plain_address(text.strip().strip("[]"))
    except ValueError:
        return host_name(text)


def domain_name(text: str) -> str:
    """A mail domain: a host name of at least two labels (RFC 7208 §4.3 asks that too)."""
    if not names.is_hostname(text) or "." not in names.normalize(text):
        raise argparse.ArgumentTypeError(f"bad domain name {text!r}")
    return names.normalize(text)


def parsed(parse, text: str, *args, **kwargs):
    """`parse(text, ...)` as an argparse type: its ValueError, with its message, is the
    usage error."""
    try:
        return parse(text, *args, **kwargs)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def sender_address(text: str) -> str:
    """MAIL FROM: `<>` or '' (the null sender), `<addr>` or `addr`; returned bare."""
    from check_smtp_posture.smtp.address import envelope_address

    return parsed(envelope_address, text, null=True)


def spf_sender(text: str) -> str:
    """check_spf --sender: an address, or a domain alone (`domain`, `@domain`) whose
    local part is then "postmaster" (RFC 7208 §4.3)."""
    if "@" not in text.lstrip("@") and text.strip() not in ("", "<>"):
        return f"postmaster@{domain_name(text.lstrip('@'))}"
    return sender_address(text)


def recipient_address(text: str) -> str:
    """RCPT TO: `<addr>` or `addr` (or `postmaster`); returned bare."""
    from check_smtp_posture.smtp.address import envelope_address

    return parsed(envelope_address, text, null=False)


def header_address(text: str) -> str:
    """--header-from: one address for the From field, `addr` or `Name <addr>`."""
    from check_smtp_posture.smtp.message import header_address as parse

    return parsed(parse, text)


def helo_name(text: str) -> str:
    """--helo-name: a host name, or an address literal such as [192.0.2.1]."""
    from check_smtp_posture.smtp.address import address_literal

    if address_literal(text) or names.is_hostname(text):
        return text if text.startswith("[") else names.normalize(text)
    raise argparse.ArgumentTypeError(f"not a host name or [address] literal: {text!r}")


def default_helo_name(wait: float = 1.0) -> tuple[str, str | None]:
    """This host's name for EHLO, and a note for the long output when it is not an FQDN.

    Receivers expect a fully qualified name (RFC 5321 §4.1.1.1). socket.getfqdn()
    may ask DNS, so it gets `wait` seconds; the short name is the fallback.
    """
    import socket
    import threading

    found: list[str] = []
    asker = threading.Thread(target=lambda: found.append(_fqdn()), daemon=True)
    asker.start()
    asker.join(wait)
    fqdn = names.normalize(found[0]) if found else ""
    if "." in fqdn and names.is_hostname(fqdn) and not fqdn.startswith("localhost"):
        return fqdn, None
    short = socket.gethostname() or "localhost"
    if not names.is_hostname(short):
        short = "localhost"
    return short, (f"EHLO name {short!r} is not fully qualified (this system knows no FQDN); "
                   "receivers may refuse it: set --helo-name")


def _fqdn() -> str:
    """socket.getfqdn() of this host, without loading the idna codec for an ASCII name.

    getfqdn() hands the name to gethostbyaddr(), which runs a str through the idna
    codec (2.5 ms of imports per run); bytes go as they are.
    """
    import socket

    name: str | bytes = socket.gethostname()
    if name.isascii():
        name = name.encode("ascii")
    found = socket.getfqdn(name)
    return found.decode("ascii") if isinstance(found, bytes) else found


def dns_server(text: str) -> tuple[str, int]:
    """Parse ADDR[:PORT]; an IPv6 address with a port is written [ADDR]:PORT."""
    addr, port = text, 53
    if text.startswith("["):
        addr, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise argparse.ArgumentTypeError(f"bad DNS server {text!r}")
            port = port_number(rest[1:])
    elif text.count(":") == 1:
        addr, port_text = text.split(":")
        port = port_number(port_text)
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"DNS server must be an IP address[:port]: {text!r}") from None
    return addr, port


def add_common_options(parser: argparse.ArgumentParser, *, timeout: float = 10.0) -> None:
    """-t and -v, which every plugin has."""
    parser.add_argument("-t", "--timeout", type=timeout_seconds, default=timeout,
                        metavar="SECONDS",
                        help=f"budget for the whole check (default: {timeout:g})")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more detail in the long output; -vvv shows the transcript")


def add_dns_options(parser: argparse.ArgumentParser) -> None:
    """--dns-server and --query-timeout: where DNS questions go and how long one may take."""
    parser.add_argument("--dns-server", type=dns_server, action="append", default=None,
                        metavar="ADDR[:PORT]",
                        help="ask this DNS server (repeatable; default: the system resolver)")
    parser.add_argument("--query-timeout", type=positive_float, metavar="SECONDS",
                        help="cap for a single DNS query (default: half of -t)")


def add_helo_option(parser: argparse.ArgumentParser, command: str = "EHLO") -> None:
    """--helo-name: what a plugin that speaks SMTP announces (CommonOptions.helo_name)."""
    parser.add_argument("--helo-name", type=helo_name, metavar="NAME",
                        help=f"name to announce in {command} (default: this host's fully "
                             "qualified name)")


def add_baseline_options(parser, remembered: str, change: str) -> None:
    """--state-file and --accept-changes: the family's acknowledged change. The run
    remembers `remembered` as a baseline; `change` from it is a WARNING on every run
    until one run with --accept-changes records the new one (check_mx_sanity's MX set,
    check_dmarc's policy)."""
    parser.add_argument("--state-file", metavar="PATH",
                        help=f"remember {remembered} here; {change} is a WARNING until "
                             "--accept-changes")
    parser.add_argument("--accept-changes", action="store_true",
                        help=f"record the current {remembered.removeprefix('the ')} as the "
                             "new baseline in --state-file")


def add_unreachable_option(parser: argparse.ArgumentParser) -> None:
    """The family's one name for "the target cannot be reached or resolved"."""
    parser.add_argument("--unreachable-state", choices=states.FAILURE_NAMES,
                        default="critical",
                        help="state when the target cannot be reached or resolved: DNS "
                             "failure or timeout, refused or timed-out connection, no time "
                             "left (default: critical)")


def add_transient_option(parser: argparse.ArgumentParser, what: str) -> None:
    """The family's one name for "the server said: try again later" (a 4xx reply)."""
    parser.add_argument("--transient-state", choices=states.NAMES, default="warning",
                        help=f"state for {what} (default: warning)")


#: endpoints probed, or DNS queries asked, at once: 16 MX endpoints (and the A and AAAA
#: questions about 16 MX hosts) fit in one wave
DEFAULT_CONCURRENCY = 32


def add_concurrency_option(parser: argparse.ArgumentParser, what: str,
                           default: int = DEFAULT_CONCURRENCY) -> None:
    parser.add_argument("--concurrency", type=whole_number(1), default=default,
                        metavar="N", help=f"{what} at once (default: {default})")


def dns_client(args, deadline, *, dnssec: bool = False):
    """The run's DnsClient from --dns-server and --query-timeout (default: half of -t)."""
    from check_smtp_posture.dnslookup import DnsClient

    return DnsClient(deadline, args.dns_server,
                     query_cap=args.query_timeout or args.timeout / 2, dnssec=dnssec)


def add_family_options(parser: argparse.ArgumentParser) -> None:
    family = parser.add_mutually_exclusive_group()
    family.add_argument("-4", dest="family", action="store_const", const=4,
                        help="use IPv4 addresses only")
    family.add_argument("-6", dest="family", action="store_const", const=6,
                        help="use IPv6 addresses only")


def add_threshold_options(parser: argparse.ArgumentParser, *, what: str,
                          warning: str | None = None, critical: str | None = None) -> None:
    parser.add_argument("-w", "--warning", type=nagios_range, default=warning,
                        metavar="RANGE", help=f"warning range for {what}"
                        + (f" (default: {warning})" if warning else ""))
    parser.add_argument("-c", "--critical", type=nagios_range, default=critical,
                        metavar="RANGE", help=f"critical range for {what}"
                        + (f" (default: {critical})" if critical else ""))


class CommonOptions(namedtuple("CommonOptions", (
        "family",  # 4 or 6 (-4, -6), None for both
        "dns_server",  # tuple of (address, port) (--dns-server), None: the system resolver
        "query_timeout",  # --query-timeout, None: half of -t
        "concurrency",
        "helo_name",  # the EHLO name (--helo-name, else this host's name when asked for)
        "helo_note",  # why the default EHLO name may be refused, or None
        "unreachable_state", "warning", "critical", "verbose", "timeout",
        "perfdata_per_endpoint"))):  # --perfdata-per-endpoint (add_perfdata_option), else False
    """The family's common options, parsed: the first fields of every plugin's Options.

    A plugin declares its Options as a named tuple of these fields and its own,
    `namedtuple("Options", cli.CommonOptions._fields + (...))`, and builds it as
    `Options(*cli.common_options(args), own=...)`: `options.timeout` and
    `options.family` read the same in every plugin. An option a plugin does not
    have is None. (Named tuples, not dataclasses: tests/test_import_budget.py.)
    """

    __slots__ = ()


def common_options(args, *, default_helo: bool = False) -> CommonOptions:
    """The common options of the parsed arguments `args`.

    With `default_helo`, a missing --helo-name becomes this host's name (and its
    note); that may ask DNS, so a plugin calls this once its usage errors are out.
    """
    helo_name, helo_note = getattr(args, "helo_name", None), None
    if helo_name is None and default_helo:
        helo_name, helo_note = default_helo_name(min(1.0, args.timeout / 10))
    return CommonOptions(
        family=getattr(args, "family", None),
        dns_server=tuple(args.dns_server) if args.dns_server else None,
        query_timeout=args.query_timeout, concurrency=getattr(args, "concurrency", None),
        helo_name=helo_name, helo_note=helo_note, unreachable_state=args.unreachable_state,
        warning=getattr(args, "warning", None), critical=getattr(args, "critical", None),
        verbose=args.verbose, timeout=args.timeout,
        perfdata_per_endpoint=getattr(args, "perfdata_per_endpoint", False))


#: where a client secret comes from when no file is named
OAUTH_SECRET_ENV = "CHECK_OAUTH2_CLIENT_SECRET"


def add_oauth_options(parser: argparse.ArgumentParser) -> None:
    """How to get an OAuth 2.0 access token for the SASL OAuth mechanisms (oauth.py)."""
    group = parser.add_argument_group(
        "OAuth 2.0 (for XOAUTH2/OAUTHBEARER; needs the [oauth] extra)")
    endpoint = group.add_mutually_exclusive_group()
    endpoint.add_argument("--oauth2-token-url", metavar="URL",
                          help="the IdP's token endpoint (https://...)")
    endpoint.add_argument("--oauth2-tenant", metavar="TENANT",
                          help="a Microsoft Entra ID tenant (id or domain): its token "
                               "endpoint")
    group.add_argument("--oauth2-client-id", metavar="ID", help="the OAuth client id")
    group.add_argument("--oauth2-client-secret-file", metavar="FILE",
                       help=f"read the client secret from FILE (else from ${OAUTH_SECRET_ENV}"
                            "; a refresh-token grant may do without)")
    group.add_argument("--oauth2-scope", metavar="SCOPE",
                       help="scope asked for (e.g. https://outlook.office365.com/.default, "
                            "https://mail.google.com/)")
    group.add_argument("--oauth2-refresh-token-file", metavar="FILE",
                       help="refresh-token grant with the token in FILE (rotated tokens are "
                            "written back); default: the client-credentials grant")
    group.add_argument("--oauth2-token-cache", metavar="FILE",
                       help="keep the access token in FILE (mode 0600) until shortly before "
                            "it expires")
    group.add_argument("--oauth2-ca-file", metavar="FILE",
                       help="PEM bundle of CAs for the token endpoint (default: the system "
                            "trust store)")


#: the SASL mechanisms that send an OAuth access token (sasl.py), not a password
OAUTH_SASL_MECHANISMS = ("XOAUTH2", "OAUTHBEARER")


#: where the SASL password comes from when no file is named
SASL_PASSWORD_ENV = "CHECK_SMTP_PASSWORD"


def add_sasl_options(group) -> None:
    """--sasl-user, --sasl-mechanism and --sasl-password-file: AUTH to an SMTP server."""
    group.add_argument("--sasl-user", metavar="USER", help="authentication identity")
    group.add_argument("--sasl-mechanism", type=str.upper,
                       choices=("PLAIN", "LOGIN", "CRAM-MD5", *OAUTH_SASL_MECHANISMS),
                       help="authenticate with this mechanism (default with --sasl-user: "
                            "PLAIN); XOAUTH2 and OAUTHBEARER send an OAuth access token (the "
                            "--oauth2-* options)")
    group.add_argument("--sasl-password-file", metavar="FILE",
                       help=f"read the password from FILE (else from ${SASL_PASSWORD_ENV})")


def sasl_credentials(args, authzid: str = ""):
    """The run's smtp.session.SaslCredentials for --sasl-user, with --sasl-mechanism
    (default PLAIN) and the password from --sasl-password-file or $CHECK_SMTP_PASSWORD
    ("" for an OAuth mechanism, whose access token the run fetches); or a usage error."""
    from check_smtp_posture.secrets import SecretError, read_secret
    from check_smtp_posture.smtp.session import SaslCredentials

    mechanism = args.sasl_mechanism or "PLAIN"
    if mechanism in OAUTH_SASL_MECHANISMS:
        if args.sasl_password_file:
            return f"--sasl-mechanism {mechanism} sends a token, not a password"
        secret = ""
    else:
        try:
            secret = read_secret(args.sasl_password_file, SASL_PASSWORD_ENV)
        except SecretError as exc:
            return f"--sasl-password-file: {exc}"
        if secret is None:
            return f"SASL needs a password: --sasl-password-file FILE or ${SASL_PASSWORD_ENV}"
    return SaslCredentials(mechanism, args.sasl_user, secret, authzid)


def oauth_settings(args, needed: bool):
    """The run's oauth.OAuthSettings (None when not `needed`), or a usage error message."""
    given = [name for name in ("token_url", "tenant", "client_id", "client_secret_file",
                               "scope", "refresh_token_file", "token_cache", "ca_file")
             if getattr(args, f"oauth2_{name}") is not None]
    if not needed:
        if given:
            return (f"--oauth2-{given[0].replace('_', '-')} is for an OAuth mechanism "
                    "(XOAUTH2, OAUTHBEARER)")
        return None
    from check_smtp_posture import oauth
    from check_smtp_posture.secrets import SecretError, read_secret
    from check_smtp_posture.userfiles import option_file_problem

    url = args.oauth2_token_url
    if args.oauth2_tenant is not None:
        if not names.is_hostname(args.oauth2_tenant) and not args.oauth2_tenant.replace(
                "-", "").isalnum():
            return f"--oauth2-tenant: not a tenant id or domain: {args.oauth2_tenant!r}"
        url = oauth.ENTRA_TOKEN_URL.format(tenant=args.oauth2_tenant)
    if url is None:
        return "OAuth needs --oauth2-token-url URL or --oauth2-tenant TENANT"
    try:
        oauth.check_token_url(url)
    except ValueError as exc:
        return f"--oauth2-token-url {exc}"
    if not args.oauth2_client_id:
        return "OAuth needs --oauth2-client-id"
    try:
        secret = read_secret(args.oauth2_client_secret_file, OAUTH_SECRET_ENV)
    except SecretError as exc:
        return f"--oauth2-client-secret-file: {exc}"
    if secret is None and args.oauth2_refresh_token_file is None:
        return ("the client-credentials grant needs a client secret: "
                f"--oauth2-client-secret-file FILE or ${OAUTH_SECRET_ENV}")
    problem = option_file_problem((("--oauth2-refresh-token-file",
                                    args.oauth2_refresh_token_file),
                                   ("--oauth2-ca-file", args.oauth2_ca_file)), "file")
    if problem:
        return problem
    if args.oauth2_token_cache == "":
        return "--oauth2-token-cache: empty path"
    return oauth.OAuthSettings(url, args.oauth2_client_id, secret, args.oauth2_scope,
                               args.oauth2_refresh_token_file, args.oauth2_token_cache,
                               args.oauth2_ca_file)


def add_perfdata_option(parser: argparse.ArgumentParser) -> None:
    """The family's one name for per-endpoint perfdata (nagios/perfdata.py): by default
    a run over several endpoints reports the worst value per metric."""
    parser.add_argument("--perfdata-per-endpoint", action="store_true",
                        help="perfdata for every endpoint too, labelled by its key "
                             "(MX name, address family, position: mx1_example_com_v4_1_...); "
                             "default: the worst value per metric over all endpoints")
