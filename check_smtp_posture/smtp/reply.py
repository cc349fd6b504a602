"""SMTP replies as data, and a bounded reader for them (RFC 5321 §4.2)."""

from __future__ import annotations

import re
import socket
from collections import namedtuple

from check_smtp_posture.deadline import Deadline, DeadlineExceeded
from check_smtp_posture.smtp.errors import (
    SmtpConnectionClosed,
    SmtpProtocolError,
    SmtpTimeout,
    is_tls_error,
)

#: longest reply line accepted, CRLF included (smtplib's limit, RFC 5321 §4.5.3.1.5 is 512)
MAX_LINE = 8192
#: most lines one reply may have; more is a server that never stops talking
MAX_LINES = 100

_LINE = re.compile(r"^([2-5][0-9][0-9])([ -]|$)(.*)$", re.DOTALL)
_ENHANCED = r"^([245])\.(\d{1,3})\.(\d{1,3})(?:\s|$)"  # compiled (by re) when first asked


class Reply(namedtuple("Reply", ("code", "lines"))):
    """One complete SMTP reply: its code (int) and the text of each line (tuple of str).

    Immutable and compared by value.
    """

    __slots__ = ()

    @property
    def text(self) -> str:
        """The reply text, lines joined by a space (the status-line view)."""
        return " ".join(line for line in self.lines if line)

    @property
    def first_line(self) -> str:
        return self.lines[0] if self.lines else ""

    @property
    def enhanced(self) -> str | None:
        """RFC 3463 enhanced status code ("5.7.1") when the first line carries one."""
        match = re.match(_ENHANCED, self.first_line)
        if match and match.group(1) == str(self.code)[0]:
            return ".".join(match.groups())
        return None

    @property
    def category(self) -> int:
        """First digit: 2 success, 3 intermediate, 4 transient, 5 permanent."""
        return self.code // 100

    @property
    def positive(self) -> bool:
        return self.category == 2

    @property
    def transient(self) -> bool:
        return self.category == 4

    @property
    def permanent(self) -> bool:
        return self.category == 5

    def __str__(self) -> str:
        return f"{self.code} {self.text}".rstrip()


def parse_reply(raw_lines: list[str], phase: str = "reply") -> Reply:
    """Build a Reply from its lines (without CRLF); raise on a malformed reply."""
    code = None
    texts = []
    for number, line in enumerate(raw_lines):
        match = _LINE.match(line)
        if not match:
            raise SmtpProtocolError(phase, f"not an SMTP reply: {line[:60]!r}")
        line_code, separator, text = int(match.group(1)), match.group(2), match.group(3)
        if code is None:
            code = line_code
        elif line_code != code:
            raise SmtpProtocolError(phase, f"reply code changed within a reply: "
                                           f"{code} then {line_code}")
        last = number == len(raw_lines) - 1
        if (separator == "-") == last:
            raise SmtpProtocolError(phase, "malformed multiline reply")
        texts.append(text)
    if code is None:
        raise SmtpProtocolError(phase, "empty reply")
    return Reply(code, tuple(texts))


class LineReader:
    """Reads CRLF-terminated lines from a socket within a deadline.

    The line cap bounds memory against a server that never sends CRLF; the
    deadline bounds time against one that sends a byte at a time.
    """

    def __init__(self, sock: socket.socket, deadline: Deadline):
        self.sock = sock
        self.deadline = deadline
        self._buffer = b""
        self.bytes_read = 0

    @property
    def pending(self) -> bytes:
        """Bytes received but not yet consumed as lines."""
        return self._buffer

    def discard_pending(self) -> bytes:
        data, self._buffer = self._buffer, b""
        return data

    def poll(self) -> bytes:
        """What has arrived unread, taking in without waiting what the socket holds."""
        if self._buffer:
            return self._buffer
        try:
            self.sock.settimeout(0.0)
            data = self.sock.recv(MAX_LINE)
        except OSError:
            # Nothing waiting (BlockingIOError, or TLS's SSLWantRead/WriteError), or a
            # reset: the next send or read reports that in its phase.
            return b""
        self.bytes_read += len(data)
        self._buffer += data  # b"" at EOF: nothing unasked, the next read says "closed"
        return self._buffer

    def readline(self, phase: str, within: Deadline | None = None) -> str:
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                if newline + 1 > MAX_LINE:
                    raise SmtpProtocolError(phase, f"reply line longer than {MAX_LINE} bytes")
                line, self._buffer = self._buffer[:newline + 1], self._buffer[newline + 1:]
                return line.rstrip(b"\r\n").decode("utf-8", "replace")
            if len(self._buffer) >= MAX_LINE:
                raise SmtpProtocolError(phase, f"reply line longer than {MAX_LINE} bytes")
            self._buffer += self._recv(phase, within or self.deadline)

    def _recv(self, phase: str, deadline: Deadline) -> bytes:
        try:
            self.sock.settimeout(deadline.timeout(phase))
            data = self.sock.recv(MAX_LINE)
        except DeadlineExceeded:
            raise SmtpTimeout(phase, f"no complete reply within {deadline.budget:g}s") from None
        except (socket.timeout, TimeoutError):
            raise SmtpTimeout(phase, f"no complete reply within {deadline.budget:g}s") from None
        except OSError as exc:  # ssl.SSLError is one; ssl is imported only when TLS is used
            if is_tls_error(exc):
                raise SmtpConnectionClosed(phase, f"TLS error: {exc.reason or exc}") from None
            if isinstance(exc, ConnectionResetError):
                raise SmtpConnectionClosed(phase, "connection reset by server") from None
            raise SmtpConnectionClosed(phase, exc.strerror or str(exc)) from None
        if not data:
            raise SmtpConnectionClosed(phase, "connection closed by server")
        self.bytes_read += len(data)
        return data

    def read_reply(self, phase: str, within: Deadline | None = None) \
            -> tuple[Reply, list[str]]:
        """One complete reply (multiline allowed), and its raw lines; `within` caps the wait."""
        raw: list[str] = []
        while True:
            line = self.readline(phase, within)
            raw.append(line)
            if len(raw) > MAX_LINES:
                raise SmtpProtocolError(phase, f"reply longer than {MAX_LINES} lines")
            match = _LINE.match(line)
            if not match:
                raise SmtpProtocolError(phase, f"not an SMTP reply: {line[:60]!r}")
            if match.group(2) != "-":
                return parse_reply(raw, phase), raw
