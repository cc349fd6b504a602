"""SmtpDialogue: one SMTP client connection, every command timed by phase.

Connects to an address and verifies TLS against a name given separately,
which is what a check of an MX endpoint needs and smtplib cannot express.
Every command returns a Reply, whatever its code; exceptions (errors.py) are
for the cases where no reply could be had, and name the phase.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from contextlib import contextmanager

from check_smtp_posture.deadline import Deadline, DeadlineExceeded
from check_smtp_posture.sanitize import one_line
from check_smtp_posture.secrets import MASK, Redactor
from check_smtp_posture.smtp.address import path
from check_smtp_posture.smtp.errors import (
    SmtpConnectError,
    SmtpConnectionClosed,
    SmtpError,
    SmtpProtocolError,
    SmtpTimeout,
    SmtpTlsError,
    SmtpUsageError,
    is_tls_error,
)
from check_smtp_posture.smtp.reply import LineReader, Reply
from check_smtp_posture.smtp.transcript import Transcript

#: every phase the dialogue can time, in the order they happen
PHASES = ("dns", "connect", "tls_handshake", "banner", "ehlo", "starttls", "ehlo_tls",
          "auth", "command", "mail", "rcpt", "data", "body", "rset", "quit")

#: seconds to wait, after a refused EHLO that followed a PROXY header, for the reply
#: a server owes when it took the header for a command of its own
PROXY_SETTLE = 1.0
#: seconds to wait after the QUIT reply for the server to close, as it must (RFC 5321
#: §4.1.1.10); a reply in that time is one more than the commands sent
QUIT_SETTLE = 0.5
#: seconds to read the rest of an unasked reply whose first bytes are already here,
#: to quote it whole
UNASKED_READ = 0.2
#: how much of an unfinished unasked line an error quotes, in characters of its repr
UNASKED_QUOTE = 80


class Extensions:
    """ESMTP keywords from an EHLO reply (RFC 5321 §4.1.1.1), keyword -> parameters.

    Not to be changed once made.
    """

    __slots__ = ("keywords", "obsolete_auth")

    def __init__(self, keywords: dict | None = None, obsolete_auth: bool = False):
        self.keywords: dict = {} if keywords is None else keywords
        self.obsolete_auth = obsolete_auth  # the server (also) wrote "AUTH=LOGIN PLAIN"

    def __repr__(self) -> str:
        return f"Extensions(keywords={self.keywords!r}, obsolete_auth={self.obsolete_auth!r})"

    def __eq__(self, other) -> bool:
        if not isinstance(other, Extensions):
            return NotImplemented
        return (self.keywords, self.obsolete_auth) == (other.keywords, other.obsolete_auth)

    __hash__ = None  # as the dataclass's: equal by value, and it holds a dict

    @classmethod
    def from_reply(cls, reply: Reply) -> Extensions:
        keywords: dict[str, str] = {}
        obsolete_auth = False
        for line in reply.lines[1:]:  # the first line is the server's name and greeting
            keyword, _, params = line.strip().partition(" ")
            if not keyword:
                continue
            keyword = keyword.upper()
            if keyword.startswith("AUTH="):  # pre-RFC 4954 servers: "AUTH=LOGIN PLAIN"
                params = (keyword[5:] + " " + params).strip()
                keyword = "AUTH"
                obsolete_auth = True
            if keyword in keywords and params:
                params = (keywords[keyword] + " " + params).strip()
            keywords[keyword] = params.strip()
        return cls(keywords, obsolete_auth)

    def __contains__(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    def params(self, keyword: str) -> str:
        return self.keywords.get(keyword.upper(), "")

    @property
    def auth_mechanisms(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for mech in self.params("AUTH").upper().split():
            seen.setdefault(mech, None)
        return tuple(seen)


class SmtpDialogue:
    """One connection to one SMTP endpoint, bounded by the run's deadline."""

    def __init__(self, address: str, port: int, deadline: Deadline, *,
                 transcript: Transcript | None = None):
        self.address = address
        self.port = port
        self.deadline = deadline
        self.transcript = transcript or Transcript()
        self.times: dict[str, float] = {}
        self.extensions: Extensions | None = None
        self.helo_fallback = False
        self.tls = None  # tls.TlsSession once TLS is up
        self.peer_chain: list[bytes] = []
        self.local_address: tuple | None = None
        self.proxy_header: str | None = None  # the PROXY header sent, readable
        # what AUTH sent that must not come back into sight: a server may echo it
        self.redact = Redactor()
        # True from a PROXY header until a command is answered with 2xx: until
        # then a reply that comes unasked is the server answering the header.
        self._proxy_unconfirmed = False
        self._sock: socket.socket | None = None
        self._reader: LineReader | None = None

    # -- timing ---------------------------------------------------------------

    @contextmanager
    def timed(self, phase: str):
        """Add the time spent in the block to `phase`, even when it fails."""
        started = time.monotonic()
        try:
            yield
        finally:
            self.times[phase] = self.times.get(phase, 0.0) + time.monotonic() - started

    # -- transport ------------------------------------------------------------

    def connect(self, proxy=None) -> None:
        """TCP connect; then send the PROXY header of `proxy` (a proxy.ProxySpec) if given."""
        family = socket.AF_INET6 if ipaddress.ip_address(self.address).version == 6 \
            else socket.AF_INET
        self.transcript.note(f"Trying {self.address}:{self.port}...")
        with self.timed("connect"):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                # Every command goes out at once. With Nagle's algorithm the EHLO that
                # follows a TLS 1.3 handshake waits until the server acknowledges the
                # client's Finished: up to a delayed ACK (40 ms) counted in ehlo_tls.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(self._timeout("connect"))
                sock.connect((self.address, self.port))
            except (socket.timeout, TimeoutError):
                sock.close()
                raise SmtpTimeout("connect", "no connection within "
                                  f"{self.deadline.budget:g}s") from None
            except ConnectionRefusedError:
                sock.close()
                raise SmtpConnectError("connect", "connection refused") from None
            except ConnectionResetError:
                # Accepted, then reset before connect() looked: the same server fault
                # as a reset while the banner is awaited, whichever the OS saw first.
                sock.close()
                raise SmtpConnectionClosed("banner", "connection reset by server") from None
            except OSError as exc:
                sock.close()
                raise SmtpConnectError("connect", exc.strerror or str(exc)) from None
            except BaseException:
                sock.close()
                raise
        self._sock = sock
        self.local_address = sock.getsockname()
        self._reader = LineReader(sock, self.deadline)
        self.transcript.note(f"Connected to {self.address}.")
        if proxy is not None:
            try:
                header = proxy.header(self.local_address, sock.getpeername(), self.port)
            except ValueError as exc:  # options that do not fit this connection
                raise SmtpUsageError("connect", str(exc)) from None
            from check_smtp_posture.smtp.proxy import describe_header

            self.proxy_header = describe_header(header)
            with self.timed("connect"):
                self._send("connect", header, self.proxy_header)
            self._proxy_unconfirmed = True

    def start_tls(self, context, server_name: str | None, phase: str = "tls_handshake"):
        """TLS handshake on the open connection (after STARTTLS, or implicit TLS).

        `context`: an ssl.SSLContext, or a function that makes one. Making it
        (loading a trust store) and reading the session's facts are part of
        setting TLS up, so they are timed in `phase` with the handshake.
        """
        import ssl  # here, not at the top: a run without TLS needs no ssl

        assert self._sock is not None and self._reader is not None
        leftover = self._reader.discard_pending()
        if leftover:
            # Bytes after the STARTTLS reply would be read as if inside TLS:
            # the response-injection flaw (CVE-2011-0411 and kin).
            raise SmtpProtocolError(phase, "server sent data before the TLS handshake")
        with self.timed(phase):
            if callable(context):
                from check_smtp_posture.tls import NoTrustAnchors

                try:
                    context = context()
                except NoTrustAnchors as exc:  # a CA file that trusts nothing
                    raise SmtpTlsError(phase, f"certificate untrusted ({exc})") from None
            try:
                tls_sock = context.wrap_socket(self._sock, server_hostname=server_name,
                                               do_handshake_on_connect=False)
                self._sock = tls_sock
                tls_sock.settimeout(self._timeout(phase))
                tls_sock.do_handshake()
            except (socket.timeout, TimeoutError):
                raise SmtpTimeout(phase, "TLS handshake did not finish within "
                                  f"{self.deadline.budget:g}s") from None
            except ssl.SSLError as exc:
                raise SmtpTlsError(phase, f"handshake failed: {exc.reason or exc}") from None
            except (ConnectionError, OSError) as exc:
                raise SmtpTlsError(phase, "handshake failed: "
                                   f"{exc.strerror or 'connection closed'}") from None
            from check_smtp_posture import tls as tls_facts

            self.peer_chain = tls_facts.peer_chain_der(tls_sock)
            self.tls = tls_facts.tls_session(tls_sock)
        self._reader = LineReader(tls_sock, self.deadline)
        self.transcript.tls = True
        self.transcript.note(f"TLS started with {self.tls.describe()}")
        return self.tls

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None

    def _timeout(self, phase: str) -> float:
        try:
            return self.deadline.timeout(phase)
        except DeadlineExceeded:
            raise SmtpTimeout(phase, f"no time left of {self.deadline.budget:g}s") from None

    def _send(self, phase: str, data: bytes, *displays: str) -> None:
        """Send `data` in one write; the transcript shows `displays` (a line each)."""
        if self._sock is None:
            raise SmtpConnectionClosed(phase, "not connected")
        for display in displays:
            self.transcript.sent(display)
        try:
            self._sock.settimeout(self._timeout(phase))
            self._sock.sendall(data)
        except (socket.timeout, TimeoutError):
            raise SmtpTimeout(phase, f"could not send within {self.deadline.budget:g}s") \
                from None
        except OSError as exc:
            if is_tls_error(exc):
                raise SmtpConnectionClosed(phase, f"TLS error: {exc.reason or exc}") from None
            raise SmtpConnectionClosed(phase, exc.strerror or "connection lost") from None

    def read_reply(self, phase: str, within: Deadline | None = None) -> Reply:
        """The next reply; `within` bounds the wait more tightly than the run's deadline."""
        if self._reader is None:
            raise SmtpConnectionClosed(phase, "not connected")
        try:
            reply, raw = self._reader.read_reply(phase, within)
        except SmtpError as exc:
            if self.redact:  # a malformed reply is quoted in the error: mask it there too
                exc.detail = self.redact(exc.detail)
                exc.args = (f"{exc.phase}: {exc.detail}",)
            self.transcript.failure(str(exc))
            raise
        return self._received(reply, raw)

    def _received(self, reply: Reply, raw: list[str]) -> Reply:
        """A reply as the rest of the program sees it: secrets masked, in the transcript."""
        if self.redact:
            reply = Reply(reply.code, tuple(self.redact(line) for line in reply.lines))
            raw = [self.redact(line) for line in raw]
        self.transcript.received(raw)
        return reply

    def command(self, phase: str, line: str, display: str | None = None) -> Reply:
        """Send one command line and read its reply, timed as `phase`."""
        _single_line(line)
        with self.timed(phase):
            closing = self._refuse_unasked(phase, _verb(line))
            if closing is not None:
                return closing
            self._send(phase, line.encode("utf-8") + b"\r\n", line if display is None else display)
            reply = self.read_reply(phase)
        if reply.positive:
            self._proxy_unconfirmed = False
        return reply

    def pipeline(self, commands):
        """Send `commands` in one flight and yield their replies in order (RFC 2920).

        `commands` are (phase, line) pairs, for a server whose EHLO offered
        PIPELINING. Which commands may share a group is the caller's to decide
        within RFC 2920 §3.1: MAIL, RCPT and RSET anywhere, EHLO, DATA, QUIT and
        the like only last. The lines go out in one write, shown in the
        transcript as one group; each reply is then read in turn and timed in
        its command's phase (the first also carries the sending). A generator:
        the replies come one at a time, so a caller keeps those read before a
        failure. A 421 ends the group: the server is closing the channel (RFC
        5321 §3.8) and answers nothing after it. The reply to a QUIT is followed
        by the wait for the close, as in quit().
        """
        for _, line in commands:
            _single_line(line)
        if not commands:
            return
        phase, line = commands[0]
        with self.timed(phase):
            reply = self._refuse_unasked(phase, _verb(line))  # a 421 that came unasked
            if reply is None:
                self.transcript.note(f"pipelining {len(commands)} commands (RFC 2920)")
                self._send(phase, b"".join(line.encode("utf-8") + b"\r\n"
                                           for _, line in commands),
                           *(line for _, line in commands))
        if reply is not None:
            yield reply
            return
        for phase, line in commands:
            with self.timed(phase):
                reply = self.read_reply(phase)
                if _verb(line) == "QUIT":
                    self._await_close()
            if reply.positive:
                self._proxy_unconfirmed = False
            yield reply
            if reply.code == 421:
                return

    def _refuse_unasked(self, phase: str, verb: str) -> Reply | None:
        """A reply that came before its command was sent: every later one would be off by one.

        SMTP is lock-step (RFC 5321 §4.3): one reply per command, after it. Bytes
        waiting before a command is sent answer something else, so the dialogue
        stops here instead of misreading all that follows. The exception is 421:
        a server that is closing may say so unasked (RFC 5321 §3.8); that 421 is
        returned as the reply, the command not sent.
        """
        if self._reader is None or not self._reader.poll():
            return None
        unasked = self._read_owed(phase, UNASKED_READ)
        if unasked is not None and unasked.code == 421 and not self._proxy_unconfirmed:
            self.transcript.note(f"the server closes: {verb} not sent")
            return unasked
        # Masked whole, then cut: a secret across the cut would otherwise show its head.
        what = (str(unasked) if unasked is not None
                else one_line(self.redact(repr(self._reader.pending)), UNASKED_QUOTE))
        if self._proxy_unconfirmed:
            raise SmtpProtocolError("connect", f"PROXY header not accepted: {what}")
        raise SmtpProtocolError(phase, f"reply before {verb} was sent: {what}")

    def _read_owed(self, phase: str, seconds: float) -> Reply | None:
        """One more reply if it comes within `seconds`; None if none comes or the server left."""
        if self._reader is None:
            return None
        try:  # silence or the close is what is hoped for: not a failure to record
            reply, raw = self._reader.read_reply(phase, self.deadline.share(seconds))
        except (SmtpTimeout, SmtpConnectionClosed):
            return None
        return self._received(reply, raw)

    # -- the SMTP verbs ----------------------------------------------------------

    def banner(self) -> Reply:
        with self.timed("banner"):
            return self.read_reply("banner")

    def ehlo(self, name: str) -> Reply:
        """EHLO, falling back to HELO when the server refuses EHLO (RFC 5321 §4.1.4)."""
        phase = "ehlo_tls" if self.tls else "ehlo"
        reply = self.command(phase, f"EHLO {name}")
        if reply.positive:
            self.extensions = Extensions.from_reply(reply)
            return reply
        if self._proxy_unconfirmed:
            with self.timed(phase):
                owed = self._read_owed(phase, PROXY_SETTLE)
            if owed is not None:  # two replies to one EHLO: the first answered the header
                raise SmtpProtocolError("connect", f"PROXY header not accepted: {reply}")
        self.extensions = None
        if reply.code in (500, 502, 504, 550):  # EHLO not understood or not allowed
            helo = self.command(phase, f"HELO {name}")
            if helo.positive:
                self.helo_fallback = True
                self.extensions = Extensions()
            return helo
        return reply

    def starttls(self) -> Reply:
        reply = self.command("starttls", "STARTTLS")
        return reply

    def auth(self, mechanism: str, user: str, password: str, authzid: str = "") -> Reply:
        """SASL PLAIN, LOGIN, CRAM-MD5, or XOAUTH2 and OAUTHBEARER with a bearer token as
        `password`; the password never reaches the transcript."""
        # Each command() below is timed as "auth" already: no timer around them.
        from check_smtp_posture import sasl

        mech = mechanism.upper()
        token = _b64(f"{authzid}\0{user}\0{password}")
        self.redact.add(password, user, authzid)
        if mech in sasl.OAUTH_MECHANISMS:
            reply = self.command("auth", f"AUTH {mech} "
                                 + sasl.b64(sasl.initial_response(mech, user, password)),
                                 f"AUTH {mech} {MASK}")
            if reply.code != 334:
                return reply
            # the refusal comes as a challenge (a base64 JSON error): acknowledged, the
            # server gives its final reply (RFC 7628 3.2.3)
            return self.command("auth", sasl.ERROR_ACK[mech])
        if mech == "PLAIN":
            return self.command("auth", f"AUTH PLAIN {token}", f"AUTH PLAIN {MASK}")
        if mech == "LOGIN":
            reply = self.command("auth", "AUTH LOGIN")
            if reply.code != 334:
                return reply
            reply = self.command("auth", _b64(user), _b64(user))
            if reply.code != 334:
                return reply
            return self.command("auth", _b64(password), MASK)
        if mech == "CRAM-MD5":
            reply = self.command("auth", "AUTH CRAM-MD5")
            if reply.code != 334:
                return reply
            import base64
            import hmac

            try:
                challenge = base64.b64decode(reply.first_line.strip(), validate=True)
            except ValueError:
                self.command("auth", "*")  # cancel the exchange (RFC 4954 §4)
                raise SmtpProtocolError("auth", "CRAM-MD5 challenge is not base64") from None
            digest = hmac.new(password.encode("utf-8"), challenge, "md5").hexdigest()
            return self.command("auth", _b64(f"{user} {digest}"), MASK)
        raise ValueError(f"unsupported SASL mechanism {mechanism!r}")

    def mail(self, sender: str, params: str = "") -> Reply:
        """MAIL FROM with `sender` as given ("" is the null sender), in one pair of brackets."""
        return self.command("mail", f"MAIL FROM:{path(sender)}" + (f" {params}" if params else ""))

    def rcpt(self, recipient: str) -> Reply:
        """RCPT TO with `recipient` as given, byte for byte, in one pair of brackets."""
        return self.command("rcpt", f"RCPT TO:{path(recipient)}")

    def data(self, message: bytes) -> tuple[Reply, Reply | None]:
        """DATA, then the message with dot-stuffing; (DATA reply, end-of-data reply)."""
        reply = self.command("data", "DATA")
        if reply.code != 354:
            return reply, None
        wire = dot_stuff(message)
        with self.timed("body"):
            self._send("body", wire, f"<message body, {len(wire)} bytes, not shown>")
            self.transcript.sent(".")
            return reply, self.read_reply("body")

    def rset(self) -> Reply:
        return self.command("rset", "RSET")

    def quit(self) -> Reply:
        """QUIT, then wait for the close: a reply after QUIT's proves every reply was late.

        The check before each command finds a surplus reply only if it has
        already arrived; here, at the end, it has had time to.
        """
        reply = self.command("quit", "QUIT")
        with self.timed("quit"):
            self._await_close()
        return reply

    def _await_close(self) -> None:
        """After QUIT's reply: the close, as the server owes it; a reply instead is surplus."""
        surplus = self._read_owed("quit", QUIT_SETTLE)
        if surplus is not None:
            raise SmtpProtocolError("quit", f"a reply more than the commands sent: {surplus} "
                                            "(every reply was read one step behind)")


def _single_line(line: str) -> None:
    if "\r" in line or "\n" in line:
        raise ValueError("an SMTP command must be a single line")


def _verb(line: str) -> str:
    return line.split(" ", 1)[0].split(":", 1)[0].upper()


def dot_stuff(message: bytes) -> bytes:
    """Message bytes as sent after DATA: CRLF line ends, leading dots doubled, ".\\r\\n"."""
    lines = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    stuffed = [b"." + line if line.startswith(b".") else line for line in lines]
    return b"\r\n".join(stuffed) + b"\r\n.\r\n"


def _b64(text: str) -> str:
    import base64  # AUTH only

    return base64.b64encode(text.encode("utf-8")).decode("ascii")
