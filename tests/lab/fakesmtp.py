"""Scripted misbehaving SMTP servers, for behaviour no real server gives on demand.

A `FakeSmtpServer` listens on 127.0.27.1 (an ephemeral port) in background
threads and speaks just enough SMTP for a client to get through a dialogue,
except where its *script* says otherwise. A script maps a phase -- "banner", an
SMTP verb ("EHLO", "MAIL", "STARTTLS", ...), "DATA-END" (after the message's
final dot) or the start of a command line ("MAIL FROM:<>", matched
case-insensitively against the line as sent; the longest such prefix wins over
the bare verb) -- to an action:

* a reply: ``"451 4.3.0 try later"`` (multiline: lines joined with ``"\\n"``);
  a 421 reply closes the connection after it is sent;
* an `Act`: STALL (say nothing, keep the connection), DRIP (the reply one byte
  every `drip_interval` s, forever), GARBAGE (binary junk), OVERLONG (100 KB
  without CRLF), ENDLESS ("250-" lines forever), RESET (half a reply, then a TCP
  RST), CLOSE (close without a word), TLS_GARBAGE / TLS_CLOSE (for STARTTLS:
  say 220, then send junk instead of a TLS handshake / close);
* `Delayed(seconds, action)`: the action after a pause (cut short by stop(), or by
  the client hanging up: what it sent meanwhile is recorded);
* a tuple of actions, carried out in turn (e.g. a reply, then an unsolicited 421);
* a callable `(session, line) -> action`, for replies that depend on what this
  connection sent before (`session.lines`, `session.commands`, the current line
  included); `close_after(n, reply)` makes one.

Named scripts (SCENARIOS), besides the one-phase misbehaviours named
`<what>-<phase>` (stall-rcpt, mail-451, ...):

  greylist                 450 4.7.1 greylisted at every RCPT
  null-sender-refused      MAIL FROM:<> gets 550 5.7.1, any other sender 250
  drop-after-3             every RCPT 550 5.7.1 relaying denied; the third refusal in a
                           connection is followed at once by "421 4.7.0 ... too many
                           errors" and the close (as Postfix's smtpd_hard_error_limit)
  accept-rcpt-reject-data  RCPT 250 for anything, DATA 554 5.7.1 no thanks
  tarpit                   every RCPT reply held back 30 s (TARPIT_SECONDS; then 554
                           5.7.1 relay access denied), longer than a probe's budget

Named scripts are in SCENARIOS; use one by name or pass a dict::

    with FakeSmtpServer("stall-rcpt") as srv:
        run_plugin(main, ["-H", srv.host, "-p", srv.port, ...])
    assert srv.commands == ["EHLO", "MAIL", "RCPT", ...]

    FakeSmtpServer({"MAIL": "452 4.3.1 full"})
    FakeSmtpServer("normal", cert=(certfile, keyfile))        # offers STARTTLS
    FakeSmtpServer("implicit-tls", cert=issued_cert)          # TLS from the first byte
    FakeSmtpServer("proxy")                                   # wants a PROXY header first

What the server received is recorded per connection (`sessions`, each with
`lines`, `commands`, `data`, `proxy_header`, `tls`, `tls_error`, and the verdicts
`data_sent` (DATA or BDAT arrived), `ended_with_quit` and `probe_only` (both: a
polite probe that never started a message)) and flattened in `lines` and
`commands`. Everything is bounded: connections, line length, bytes per
session, and all threads end on `stop()`.
"""

from __future__ import annotations

import enum
import itertools
import socket
import ssl
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

from tests.lab.threadedserver import ThreadedServer

DEFAULT_ADDRESS = "127.0.27.1"
MAX_LINE = 16384
MAX_SESSION_BYTES = 1 << 20
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


class Act(enum.Enum):
    STALL = "stall"
    DRIP = "drip"
    GARBAGE = "garbage"
    OVERLONG = "overlong"
    ENDLESS = "endless"
    RESET = "reset"
    CLOSE = "close"
    TLS_GARBAGE = "tls-garbage"
    TLS_CLOSE = "tls-close"


@dataclass(frozen=True)
class Delayed:
    seconds: float
    action: Any


#: bytes are sent as they are: an unfinished line, or anything no reply is
Action = Union[str, bytes, Act, Delayed, tuple, Callable[["Session", bytes], Any]]

STALL, DRIP, GARBAGE, OVERLONG, ENDLESS, RESET, CLOSE, TLS_GARBAGE, TLS_CLOSE = Act

GARBAGE_BYTES = (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\xff\xfe\x80"
                 b"HTTP/1.1 400 Bad Request\r\n\x00\x1b[31m\xc3\x28\r\n")

TARPIT_SECONDS = 30.0


def close_after(n: int, reply: str,
                closing: str = "421 4.7.0 fake.posture.test Error: too many errors"
                ) -> Callable[[Session, bytes], Action]:
    """An action: `reply` to this verb, and after the n-th one in a connection also
    `closing` (a 421, so the connection closes). Counted per connection."""

    def action(session: Session, line: bytes) -> Action:
        seen = session.commands.count(_verb(line))  # this line included
        return (reply, closing) if seen >= n else reply

    action.__qualname__ = f"close_after({n}, {reply!r})"
    return action


SCENARIOS: dict[str, dict[str, Action]] = {
    "normal": {},
    "no-banner": {"banner": STALL},
    "slow-banner": {"banner": Delayed(2.0, "220 fake.posture.test ESMTP")},
    "drip-banner": {"banner": DRIP},
    "garbage-banner": {"banner": GARBAGE},
    "overlong-banner": {"banner": OVERLONG},
    "endless-banner": {"banner": ENDLESS},
    "reset-banner": {"banner": RESET},
    "close-banner": {"banner": CLOSE},
    "421-banner": {"banner": "421 4.3.2 fake.posture.test Service not available, closing"},
    "554-banner": {"banner": "554 5.3.2 fake.posture.test No SMTP service here"},
    "stall-ehlo": {"EHLO": STALL},
    "stall-mail": {"MAIL": STALL},
    "stall-rcpt": {"RCPT": STALL},
    "stall-data": {"DATA": STALL},
    "stall-quit": {"QUIT": STALL},
    "endless-ehlo": {"EHLO": ENDLESS},
    "overlong-ehlo": {"EHLO": OVERLONG},
    "garbage-ehlo": {"EHLO": GARBAGE},
    "reset-ehlo": {"EHLO": RESET},
    "reset-mail": {"MAIL": RESET},
    "ehlo-500": {"EHLO": "500 5.5.1 Command unrecognized"},
    "mail-451": {"MAIL": "451 4.3.0 Temporary failure, try again later"},
    "mail-421": {"MAIL": "421 4.7.0 fake.posture.test Too busy, closing"},
    "rcpt-450": {"RCPT": "450 4.2.0 Mailbox temporarily unavailable"},
    "rcpt-550": {"RCPT": "550 5.1.1 No such user here"},
    "starttls-454": {"STARTTLS": "454 4.7.0 TLS not available due to local problem"},
    "starttls-garbage": {"STARTTLS": TLS_GARBAGE},
    "starttls-close": {"STARTTLS": TLS_CLOSE},
    "starttls-stall": {"STARTTLS": STALL},
    "greylist": {"RCPT": "450 4.7.1 Recipient address rejected: Greylisted, try again later"},
    "null-sender-refused": {"MAIL FROM:<>": "550 5.7.1 Null sender refused"},
    "drop-after-3": {"RCPT": close_after(3, "550 5.7.1 Relaying denied")},
    "accept-rcpt-reject-data": {"RCPT": "250 2.1.5 Ok", "DATA": "554 5.7.1 No thanks"},
    "tarpit": {"RCPT": Delayed(TARPIT_SECONDS, "554 5.7.1 Relay access denied")},
    "implicit-tls": {},  # with cert=...: TLS before the banner
    "proxy": {},  # answers only after a PROXY v1/v2 header
}

_IMPLICIT_TLS_SCENARIOS = {"implicit-tls"}
_PROXY_SCENARIOS = {"proxy"}

_DEFAULT_EHLO_KEYWORDS = ("PIPELINING", "SIZE 10240000", "ENHANCEDSTATUSCODES", "8BITMIME")
_DEFAULT_REPLIES = {
    "MAIL": "250 2.1.0 Ok",
    "RCPT": "250 2.1.5 Ok",
    "RSET": "250 2.0.0 Ok",
    "NOOP": "250 2.0.0 Ok",
    "VRFY": "252 2.0.0 Cannot VRFY user",
    "AUTH": "535 5.7.8 Authentication credentials invalid",
    "QUIT": "221 2.0.0 Bye",
}


@dataclass
class Session:
    """What one connection sent (lines without CRLF, undecoded)."""

    peer: tuple
    lines: list[bytes] = field(default_factory=list)
    data: list[bytes] = field(default_factory=list)  # message lines after DATA
    proxy_header: bytes | None = None
    tls: bool = False
    tls_error: str | None = None
    ended: threading.Event = field(default_factory=threading.Event)

    @property
    def commands(self) -> list[str]:
        return [_verb(line) for line in self.lines]

    @property
    def data_sent(self) -> bool:
        """Did the client send DATA or BDAT (whatever the answer)?"""
        return any(c in ("DATA", "BDAT") for c in self.commands)

    @property
    def ended_with_quit(self) -> bool:
        """Has the connection ended, with QUIT as the last thing the client sent?"""
        return self.ended.is_set() and self.commands[-1:] == ["QUIT"]

    @property
    def probe_only(self) -> bool:
        """No DATA/BDAT, and ended with QUIT: the record of a polite probe."""
        return self.ended_with_quit and not self.data_sent


class _EndSession(Exception):
    pass


class FakeSmtpServer(ThreadedServer):
    def __init__(self, script: str | dict[str, Action] = "normal", *,
                 address: str = DEFAULT_ADDRESS, port: int = 0,
                 hostname: str = "fake.posture.test",
                 cert: Any = None, implicit_tls: bool | None = None,
                 proxy: bool | None = None, proxy_timeout: float = 3.0,
                 ehlo_keywords: tuple[str, ...] = _DEFAULT_EHLO_KEYWORDS,
                 advertise_starttls: bool | None = None, drip_interval: float = 0.5):
        name = script if isinstance(script, str) else "custom"
        if isinstance(script, str):
            if script not in SCENARIOS:
                raise ValueError(f"unknown scenario {script!r}; known: {', '.join(SCENARIOS)}")
            script = SCENARIOS[script]
        self.name = name
        self.script = {k if k == "banner" else k.upper(): v for k, v in script.items()}
        # keys that are the start of a command line rather than a bare verb, longest first
        self._prefixes = sorted((k for k in self.script if " " in k or ":" in k),
                                key=len, reverse=True)
        self.address = address
        self.port = port
        self.hostname = hostname
        self.implicit_tls = name in _IMPLICIT_TLS_SCENARIOS if implicit_tls is None \
            else implicit_tls
        self.proxy = name in _PROXY_SCENARIOS if proxy is None else proxy
        self.proxy_timeout = proxy_timeout
        self.ehlo_keywords = tuple(ehlo_keywords)
        self.drip_interval = drip_interval
        self._tls_context = _server_context(cert) if cert is not None else None
        if self.implicit_tls and self._tls_context is None:
            raise ValueError("implicit TLS needs cert=")
        if advertise_starttls is None:
            advertise_starttls = ((self._tls_context is not None and not self.implicit_tls)
                                  or "STARTTLS" in self.script)
        self.advertise_starttls = advertise_starttls
        self.sessions: list[Session] = []
        super().__init__()
        self.thread_name = f"fakesmtp-{self.name}"

    # -- public ------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.address

    @property
    def lines(self) -> list[str]:
        """Every line received, all connections, decoded (latin-1, lossless)."""
        return [line.decode("latin-1") for s in list(self.sessions) for line in s.lines]

    @property
    def commands(self) -> list[str]:
        """The SMTP verbs received, upper-case, all connections."""
        return [c for s in list(self.sessions) for c in s.commands]

    def wait_ended(self, timeout: float = 5.0) -> bool:
        """Wait until every connection so far has ended (so the record is complete)."""
        end = time.monotonic() + timeout
        return all(s.ended.wait(max(0.0, end - time.monotonic()))
                   for s in list(self.sessions))

    def start(self) -> FakeSmtpServer:
        listener = socket.socket(socket.AF_INET6 if ":" in self.address else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.address, self.port))
        listener.listen(16)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listen(listener)
        return self

    def __repr__(self) -> str:
        return f"<FakeSmtpServer {self.name} {self.address}:{self.port}>"

    # -- one connection -----------------------------------------------------
    def _serve(self, conn: socket.socket, peer) -> None:
        session = Session(peer)
        self.sessions.append(session)
        io = _Conn(conn, self._stop)
        try:
            if self.proxy:
                session.proxy_header = io.read_proxy_header(self.proxy_timeout)
                if session.proxy_header is None:
                    raise _EndSession
            if self.implicit_tls:
                self._start_tls(io, session)
            banner = self._act(io, "banner", f"220 {self.hostname} ESMTP", session)
            no_service = banner.startswith("554")
            while True:
                line = io.readline()
                if line is None:
                    break
                session.lines.append(line)
                self._command(io, line, session, no_service)
        except (_EndSession, OSError, ssl.SSLError):
            pass
        finally:
            io.close()
            session.ended.set()

    # -- SMTP --------------------------------------------------------------
    def _command(self, io: _Conn, line: bytes, session: Session, no_service: bool) -> None:
        verb = _verb(line)
        if no_service and verb != "QUIT":
            io.reply("503 5.5.1 Error: no SMTP service here")
            return
        if verb == "EHLO":
            keywords = list(self.ehlo_keywords)
            if self.advertise_starttls and not session.tls:
                keywords.append("STARTTLS")
            default = "\n".join([f"250 {self.hostname}", *keywords])
        elif verb == "HELO":
            default = f"250 {self.hostname}"
        elif verb == "STARTTLS":
            default = "220 2.0.0 Ready to start TLS" if self._tls_context and not session.tls \
                else "502 5.5.1 Error: command not implemented"
        elif verb == "DATA":
            default = "354 End data with <CR><LF>.<CR><LF>"
        else:
            default = _DEFAULT_REPLIES.get(verb, "502 5.5.2 Error: command not recognized")
        upper = line.decode("latin-1").upper()
        phase = next((p for p in self._prefixes if upper.startswith(p)), verb)
        sent = self._act(io, phase, default, session, line)
        if verb == "STARTTLS" and sent.startswith("220") and self._tls_context:
            self._start_tls(io, session)
        elif verb == "DATA" and sent.startswith("354"):
            while True:
                data_line = io.readline()
                if data_line is None:
                    raise _EndSession
                if data_line == b".":
                    break
                session.data.append(data_line)
            self._act(io, "DATA-END", "250 2.0.0 Ok: queued as FAKE", session)
        elif verb == "QUIT" and sent.startswith("221"):
            raise _EndSession

    def _act(self, io: _Conn, phase: str, default: str, session: Session,
             line: bytes = b"") -> str:
        """Carry out the script's action for `phase` (else `default`); return the reply sent."""
        return self._perform(io, phase, self.script.get(phase, default), session, line)

    def _perform(self, io: _Conn, phase: str, action: Action, session: Session,
                 line: bytes) -> str:
        while isinstance(action, Delayed) or callable(action):
            if isinstance(action, Delayed):
                io.pause(action.seconds, session)
                action = action.action
            else:
                action = action(session, line)
        if isinstance(action, tuple):
            sent = ""
            for part in action:
                sent = self._perform(io, phase, part, session, line)
            return sent
        if isinstance(action, str):
            io.reply(action)
            if action.startswith("421"):
                raise _EndSession
            return action
        if isinstance(action, bytes):
            io.send(action)
            return action.decode("utf-8", "replace")
        code = b"220" if phase == "banner" else b"250"
        if action is STALL:
            io.drain_until_closed(session)
        elif action is DRIP:
            text = b"%s %s ESMTP " % (code, self.hostname.encode())
            for byte in itertools.chain(text, itertools.repeat(ord("."))):
                io.send(bytes([byte]))
                if self._stop.wait(self.drip_interval):
                    break
        elif action is GARBAGE:
            io.send(GARBAGE_BYTES)
            io.drain_until_closed(session)
        elif action is OVERLONG:
            io.send(code + b" " + b"x" * 100_000)
            io.drain_until_closed(session)
        elif action is ENDLESS:
            for n in itertools.count():
                io.send(b"".join(b"%s-endless line %d\r\n" % (code, n * 64 + i)
                                 for i in range(64)))
                if self._stop.wait(0.002):
                    break
        elif action is RESET:
            io.send(code + b"-this reply is cut short by a reset\r\n" + code + b"-and")
            io.reset()
        elif action is CLOSE:
            pass
        elif action in (TLS_GARBAGE, TLS_CLOSE):
            io.reply("220 2.0.0 Ready to start TLS")
            if action is TLS_GARBAGE:
                io.send(GARBAGE_BYTES * 4)
                io.drain_until_closed(session, seconds=1.0)
        else:
            raise ValueError(f"unknown action {action!r} for {phase}")
        raise _EndSession

    def _start_tls(self, io: _Conn, session: Session) -> None:
        try:
            io.wrap(self._tls_context)
        except (ssl.SSLError, OSError) as exc:
            session.tls_error = f"{type(exc).__name__}: {exc}"
            raise _EndSession from None
        session.tls = True


class _Conn:
    """A connection with a bounded line reader that gives up when the server stops."""

    def __init__(self, sock: socket.socket, stop: threading.Event):
        self.sock = sock
        self.stop = stop
        self.buf = b""
        self.total = 0
        sock.settimeout(0.1)

    def _recv(self) -> bytes | None:
        """Some bytes, b"" on a timeout tick, None at EOF/stop/limit."""
        if self.stop.is_set() or self.total > MAX_SESSION_BYTES:
            return None
        try:
            chunk = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            return b""
        except OSError:
            return None
        if not chunk:
            return None
        self.total += len(chunk)
        return chunk

    def readline(self) -> bytes | None:
        while b"\n" not in self.buf:
            if len(self.buf) > MAX_LINE:
                line, self.buf = self.buf[:MAX_LINE], b""
                return line
            chunk = self._recv()
            if chunk is None:
                return None
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.rstrip(b"\r")

    def read_proxy_header(self, timeout: float) -> bytes | None:
        """The PROXY v1 line or v2 block at the start of the stream, else None."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.buf.startswith(b"PROXY ") and b"\r\n" in self.buf:
                header, _, self.buf = self.buf.partition(b"\r\n")
                return header + b"\r\n"
            if len(self.buf) >= 16 and self.buf.startswith(PROXY_V2_SIGNATURE):
                size = 16 + struct.unpack("!H", self.buf[14:16])[0]
                if len(self.buf) >= size:
                    header, self.buf = self.buf[:size], self.buf[size:]
                    return header
            elif len(self.buf) >= 6 and not (PROXY_V2_SIGNATURE.startswith(self.buf[:12])
                                             or b"PROXY ".startswith(self.buf[:6])):
                return None  # something else came first
            if len(self.buf) > 536:
                return None
            chunk = self._recv()
            if chunk is None:
                return None
            self.buf += chunk
        return None

    def pause(self, seconds: float, session: Session) -> None:
        """Say nothing for `seconds`, reading ahead; end the session at stop() or when
        the client hangs up meanwhile (recording the lines it sent before it did)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            chunk = self._recv()
            if chunk is None:
                while b"\n" in self.buf:
                    line, _, self.buf = self.buf.partition(b"\n")
                    session.lines.append(line.rstrip(b"\r"))
                raise _EndSession
            self.buf += chunk

    def drain_until_closed(self, session: Session, seconds: float | None = None) -> None:
        """Say nothing; record what the client still sends until it (or the server) quits."""
        end = None if seconds is None else time.monotonic() + seconds
        while end is None or time.monotonic() < end:
            chunk = self._recv()
            if chunk is None:
                return
            self.buf += chunk
            while b"\n" in self.buf:
                line, _, self.buf = self.buf.partition(b"\n")
                session.lines.append(line.rstrip(b"\r"))

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self.stop.is_set():
                raise _EndSession
            try:
                sent = self.sock.send(view)
            except (socket.timeout, ssl.SSLWantWriteError):
                continue
            view = view[sent:]

    def reply(self, text: str) -> None:
        lines = text.split("\n")
        out = []
        for i, line in enumerate(lines):
            code, rest = line[:3], line[4:] if line[3:4] in (" ", "-") else line[3:]
            if len(lines) > 1 and code.isdigit():
                line = f"{code}{'-' if i < len(lines) - 1 else ' '}{rest}"
            elif i > 0:  # continuation lines given without a code take the first one's
                code = lines[0][:3]
                line = f"{code}{'-' if i < len(lines) - 1 else ' '}{line}"
            out.append(line)
        self.send(("\r\n".join(out) + "\r\n").encode("utf-8"))

    def wrap(self, context: ssl.SSLContext) -> None:
        if self.buf:
            raise ssl.SSLError("client sent data before the TLS handshake")
        self.sock.settimeout(10)
        self.sock = context.wrap_socket(self.sock, server_side=True)
        self.sock.settimeout(0.1)

    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0)."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _verb(line: bytes) -> str:
    return line.split(b" ", 1)[0].split(b":", 1)[0].decode("latin-1").upper()


def _server_context(cert: Any) -> ssl.SSLContext:
    """A server context for (certfile, keyfile) or a certs.IssuedCert; accepts weak certs.

    An ssl.SSLContext is used as it is (e.g. one limited to an old TLS version).
    """
    if isinstance(cert, ssl.SSLContext):
        return cert
    if not isinstance(cert, (tuple, list)):
        directory = Path(tempfile.mkdtemp(prefix="fakesmtp-tls-"))
        cert = cert.write(directory, "server")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # Security level 0 so the lab's weak certificates (RSA 1024, SHA-1) still load.
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.load_cert_chain(str(cert[0]), str(cert[1]))
    return context
