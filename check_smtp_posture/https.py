"""One HTTPS GET (or form POST), bounded by the run's deadline and a byte cap: pure stdlib.

Address and name are separate, as in the SMTP library: the connection goes to
an address the family's DNS layer found, SNI and the Host header carry the
name. The handshake completes whatever certificate the server shows
(tls.client_context); the chain comes back as DER for
tls.certificate_facts to judge, so a bad certificate is a fact, not a
failed fetch. Redirects are not followed: the response is returned as it
came. http.client parses the response; every read underneath it gets what is
left of the deadline, and no more than `limit` bytes of body are kept.
"""

from __future__ import annotations

import io
import socket
import time
from dataclasses import dataclass, field

from check_smtp_posture.deadline import Deadline, DeadlineExceeded
from check_smtp_posture.failures import CLOSED, CONNECT, PROTOCOL, TIMEOUT, TLS

#: the status line and headers together; a policy host has no business sending more
HEADER_LIMIT = 16 * 1024
USER_AGENT = "check_smtp_posture"

# the kinds of failure (CONNECT, TIMEOUT, TLS, PROTOCOL, CLOSED) are the family's, failures.py


class HttpsError(Exception):
    """No response could be had; `kind` says why and `phase` where (connect, tls, request,
    response)."""

    def __init__(self, kind: str, phase: str, detail: str):
        super().__init__(f"{phase}: {detail}")
        self.kind = kind
        self.phase = phase
        self.detail = detail


@dataclass(frozen=True)
class HttpsResponse:
    status: int
    reason: str
    headers: tuple  # (name, value) as sent, in order
    body: bytes  # at most `limit` bytes
    truncated: bool  # the body went on past `limit`
    tls: object = None  # tls.TlsSession
    peer_chain: tuple = ()  # DER, leaf first
    times: dict = field(default_factory=dict)  # connect, tls, response, total (seconds)

    def header(self, name: str) -> str | None:
        """The first header `name` (case-insensitive), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def media_type(self) -> str:
        """The Content-Type without parameters, lower case ('' when absent)."""
        return (self.header("content-type") or "").split(";")[0].strip().lower()


class _BoundedReader(io.RawIOBase):
    """The TLS socket as a file for http.client: each read gets what is left of the
    deadline, and reading stops after `cap` bytes (an endless stream ends here)."""

    def __init__(self, sock, deadline: Deadline, cap: int):
        self._sock = sock
        self._deadline = deadline
        self._left = cap
        self.phase = "response"

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._left <= 0:
            raise _CapReached()
        view = memoryview(buffer)[: self._left]
        self._sock.settimeout(self._deadline.timeout(self.phase))
        count = self._sock.recv_into(view)
        self._left -= count
        return count


class _CapReached(Exception):
    pass


class _SocketShim:
    """What http.client.HTTPResponse needs of a socket: makefile()."""

    def __init__(self, reader: _BoundedReader):
        self._reader = reader

    def makefile(self, mode="rb", *args, **kwargs):
        return io.BufferedReader(self._reader)


def get(address: str, port: int, hostname: str, path: str, deadline: Deadline, *,
        limit: int, context_factory=None) -> HttpsResponse:
    """GET https://`hostname``path` from `address`:`port`; raises HttpsError, never more.

    `context_factory()` makes the SSLContext (default: tls.client_context()).
    """
    return _exchange(address, port, hostname, f"GET {path} HTTP/1.1", b"", "text/plain", deadline,
                     limit, context_factory)


def post_form(address: str, port: int, hostname: str, path: str, form: str,
              deadline: Deadline, *, limit: int, context_factory=None) -> HttpsResponse:
    """POST the urlencoded `form` to https://`hostname``path`, as get() does a GET.

    The form may hold secrets (an OAuth client secret, a refresh token): it is sent,
    never kept or shown.
    """
    head = (f"POST {path} HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded"
            f"\r\nContent-Length: {len(form.encode('ascii'))}")
    return _exchange(address, port, hostname, head, form.encode("ascii"), "application/json",
                     deadline, limit, context_factory)


def _exchange(address: str, port: int, hostname: str, head: str, body: bytes, accept: str,
              deadline: Deadline, limit: int, context_factory) -> HttpsResponse:
    """`head` (the request line, then any header lines) and `body` sent; the response."""
    import http.client
    import ssl

    from check_smtp_posture import tls

    times: dict = {}
    started = time.monotonic()
    phase = "connect"
    sock = None
    try:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(deadline.timeout(phase))
        sock.connect((address, port))
        times["connect"] = time.monotonic() - started
        phase = "tls"
        context = (context_factory or tls.client_context)()
        sock.settimeout(deadline.timeout(phase))
        sock = context.wrap_socket(sock, server_hostname=hostname)
        times["tls"] = time.monotonic() - started - times["connect"]
        session = tls.tls_session(sock)
        chain = tuple(tls.peer_chain_der(sock))
        phase = "request"
        request = (f"{head}\r\nHost: {hostname}\r\nUser-Agent: {USER_AGENT}\r\n"
                   f"Accept: {accept}\r\nConnection: close\r\n\r\n").encode("ascii")
        sock.settimeout(deadline.timeout(phase))
        sock.sendall(request + body)
        phase = "response"
        reader = _BoundedReader(sock, deadline, HEADER_LIMIT + limit + 64 * 1024)
        response = http.client.HTTPResponse(_SocketShim(reader), method=head.split()[0])
        response.begin()
        headers = tuple(response.getheaders())
        reader.phase = "body"
        body, truncated = _read_body(response, limit)
        times["response"] = time.monotonic() - started - times["connect"] - times["tls"]
        times["total"] = time.monotonic() - started
        return HttpsResponse(response.status, response.reason, headers, body, truncated,
                             session, chain, times)
    except DeadlineExceeded as exc:
        raise HttpsError(TIMEOUT, phase, f"timeout after {exc.budget:g}s") from None
    except _CapReached:
        raise HttpsError(PROTOCOL, phase, "the response goes on past every limit") from None
    except socket.timeout:  # every socket waits for what is left of the deadline, no less
        raise HttpsError(TIMEOUT, phase, f"timeout after {deadline.budget:g}s") from None
    except ssl.SSLError as exc:
        raise HttpsError(TLS, phase, _ssl_reason(exc)) from None
    except http.client.RemoteDisconnected:
        raise HttpsError(CLOSED, phase, "the server closed the connection without a "
                                        "response") from None
    except http.client.LineTooLong:
        raise HttpsError(PROTOCOL, phase, "a header line too long") from None
    except http.client.HTTPException as exc:
        raise HttpsError(PROTOCOL, phase, f"not an HTTP response "
                                          f"({type(exc).__name__})") from None
    except ValueError as exc:  # a parser's last word on bytes that are no HTTP
        raise HttpsError(PROTOCOL, phase, f"not an HTTP response ({type(exc).__name__})") \
            from None
    except ConnectionRefusedError:
        raise HttpsError(CONNECT, phase, "connection refused") from None
    except OSError as exc:
        kind = CONNECT if phase == "connect" else CLOSED
        raise HttpsError(kind, phase, exc.strerror or type(exc).__name__) from None
    finally:
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass


def _read_body(response, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of the body, and whether there was more.

    A body that ends before its Content-Length or its last chunk is no body: HttpsError.
    """
    import http.client

    chunks, size = [], 0
    try:
        while size <= limit:
            chunk = response.read(limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except http.client.IncompleteRead:  # raised for a chunked body only, where it ends
        raise HttpsError(CLOSED, "response", "the body ended before its last chunk") \
            from None
    # read(amt) returns b"" where a Content-Length is not met, it never raises IncompleteRead;
    # what is left of that length says so
    if size <= limit and response.length:
        raise HttpsError(CLOSED, "response", f"the body ended early ({size} of "
                                             f"{size + response.length} bytes)")
    body = b"".join(chunks)
    return body[:limit], len(body) > limit


def _ssl_reason(exc) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return f"TLS handshake failed: {str(reason).lower().replace('_', ' ')}"
