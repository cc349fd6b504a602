"""Where a round-trip probe comes back: an IMAP, POP3 or Maildir mailbox.

`open_mailbox(spec, ...)` gives a client with one interface whatever the store:

- `scan(header, texts)` looks once: every message whose header field
  `header[0]` contains `header[1]` (the probe header of one domain), and every
  message that holds one of `texts` (probe tokens) anywhere, headers first,
  then the body (forwarders rewrite or drop header fields). Junk folders are
  scanned too and say so.
- `wait(seconds)` blocks until the store may have changed: IMAP IDLE returns on
  the server's EXISTS, everything else sleeps the poll interval.
- `delete(seen)` removes exactly the messages given, never anything else.
- `skipped` says, one line each, what the looks found in the store that is no
  message they could read (a named pipe or a symbolic link loop in a Maildir).

Failures are `MailboxError`s whose `kind` says what the plugin reports:
connect/timeout (the mailbox cannot be reached), tls, login, folder, protocol
(garbage, or a reset or hang-up once connected).
"""

from __future__ import annotations

from collections import namedtuple
from urllib.parse import unquote, urlsplit

from check_smtp_posture import names
from check_smtp_posture.failures import CONNECT, LOGIN, PROTOCOL, TIMEOUT, TLS

SCHEMES = {"imap": 143, "imaps": 993, "pop3": 110, "pop3s": 995, "maildir": None}
#: the headers of a message read for the search are capped at this many bytes
HEADER_CAP = 64 * 1024
#: a message body read for the token search is capped at this many bytes
BODY_CAP = 256 * 1024


class MailboxError(Exception):
    """The mailbox failed; `kind` is one of failures.py's CONNECT, TIMEOUT, TLS, LOGIN, FOLDER,
    PROTOCOL."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


class MailboxSpec(namedtuple("MailboxSpec", ("scheme", "user", "host", "port", "folder",
                                             "path"))):
    """A parsed --mailbox URL; `label` names it in the output (never with a password)."""

    __slots__ = ()

    @property
    def label(self) -> str:
        if self.scheme == "maildir":
            return f"maildir:{self.path}"
        folder = f"/{self.folder}" if self.scheme.startswith("imap") else ""
        return f"{self.scheme}://{self.user}@{self.host}:{self.port}{folder}"


def parse_url(text: str) -> MailboxSpec:
    """A --mailbox URL as a MailboxSpec; ValueError with a one-line reason when it is not one."""
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"{text!r}: the scheme must be one of "
                         "imap://, imaps://, pop3://, pop3s:// or maildir:")
    if scheme == "maildir":
        path = rest[2:] if rest.startswith("//") else rest
        if not path.startswith("/"):
            raise ValueError(f"{text!r}: a Maildir is named by an absolute path, maildir:/PATH")
        return MailboxSpec(scheme, None, None, None, None, path)
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"{text!r}: the port is not a number from 1 to 65535")
    if parts.password is not None:
        raise ValueError(f"{text!r}: no password in the URL (anyone can read it in ps): "
                         "--mailbox-password-file or $CHECK_MAILBOX_PASSWORD")
    if not parts.username:
        raise ValueError(f"{text!r}: the URL names no user: {scheme}://USER@HOST")
    if not parts.hostname:
        raise ValueError(f"{text!r}: the URL names no host")
    if not (names.is_hostname(parts.hostname) or names.is_ip_literal(parts.hostname)):
        raise ValueError(f"{text!r}: bad host name {parts.hostname!r}")
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    if scheme.startswith("pop3") and parts.path.strip("/"):
        raise ValueError(f"{text!r}: POP3 has no folders")
    if parts.query or parts.fragment:
        raise ValueError(f"{text!r}: no query or fragment in a mailbox URL")
    return MailboxSpec(scheme, unquote(parts.username), parts.hostname, port or SCHEMES[scheme],
                       folder, None)


class Seen(namedtuple("Seen", ("folder", "junk", "header", "arrived", "noticed", "matched",
                               "ref"))):
    """A message the search found.

    folder: where; junk: it is a junk folder; header: the raw header block
    (bytes); arrived: the store's arrival time (epoch seconds) or None; noticed:
    when this run saw it (epoch); matched: "header" or the token found in the
    text; ref: the store's handle, for delete().
    """

    __slots__ = ()


#: how a mailbox logs in: its password, or a bearer token (OAUTH: the SASL mechanism the
#: server offers, sasl.pick; or the one named)
PASSWORD, OAUTH = "password", "oauth2"


def open_mailbox(spec: MailboxSpec, *, address: str | None, password: str | None,
                 ca_file: str | None, deadline, junk_folders: tuple = (), idle: bool = True,
                 poll_interval: float = 2.0, transcript: list | None = None,
                 auth: str = PASSWORD):
    """A connected, logged-in client for `spec` (address: where to connect for host).

    `auth` is PASSWORD, OAUTH, or an OAuth mechanism (sasl.XOAUTH2, sasl.OAUTHBEARER);
    with OAuth, `password` is the bearer token.
    """
    if spec.scheme == "maildir":
        from check_smtp_posture.mailbox.maildir import MaildirBox

        return MaildirBox(spec, junk_folders or ("Junk",), poll_interval)
    if spec.scheme.startswith("imap"):
        from check_smtp_posture.mailbox.imap import ImapBox

        box = ImapBox(spec, address, password, ca_file, deadline, junk_folders, idle,
                      poll_interval, transcript, auth)
    else:
        from check_smtp_posture.mailbox.pop3 import Pop3Box

        box = Pop3Box(spec, address, password, ca_file, deadline, poll_interval, transcript,
                      auth)
    box.open()
    return box


class ServerBox:
    """What an IMAP and a POP3 mailbox share: where and how they log in, and the transcript,
    every line of it through the redactor (open_mailbox gives the arguments)."""

    skipped = ()  # a server's store has no entries to skip

    def __init__(self, spec, address, password, ca_file, deadline, poll_interval, transcript,
                 auth):
        from check_smtp_posture.secrets import Redactor

        self.spec = spec
        self.auth = auth
        self.address = address or spec.host
        self.password = password
        # the server may quote the password back (in a refusal, in garbage): never shown
        self.redact = Redactor()
        self.redact.add(password, spec.user)
        self.ca_file = ca_file
        self.deadline = deadline
        self.poll_interval = poll_interval
        self.transcript = transcript if transcript is not None else []
        self.tls = None

    def _log(self, line: str) -> None:
        self.transcript.append(self.redact(line))


def oauth_mechanism(auth: str, offered, label: str) -> str:
    """The OAuth SASL mechanism to log in with (`auth` as open_mailbox takes it) among
    the `offered` ones; a LOGIN failure naming what is offered when there is none."""
    from check_smtp_posture import sasl

    mech = sasl.pick(offered, None if auth == OAUTH else auth)
    if mech is None:
        wanted = " or ".join(sasl.OAUTH_MECHANISMS) if auth == OAUTH else auth
        raise MailboxError(LOGIN, f"{label}: the server offers no {wanted} (SASL: "
                                  f"{' '.join(sorted(offered)) or 'none'})")
    return mech


def header_block(raw: bytes) -> bytes:
    """The header block of a message (up to the first empty line), capped."""
    raw = raw[:HEADER_CAP]
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = raw.find(separator)
        if end >= 0:
            return raw[: end + len(separator)]
    return raw


def header_has(header: bytes, field: str, needle: str) -> bool:
    """Does a field named `field` in `header` contain `needle` (case-insensitive)?"""
    from email.parser import BytesHeaderParser
    from email.policy import compat32

    parsed = BytesHeaderParser(policy=compat32).parsebytes(header)
    return any(needle.lower() in str(value).lower() for value in parsed.get_all(field, ()))


def tokens_in(data: bytes, texts) -> str | None:
    """The first of `texts` that occurs in `data`, or None."""
    for text in texts:
        if text.encode() in data:
            return text
    return None


def tls_context(ca_file: str | None):
    """The verifying TLS context of a mailbox connection (tls.verified_context); a
    CA file that trusts nothing is a TLS failure before anything is sent."""
    from check_smtp_posture.tls import NoTrustAnchors, verified_context

    try:
        return verified_context(ca_file)
    except NoTrustAnchors as exc:
        raise MailboxError(TLS, f"certificate untrusted ({exc})") from None


def connection_error(exc: BaseException, where: str) -> MailboxError:
    """An OSError (or ssl error) of a mailbox connection as a MailboxError."""
    import socket

    from check_smtp_posture.smtp.errors import is_tls_error

    if isinstance(exc, (socket.timeout, TimeoutError)):
        return MailboxError(TIMEOUT, f"{where}: timed out")
    if is_tls_error(exc):
        reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or exc
        return MailboxError(TLS, f"{where}: TLS failed: {reason}")
    if isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        # reached, then dropped: the server's doing, CRITICAL as an SMTP server's
        # reset is (smtp/reply.py), not --unreachable-state
        return MailboxError(PROTOCOL, f"{where}: connection reset by server")
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return MailboxError(CONNECT, f"{where}: {reason}")
