"""An SMTP server for the timing-accuracy benchmark: known delays, kept to the millisecond.

tests/lab/fakesmtp.py can delay a reply too, but it waits in 100 ms ticks of
its socket timeout, each tick late by the scheduler's slack; on a busy machine a
300 ms delay comes several ms late, and the benchmark would measure the fake
server instead of the plugin. This one sleeps the delay at once after reading
the command and records, per connection, how long it really waited before each
reply, so the plugin's figure can be held against both.

    with DelayingSmtpServer({"banner": 0.1, "EHLO": 0.2, "RCPT": 0.3}, cert=...) as srv:
        ... -H srv.address -p srv.port ...
    srv.waits  # [{"banner": 0.1002, "EHLO": 0.2001, ...}, ...] one dict per connection

Offers STARTTLS when given a (certfile, keyfile) pair. One connection at a time
(the benchmark runs one plugin at a time); loopback only.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time

ADDRESS = "127.0.27.1"


class DelayingSmtpServer:
    def __init__(self, delays: dict[str, float], *, cert=None, address: str = ADDRESS,
                 hostname: str = "fake.posture.test"):
        self.delays = {k if k == "banner" else k.upper(): v for k, v in delays.items()}
        self.address = address
        self.hostname = hostname
        self.port = 0
        self.waits: list[dict[str, float]] = []
        self._context = None
        if cert is not None:
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.load_cert_chain(*map(str, cert))
            # No session tickets: issuing them after the handshake is work of the
            # server's that the client would count in its EHLO after STARTTLS.
            self._context.num_tickets = 0
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> DelayingSmtpServer:
        self._listener = socket.create_server((self.address, 0))
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        if self._listener:
            self._listener.close()

    def __enter__(self) -> DelayingSmtpServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve_forever(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (socket.timeout, OSError):
                continue
            waits: dict[str, float] = {}
            self.waits.append(waits)
            try:
                with conn:
                    conn.settimeout(10)
                    self._session(conn, waits)
            except (OSError, ssl.SSLError):
                pass

    def _reply(self, conn, phase: str, text: str, since: float, waits: dict) -> None:
        delay = self.delays.get(phase.removesuffix("_TLS"))  # EHLO after STARTTLS too
        if delay:
            time.sleep(max(0.0, delay - (time.monotonic() - since)))
        waits[phase] = time.monotonic() - since  # what the client waited, from our side
        conn.sendall(text.encode() + b"\r\n")

    def _session(self, conn, waits: dict) -> None:
        self._reply(conn, "banner", f"220 {self.hostname} ESMTP", time.monotonic(), waits)
        reader = conn.makefile("rb")
        tls = False
        while True:
            line = reader.readline(4096)
            received = time.monotonic()
            if not line:
                conn.close()
                return
            verb = line.split(b" ", 1)[0].split(b":", 1)[0].strip().upper().decode("ascii",
                                                                                      "replace")
            phase = f"{verb}_TLS" if tls and verb == "EHLO" else verb
            if verb == "EHLO":
                offered = ["PIPELINING", "SIZE 10240000", "8BITMIME", "ENHANCEDSTATUSCODES"]
                if self._context is not None and not tls:
                    offered.append("STARTTLS")
                text = "\r\n".join([f"250-{self.hostname}"] + [f"250-{k}" for k in offered[:-1]]
                                   + [f"250 {offered[-1]}"])
                self._reply(conn, phase, text, received, waits)
            elif verb == "STARTTLS" and self._context is not None and not tls:
                self._reply(conn, phase, "220 2.0.0 Ready to start TLS", received, waits)
                conn = self._context.wrap_socket(conn, server_side=True)
                reader = conn.makefile("rb")
                tls = True
            elif verb == "QUIT":
                self._reply(conn, phase, "221 2.0.0 Bye", received, waits)
                conn.close()  # at once: the client waits for the close after QUIT
                return
            else:
                replies = {"MAIL": "250 2.1.0 Ok", "RCPT": "250 2.1.5 Ok", "RSET": "250 2.0.0 Ok"}
                self._reply(conn, phase, replies.get(verb, "502 5.5.2 Error: command not "
                                                           "recognized"), received, waits)
