"""A raw-socket SMTP server for byte-level faults that fakesmtp.py cannot express.

fakesmtp.py speaks in text replies; some faults live below that: a reply
without CRLF, bytes that are not UTF-8, a reply cut off by a TCP reset in the
middle of a line, a valid reply dripped one byte at a time. A `HostileServer`
answers every command with the exact bytes its script gives::

    with HostileServer({"banner": b"220 mx\\x00\\xff ESMTP\\r\\n",
                        "EHLO": Drip(b"250 mx\\r\\n", interval=1.0),
                        "MAIL": Reset(b"250-half a rep")}) as srv:
        run_plugin(main, ["-H", srv.host, "-p", srv.port])

A script maps "banner", an SMTP verb (upper case) or "DATA-END" (after the
message's final dot) to a step: `bytes` (sent as they are: the script writes
its own CRLFs), `Drip(data, interval)` (one byte per interval, then silence),
`Reset(data)` (data, then a TCP RST), `STALL` (silence until the client
leaves), `CLOSE` (close without a word), `AWAIT` (wait for the client's next
bytes, e.g. its TLS ClientHello after a 220 to STARTTLS, and drop them), a
tuple of steps in turn, or a callable `(line) -> step` for a reply that
depends on the command line (without CRLF).
Unscripted verbs get a plain positive reply (no STARTTLS offered), QUIT gets
221 and the close. What each connection sent is kept in `sessions` (lists of
lines without CRLF); all threads end on stop().
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from typing import Callable, Union

from tests.lab.threadedserver import ThreadedServer

DEFAULT_ADDRESS = "127.0.27.9"
HOSTNAME = b"hostile.posture.test"
#: the longest line a client may send
MAX_LINE = 4096
TICK = 0.05


@dataclass(frozen=True)
class Drip:
    data: bytes
    interval: float = 1.0


@dataclass(frozen=True)
class Reset:
    data: bytes = b""


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


STALL = _Marker("STALL")
CLOSE = _Marker("CLOSE")
AWAIT = _Marker("AWAIT")

Step = Union[bytes, Drip, Reset, _Marker, tuple, Callable[[bytes], "Step"]]

DEFAULTS: dict[str, bytes] = {
    "banner": b"220 " + HOSTNAME + b" ESMTP\r\n",
    "EHLO": b"250-" + HOSTNAME + b"\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
    "HELO": b"250 " + HOSTNAME + b"\r\n",
    "MAIL": b"250 2.1.0 Ok\r\n",
    "RCPT": b"250 2.1.5 Ok\r\n",
    "DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
    "DATA-END": b"250 2.0.0 Ok: queued\r\n",
    "RSET": b"250 2.0.0 Ok\r\n",
    "NOOP": b"250 2.0.0 Ok\r\n",
    "QUIT": b"221 2.0.0 Bye\r\n",
}
UNKNOWN = b"502 5.5.2 Error: command not recognized\r\n"


class _End(Exception):
    """This connection's conversation is over."""


class HostileServer(ThreadedServer):
    thread_name = "hostile-smtp"

    def __init__(self, script: dict[str, Step] | None = None, *,
                 address: str = DEFAULT_ADDRESS):
        self.script = {k if k in ("banner", "DATA-END") else k.upper(): v
                       for k, v in (script or {}).items()}
        self.address = address
        self.port = 0
        self.sessions: list[list[bytes]] = []
        super().__init__()

    @property
    def host(self) -> str:
        return self.address

    @property
    def commands(self) -> list[str]:
        return [_verb(line) for lines in list(self.sessions) for line in lines]

    def start(self) -> HostileServer:
        listener = socket.create_server((self.address, 0))
        listener.settimeout(TICK)
        self.port = listener.getsockname()[1]
        self._listen(listener)
        return self

    def _serve(self, conn: socket.socket, peer) -> None:
        conn.settimeout(TICK)
        lines: list[bytes] = []
        self.sessions.append(lines)
        buffer = b""
        try:
            self._perform(conn, self.script.get("banner", DEFAULTS["banner"]))
            while True:
                line, buffer = self._readline(conn, buffer)
                lines.append(line)
                verb = _verb(line)
                step = self.script.get(verb, DEFAULTS.get(verb, UNKNOWN))
                if callable(step):
                    step = step(line)
                self._perform(conn, step)
                if verb == "DATA" and step == DEFAULTS["DATA"]:
                    while line != b".":
                        line, buffer = self._readline(conn, buffer)
                    self._perform(conn, self.script.get("DATA-END", DEFAULTS["DATA-END"]))
                if verb == "QUIT":
                    break
        except (_End, OSError):
            pass

    def _readline(self, conn: socket.socket, buffer: bytes) -> tuple[bytes, bytes]:
        while b"\n" not in buffer:
            if len(buffer) > MAX_LINE:
                raise _End
            buffer += self._recv(conn)
        line, _, rest = buffer.partition(b"\n")
        return line.rstrip(b"\r"), rest

    def _recv(self, conn: socket.socket) -> bytes:
        """Some bytes; waits in ticks so that stop() is noticed; _End at EOF."""
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise _End
            return data
        raise _End

    def _perform(self, conn: socket.socket, step: Step) -> None:
        if isinstance(step, tuple):
            for part in step:
                self._perform(conn, part)
        elif isinstance(step, bytes):
            self._send(conn, step)
        elif isinstance(step, Drip):
            for byte in step.data:
                self._send(conn, bytes([byte]))
                if self._stop.wait(step.interval):
                    raise _End
            self._silence(conn)
        elif isinstance(step, Reset):
            self._send(conn, step.data)
            # SO_LINGER 0: close() sends a RST instead of a FIN
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raise _End
        elif step is STALL:
            self._silence(conn)
        elif step is CLOSE:
            raise _End
        elif step is AWAIT:
            self._recv(conn)
        else:
            raise ValueError(f"unknown step {step!r}")

    def _silence(self, conn: socket.socket) -> None:
        """Say nothing more; read and drop what comes until the client leaves."""
        while True:
            self._recv(conn)

    def _send(self, conn: socket.socket, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._stop.is_set():
                raise _End
            try:
                sent = conn.send(view)
            except socket.timeout:  # the client does not read: wait, a tick at a time
                continue
            view = view[sent:]


def _verb(line: bytes) -> str:
    return line.split(b" ", 1)[0].split(b":", 1)[0].decode("latin-1").upper()
