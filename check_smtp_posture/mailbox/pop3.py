"""The POP3 mailbox, through poplib: one session per look, since POP3 shows a snapshot.

POP3 has no folders, hence no junk folder and no arrival time (the newest
Received: date stands in). pop3:// upgrades with STLS when the server offers it.
Messages are told apart by UIDL, so a message that is no probe is read once
per run, not once per look.
"""

from __future__ import annotations

import poplib
import socket
import time

from check_smtp_posture.failures import LOGIN, PROTOCOL
from check_smtp_posture.mailbox import (
    BODY_CAP,
    PASSWORD,
    MailboxError,
    Seen,
    ServerBox,
    connection_error,
    header_block,
    header_has,
    oauth_mechanism,
    tls_context,
    tokens_in,
)

#: the newest messages looked at; a probe mailbox holds few
SCAN_CAP = 500


class _Pop3(poplib.POP3):
    """poplib connected to an address, with TLS (implicit or STLS) checked for `host`."""

    def __init__(self, host: str, port: int, address: str, timeout: float, context=None):
        self._address = address
        self._implicit_context = context
        self.sock = self.file = None
        try:
            super().__init__(host, port, timeout)
        except BaseException:  # a bad greeting: poplib leaves its socket (and file) open
            for opened in (self.file, self.sock):
                if opened is not None:
                    opened.close()
            raise

    def _create_socket(self, timeout):
        sock = socket.create_connection((self._address, self.port), timeout)
        if self._implicit_context is not None:
            sock = self._implicit_context.wrap_socket(sock, server_hostname=self.host)
        return sock


class Pop3Box(ServerBox):
    idles = False
    folders = (("INBOX", False),)

    def __init__(self, spec, address, password, ca_file, deadline, poll_interval, transcript,
                 auth=PASSWORD):
        super().__init__(spec, address, password, ca_file, deadline, poll_interval, transcript,
                         auth)
        self._not_probes: set = set()  # UIDLs already read and found to be no probe

    def open(self) -> None:
        """Log in once to prove the credentials; every look opens its own session."""
        self._quit(self._session())

    def close(self) -> None:
        pass

    def _session(self) -> _Pop3:
        spec = self.spec
        context = tls_context(self.ca_file)
        implicit = spec.scheme == "pop3s"
        conn = None
        try:
            try:
                conn = _Pop3(spec.host, spec.port, self.address,
                             self.deadline.timeout("mailbox connect"),
                             context if implicit else None)
            except poplib.error_proto as exc:  # -ERR, or no POP3 at all
                raise MailboxError(PROTOCOL, f"greeting: {self._text(exc)}") from None
            self.tls = "implicit TLS" if implicit else None
            oauth = self.auth != PASSWORD
            capa = self._capa(conn) if oauth or not implicit else {}
            if not implicit and "STLS" in capa:
                conn.stls(context)
                self.tls = "STLS"
                capa = self._capa(conn) if oauth else capa
            self._log(f"connected to {self.address} port {spec.port}"
                      + (f" ({self.tls})" if self.tls else " without TLS"))
            how = "login"
            try:
                if not oauth:
                    conn.user(spec.user)
                    conn.pass_(self.password or "")
                    self._log(f"USER {spec.user} / PASS ********: logged in")
                else:
                    mech = oauth_mechanism(self.auth, capa.get("SASL", ()),
                                           f"login as {spec.user}")
                    how = f"{mech} login"
                    _authenticate(conn, mech, spec.user, self.password or "")
                    self._log(f"AUTH {mech} {spec.user} ********: logged in")
            except poplib.error_proto as exc:
                # only the server's -ERR refuses (a hang-up or garbage does not)
                text = self._text(exc)
                if text.startswith("-ERR"):
                    raise MailboxError(LOGIN, f"{how} as {spec.user} refused: {text}") \
                        from None
                raise MailboxError(PROTOCOL, f"{how} as {spec.user}: {text}") from None
            return conn
        except (MailboxError, poplib.error_proto, OSError) as exc:
            raise self._failed(conn, exc) from None

    def _failed(self, conn, exc: Exception) -> MailboxError:
        """What the failure `exc` of the session `conn` means, once `conn` is dropped (closed
        without QUIT): a MailboxError as it is, a -ERR or garbage PROTOCOL, a socket error
        connection_error's."""
        _drop(conn)
        if isinstance(exc, MailboxError):
            return exc
        if isinstance(exc, poplib.error_proto):
            return MailboxError(PROTOCOL, self._text(exc))
        return connection_error(exc, f"{self.address} port {self.spec.port}")

    @staticmethod
    def _capa(conn) -> dict:
        """The server's CAPA (RFC 2449), {} when it has none (and so no STLS or SASL)."""
        try:
            return conn.capa()
        except poplib.error_proto:
            return {}

    def scan(self, header: tuple, texts) -> list:
        conn = self._session()
        found = []
        try:
            conn.sock.settimeout(self.deadline.timeout("mailbox"))
            listing = _uidl(conn)
            sizes = {int(n): int(s) for n, s in
                     (line.split()[:2] for line in conn.list()[1])}
            for number, uid in listing[-SCAN_CAP:]:
                if uid in self._not_probes:
                    continue
                conn.sock.settimeout(self.deadline.timeout("mailbox"))
                head = header_block(b"\r\n".join(conn.top(number, 0)[1]) + b"\r\n\r\n")
                matched = "header" if header_has(head, *header) else tokens_in(head, texts)
                if matched is None and sizes.get(number, 0) <= BODY_CAP and texts:
                    whole = b"\r\n".join(conn.retr(number)[1])
                    matched = tokens_in(whole, texts)
                if matched is None:
                    self._not_probes.add(uid)
                    continue
                found.append(Seen("INBOX", False, head, None, time.time(), matched, uid))
            self._quit(conn)
        except (MailboxError, poplib.error_proto, OSError) as exc:
            raise self._failed(conn, exc) from None
        return found

    def wait(self, seconds: float) -> None:
        time.sleep(max(0.0, min(seconds, self.poll_interval)))

    def delete(self, seen: list) -> int:
        """DELE exactly these messages (by UIDL), committed by QUIT."""
        wanted = {item.ref for item in seen}
        conn = self._session()
        try:
            conn.sock.settimeout(self.deadline.timeout("mailbox"))
            numbers = [n for n, uid in _uidl(conn) if uid in wanted]
            for number in numbers:
                conn.dele(number)
        except (poplib.error_proto, OSError) as exc:
            _drop(conn)
            raise MailboxError(PROTOCOL, f"deleting probes: {self._text(exc)}") from None
        if not self._quit(conn, "the deletions are not committed (a later run's cleanup "
                                "takes the probes)"):
            return 0
        return len(numbers)

    def _quit(self, conn, undone: str = "") -> bool:
        """QUIT; whether the server took it.

        It comes after the work is done: a -ERR, garbage or a hang-up there
        spoils nothing the session found. It only leaves undone what QUIT would
        have committed (`undone` says what, in the transcript).
        """
        try:
            conn.quit()
            return True
        except (poplib.error_proto, OSError) as exc:
            _drop(conn)
            self._log(f"QUIT: {self._text(exc)}" + (f": {undone}" if undone else ""))
            return False

    def _text(self, exc: BaseException) -> str:
        """A poplib error as one line, the password masked in it."""
        from check_smtp_posture.sanitize import one_line

        text = self.redact(str(exc))
        if text == "-ERR EOF":  # poplib's own words (a str, not the server's bytes)
            return "the server closed the connection"
        if text.startswith("b'") or text.startswith('b"'):
            text = text[2:-1]
        return one_line(text, 100)


def _authenticate(conn, mechanism: str, user: str, token: str) -> None:
    """AUTH with an OAuth mechanism and its initial response (RFC 5034), which poplib
    has no method for; a refusal raises poplib.error_proto with the server's -ERR."""
    from check_smtp_posture import sasl

    reply = conn._shortcmd(f"AUTH {mechanism} "
                           + sasl.b64(sasl.initial_response(mechanism, user, token)))
    if not reply.startswith(b"+OK"):  # "+ <challenge>": the error, then the -ERR
        conn._putcmd(sasl.ERROR_ACK[mechanism])
        conn._getresp()
        raise poplib.error_proto(b"-ERR " + reply[2:])


def _uidl(conn) -> list:
    """[(message number, unique id)] in mailbox order."""
    pairs = []
    for line in conn.uidl()[1]:
        number, _, uid = line.partition(b" ")
        pairs.append((int(number), uid.strip().decode("ascii", "replace")))
    return pairs


def _drop(conn) -> None:
    """Close without QUIT: nothing is committed (DELE only takes effect at QUIT)."""
    if conn is not None:
        try:
            conn.close()
        except OSError:
            pass

