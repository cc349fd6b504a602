"""A timed, redacted record of an SMTP dialogue, printed in swaks' style.

    [0.003]  <-  220 mx1.example ESMTP
    [0.004]  ->  EHLO probe.example
    [0.120]  ~>  AUTH PLAIN ********

`->`/`<-` are client/server lines in clear text, `~>`/`<~` inside TLS,
`===` notes and `***` failures. Secrets and message bodies never enter the
record: callers hand in the text to show, not the bytes they sent.
"""

from __future__ import annotations

import time
from collections import namedtuple

from check_smtp_posture.sanitize import printable

SENT, RECEIVED, NOTE, FAILURE = "->", "<-", "===", "***"
_TLS_ARROWS = {SENT: "~>", RECEIVED: "<~"}


#: one line of the record: seconds since the start, direction (SENT, ...), the text
Event = namedtuple("Event", ("offset", "direction", "text"))


class Transcript:
    """The events of one dialogue in order; `tls` switches the arrows to ~> and <~."""

    __slots__ = ("started", "events", "tls")

    def __init__(self, started: float | None = None, events: list | None = None,
                 tls: bool = False):
        self.started = time.monotonic() if started is None else started
        self.events: list[Event] = [] if events is None else events
        self.tls = tls

    def _add(self, direction: str, text: str) -> None:
        if self.tls and direction in _TLS_ARROWS:
            direction = _TLS_ARROWS[direction]
        self.events.append(Event(time.monotonic() - self.started, direction, text))

    def sent(self, text: str) -> None:
        self._add(SENT, text)

    def received(self, lines: list[str]) -> None:
        for line in lines:
            self._add(RECEIVED, line)

    def note(self, text: str) -> None:
        self._add(NOTE, text)

    def failure(self, text: str) -> None:
        self._add(FAILURE, text)

    def lines(self) -> list[str]:
        return [f"[{e.offset:.3f}] {e.direction:>3}  {printable(e.text, 200)}"
                for e in self.events]
