"""Transport and protocol failures of an SMTP dialogue.

A reply the check did not hope for (550, 421) is not an error here: it comes
back as a Reply. These exceptions are for the cases where no reply could be
had at all, and each names the phase it happened in, so the status line can
say "CRITICAL - banner: timeout after 2s".
"""

from __future__ import annotations

import sys

from check_smtp_posture import failures


class SmtpError(Exception):
    """Base class: something went wrong in `phase` before a reply was complete."""

    kind = failures.ERROR

    def __init__(self, phase: str, detail: str):
        super().__init__(f"{phase}: {detail}")
        self.phase = phase
        self.detail = detail


class SmtpConnectError(SmtpError):
    """TCP connection refused, unreachable, or otherwise failed."""

    kind = failures.CONNECT


class SmtpTimeout(SmtpError):
    """The run's deadline expired while waiting in `phase`."""

    kind = failures.TIMEOUT


class SmtpConnectionClosed(SmtpError):
    """The server closed or reset the connection."""

    kind = failures.CLOSED


class SmtpProtocolError(SmtpError):
    """The server sent something that is not an SMTP reply (garbage, overlong)."""

    kind = failures.PROTOCOL


class SmtpTlsError(SmtpError):
    """The TLS handshake failed."""

    kind = failures.TLS


class SmtpUsageError(SmtpError):
    """The options cannot be applied to this connection (a PROXY family that does not fit)."""

    kind = failures.USAGE


def is_tls_error(exc: BaseException) -> bool:
    """An OpenSSL error (ssl.SSLError), asked without importing ssl.

    Only a TLS socket raises one, and ssl is loaded by then; a run without TLS
    must not pay for loading ssl just to find out that it has none.
    """
    ssl = sys.modules.get("ssl")
    return ssl is not None and isinstance(exc, ssl.SSLError)
