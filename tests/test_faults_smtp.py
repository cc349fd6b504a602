"""The SMTP and TLS rows of the fault matrix (tests/faultmatrix.py), each run as a user would.

Every row is a fault a mail server or the network can produce, the plugins it
applies to, the exit status and a fragment of the first line; the man page
prints them. Each row's test sets the fault up -- tests/lab/fakesmtp.py for
faults at the level of SMTP replies, tests/lab/hostile.py for byte-level ones,
the lab Postfix where a real server produces the fault, a private network
namespace for addresses that cannot be reached -- runs every plugin the row
names, and checks the exit status, the first line (as Nagios reads it: up to
the first newline, printable) and that the run ended within its -t.

Against the fakes, check_open_relay meets a closed MX (postmaster and the
probe mailbox accepted, every relay probe refused with 554), and
check_smtp_phases asks for RCPT TO:<probe@posture.test>: without the fault
both are OK (test_without_the_fault_both_plugins_are_ok), so the row's state
is the fault's doing.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import pytest

from check_smtp_posture.plugins.check_open_relay import main as relay_main
from check_smtp_posture.plugins.check_smtp_phases import main as phases_main
from tests import secretguard
from tests.conftest import _lab_requirement, run_main
from tests.faultmatrix import Fault, check_says, said
from tests.lab.certs import LabCA, self_signed
from tests.lab.fakesmtp import STALL, FakeSmtpServer
from tests.lab.hostile import AWAIT, CLOSE, Drip, HostileServer, Reset
from tests.lab.hostile import STALL as SILENCE

P, R = "check_smtp_phases", "check_open_relay"
BOTH = f"{P}, {R}"
MAINS = {P: phases_main, R: relay_main}
NAMES = {P: "SMTP_PHASES", R: "OPEN_RELAY"}
EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}

HELO = "probe.posture.test"  # given, so that no run waits for this host's FQDN
MAILBOX = "probe@posture.test"
TLS_NAME = "fake.posture.test"  # the name the fakes' certificates are (mostly) for
STALL_T = 1.0  # -t of the rows that wait for the deadline
DRIP_T = 2.0  # long enough for more than one dripped byte to arrive
FAST_T = 3.0  # -t of the rows that end by themselves
MARGIN = 0.5  # the family's promise: done within -t + 0.5 s

# inside a network namespace of its own: only lo, and 198.51.100.0/24 routed into
# it, where nothing owns those addresses, so a SYN there vanishes without an answer
UNROUTED, BLACKHOLED = "203.0.113.25", "198.51.100.25"
NETNS_SETUP = 'ip link set lo up && ip route add 198.51.100.0/24 dev lo && exec "$@"'

SERVICE_421 = "421 4.3.2 Service shutting down, closing transmission channel"
OK_RCPT = "250 2.1.5 Ok"
RELAY_DENIED = "554 5.7.1 Relay access denied"
#: what a closed MX answers at RCPT: our own mailboxes yes, relaying no
CLOSED_MX = {"RCPT TO:<postmaster@posture.test>": OK_RCPT, f"RCPT TO:<{MAILBOX}>": OK_RCPT,
             "RCPT": RELAY_DENIED}
EHLO_STARTTLS = b"250-hostile.posture.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n"
READY = b"220 2.0.0 Ready to start TLS\r\n"
#: a TLS record header announcing 16 KB of handshake, then 64 zeros: dripped, a
#: handshake that never completes however long the client waits
TLS_RECORD = b"\x16\x03\x03\x40\x00" + b"\x00" * 64


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    args: dict = field(default_factory=dict)  # plugin -> arguments it needs for this server


@dataclass
class Case:
    row: Fault
    serve: Callable  # (env) -> context manager yielding a Target
    timeout: float = FAST_T
    args: dict = field(default_factory=dict)  # plugin -> extra arguments
    defect: str | None = None  # a known defect: xfail(strict) with this reason
    lab: bool = False  # needs the lab Postfix
    netns: bool = False  # runs in a network namespace of its own
    password: str | None = None  # $CHECK_SMTP_PASSWORD: the run holds it at every verbosity


# -- servers ---------------------------------------------------------------------------


def fake(script: dict, **options) -> Callable:
    """A fakesmtp server with `script`, answering RCPT as a closed MX unless scripted."""
    base = {} if any(k.upper().startswith("RCPT") for k in script) else CLOSED_MX

    @contextlib.contextmanager
    def serve(env):
        with FakeSmtpServer({**base, **script}, **options) as server:
            yield Target(server.host, server.port)
    return serve


def _closed_mx_rcpt(line: bytes) -> bytes:
    address = line.partition(b":")[2].strip().lower()
    if address in (b"<postmaster@posture.test>", f"<{MAILBOX}>".encode()):
        return OK_RCPT.encode() + b"\r\n"
    return RELAY_DENIED.encode() + b"\r\n"


def hostile(script: dict) -> Callable:
    """A hostile.py server sending the bytes of `script`, a closed MX at RCPT."""
    @contextlib.contextmanager
    def serve(env):
        with HostileServer({"RCPT": _closed_mx_rcpt, **script}) as server:
            yield Target(server.host, server.port)
    return serve


@contextlib.contextmanager
def refusing(env):
    # bound but not listening: the kernel answers the SYN with a RST, and nobody
    # else can take the port meanwhile
    with socket.socket() as sock:
        sock.bind(("127.0.27.1", 0))
        yield Target("127.0.27.1", sock.getsockname()[1])


def nowhere(address: str) -> Callable:
    @contextlib.contextmanager
    def serve(env):
        yield Target(address, 25)
    return serve


def lab_endpoint(name: str, *args: str) -> Callable:
    @contextlib.contextmanager
    def serve(env):
        endpoint = env.lab.endpoint(name)
        yield Target(endpoint.address, endpoint.port, {P: args})
    return serve


def certified(cert: str, *args: str) -> Callable:
    """A fake offering STARTTLS with certificate `cert` (see the certs fixture)."""
    @contextlib.contextmanager
    def serve(env):
        ca_file, files = env.certs
        with FakeSmtpServer(CLOSED_MX, cert=files[cert]) as server:
            yield Target(server.host, server.port,
                         {P: ("--servername", TLS_NAME, "--ca-file", ca_file, *args)})
    return serve


# -- the rows ----------------------------------------------------------------------------


def smtp(id, plugins, fault, state, message, serve, **kw) -> Case:
    return Case(Fault(id, "SMTP", plugins, fault, state, message), serve, **kw)


def tls(id, plugins, fault, state, message, serve, **kw) -> Case:
    return Case(Fault(id, "TLS", plugins, fault, state, message), serve, **kw)


SEND_DATA = {P: ("--send-data",)}
NO_REPLY = "no complete reply within"
#: the SASL password of the AUTH rows: the server quotes it back, no output may show it
SASL_SECRET = "faults-sasl-secret"
SASL_LOGIN = {P: ("--sasl-user", "u", "--allow-plaintext-auth")}


def _quote_back(session, line: bytes) -> str:
    return f"535 5.7.8 Authentication failed: you sent {line.decode()}"


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()

CASES = [
    # -- reaching the server
    smtp("smtp-connect-refused", BOTH, "connection refused: nothing listens on the port",
         "CRITICAL", "connect: connection refused", refusing),
    smtp("smtp-connect-unreachable", BOTH,
         "no route to the address (network unreachable), with --unreachable-state warning",
         "WARNING", "connect: Network is unreachable", nowhere(UNROUTED), netns=True,
         args={P: ("--unreachable-state", "warning"), R: ("--unreachable-state", "warning")}),
    smtp("smtp-connect-blackhole", BOTH, "address blackholed: the SYN is dropped unanswered",
         "CRITICAL", "connect: no connection within", nowhere(BLACKHOLED), netns=True,
         timeout=2.0),
    # -- the banner
    smtp("smtp-banner-never", BOTH, "connection accepted, banner never sent", "CRITICAL",
         f"banner: {NO_REPLY}", fake({"banner": STALL}), timeout=STALL_T),
    smtp("smtp-banner-stall", BOTH,
         "banner stops after its first line (220-, as postscreen's pregreet test does)",
         "CRITICAL", f"banner: {NO_REPLY}",
         hostile({"banner": (b"220-hostile.posture.test ESMTP\r\n", SILENCE)}),
         timeout=STALL_T),
    smtp("smtp-banner-drip", BOTH,
         "banner dripped one byte per second (a tarpit): the deadline still holds",
         "CRITICAL", f"banner: {NO_REPLY}",
         hostile({"banner": Drip(b"220 hostile.posture.test ESMTP\r\n", 1.0)}),
         timeout=DRIP_T),
    smtp("smtp-banner-221", BOTH, "221 (closing) as the banner instead of 220", "CRITICAL",
         "banner: 221 2.0.0 Bye", fake({"banner": "221 2.0.0 Bye"})),
    # -- a stall in each phase
    smtp("smtp-ehlo-stall", BOTH, "no reply to EHLO", "CRITICAL", f"ehlo: {NO_REPLY}",
         fake({"EHLO": STALL}), timeout=STALL_T),
    smtp("smtp-mail-stall", BOTH, "no reply to MAIL FROM", "CRITICAL", f"mail: {NO_REPLY}",
         fake({"MAIL": STALL}), timeout=STALL_T),
    smtp("smtp-rcpt-stall", BOTH, "no reply to RCPT TO", "CRITICAL", f"rcpt: {NO_REPLY}",
         fake({"RCPT": STALL}), timeout=STALL_T),
    smtp("smtp-data-stall", P, "no reply to DATA (with --send-data)", "CRITICAL",
         f"data: {NO_REPLY}", fake({"DATA": STALL}), timeout=STALL_T, args=SEND_DATA),
    smtp("smtp-body-stall", P, "no reply after the message's final dot (with --send-data)",
         "CRITICAL", f"body: {NO_REPLY}", fake({"DATA-END": STALL}), timeout=STALL_T,
         args=SEND_DATA),
    smtp("smtp-rset-stall", BOTH, "no reply to RSET", "CRITICAL", f"rset: {NO_REPLY}",
         fake({"RSET": STALL}), timeout=STALL_T),
    smtp("smtp-quit-stall", P, "no reply to QUIT", "WARNING", f"quit: {NO_REPLY}",
         fake({"QUIT": STALL}), timeout=STALL_T),
    smtp("smtp-quit-stall-relay", R, "no reply to QUIT, after every probe was answered",
         "OK", "16 relay probes refused", fake({"QUIT": STALL}), timeout=STALL_T),
    # -- replies that are not SMTP
    smtp("smtp-line-1mb", BOTH, "1 MB banner line without CRLF", "CRITICAL",
         "banner: reply line longer than 8192 bytes",
         hostile({"banner": (b"220 " + b"x" * (1 << 20), SILENCE)})),
    smtp("smtp-continuation-flood", BOTH, "EHLO reply of 10,000 continuation lines",
         "CRITICAL", "ehlo: reply longer than 100 lines",
         fake({"EHLO": "\n".join(["250-fake.posture.test"] + ["250-X-PADDING"] * 10_000
                                 + ["250 8BITMIME"])})),
    smtp("smtp-code-nonnumeric", BOTH, "reply without a numeric code (ABC ...)", "CRITICAL",
         "banner: not an SMTP reply: 'ABC fake.posture.test",
         fake({"banner": "ABC fake.posture.test ESMTP"})),
    smtp("smtp-code-mismatch", BOTH, "multiline reply whose code changes (250- then 251)",
         "CRITICAL", "ehlo: reply code changed within a reply: 250 then 251",
         fake({"EHLO": "250-fake.posture.test\n251 8BITMIME"})),
    smtp("smtp-reply-nul", BOTH, "NUL bytes in a reply", "CRITICAL",
         "banner: 554 5.3.2 mx.posture.test no service here",
         hostile({"banner": b"554 5.3.2 mx.posture.test\x00\x00 no service here\r\n"})),
    smtp("smtp-reply-not-utf8", BOTH, "reply text that is not UTF-8 (Latin-1 bytes)",
         "CRITICAL", "banner: 554 5.3.2 No service for you",
         hostile({"banner": b"554 5.3.2 No service for you \xabd\xe9sol\xe9\xbb\r\n"})),
    smtp("smtp-reply-controls", BOTH,
         "control characters in a reply (C1 controls, Unicode line separator, bidi override)",
         "CRITICAL", "banner: 554 5.3.2 No service",
         hostile({"banner": "554 5.3.2 No service\u0085here\u009b31m\u2028\u202etxet\r\n"
                  .encode()})),
    smtp("smtp-reset-mid-reply", BOTH,
         "connection reset (TCP RST) in the middle of the EHLO reply", "CRITICAL",
         "ehlo: connection reset by server",
         hostile({"EHLO": Reset(b"250-hostile.posture.test\r\n250-PIPELI")})),
    # -- 421 (service closing) at every phase
    smtp("smtp-421-banner", BOTH, "421 as the banner", "WARNING", "banner: 421 4.3.2 Service",
         fake({"banner": SERVICE_421})),
    smtp("smtp-421-ehlo", BOTH, "421 to EHLO", "WARNING", "ehlo: 421 4.3.2 Service",
         fake({"EHLO": SERVICE_421})),
    smtp("smtp-421-starttls", P, "421 to STARTTLS", "CRITICAL",
         "STARTTLS refused: 421 4.3.2 Service", fake({"STARTTLS": SERVICE_421})),
    smtp("smtp-421-starttls-relay", R, "421 to STARTTLS", "WARNING",
         "starttls: 421 4.3.2 Service", fake({"STARTTLS": SERVICE_421})),
    smtp("smtp-421-mail", P, "421 to MAIL FROM", "WARNING", "mail: 421 4.3.2 Service",
         fake({"MAIL": SERVICE_421})),
    smtp("smtp-421-mail-relay", R, "421 to every MAIL FROM (no verdict: the probe is asked "
         "again on a new connection, which gets 421 too)", "WARNING",
         "17 probes untested, 421 4.3.2 Service", fake({"MAIL": SERVICE_421})),
    smtp("smtp-421-rcpt", P, "421 to RCPT TO", "WARNING",
         f"rcpt: RCPT <{MAILBOX}>: 421 4.3.2 Service", fake({"RCPT": SERVICE_421})),
    smtp("smtp-421-rcpt-relay", R, "421 to every RCPT TO (no verdict: the probe is asked "
         "again on a new connection, which gets 421 too)", "WARNING",
         "17 probes untested, 421 4.3.2 Service", fake({"RCPT": SERVICE_421})),
    smtp("smtp-421-data", P, "421 to DATA (with --send-data)", "WARNING",
         "data: 421 4.3.2 Service", fake({"DATA": SERVICE_421}), args=SEND_DATA),
    smtp("smtp-421-body", P, "421 after the message's final dot (with --send-data)", "WARNING",
         "body: 421 4.3.2 Service", fake({"DATA-END": SERVICE_421}), args=SEND_DATA),
    smtp("smtp-421-rset", P, "421 to RSET", "WARNING", "rset: 421 4.3.2 Service",
         fake({"RSET": SERVICE_421})),
    smtp("smtp-421-rset-relay", R,
         "421 to every RSET (the server closes after each probe; probes go on over new "
         "connections)", "OK", "16 relay probes refused", fake({"RSET": SERVICE_421})),
    smtp("smtp-421-quit", P, "421 to QUIT", "WARNING", "quit: 421 4.3.2 Service",
         fake({"QUIT": SERVICE_421})),
    smtp("smtp-421-quit-relay", R, "421 to QUIT, after every probe was answered", "OK",
         "16 relay probes refused", fake({"QUIT": SERVICE_421})),
    # -- AUTH refused, the credentials quoted back
    smtp("smtp-auth-echo-plain", P, "AUTH PLAIN refused, the server quoting the PLAIN token "
         "back (--allow-plaintext-auth)", "CRITICAL",
         "auth: 535 5.7.8 Authentication failed: you sent AUTH PLAIN ********",
         fake({"AUTH": _quote_back}, ehlo_keywords=("AUTH PLAIN LOGIN",)), args=SASL_LOGIN,
         password=SASL_SECRET),
    smtp("smtp-auth-echo-login", P, "AUTH LOGIN refused, the server quoting the password "
         "back in base64 (--sasl-mechanism LOGIN --allow-plaintext-auth)", "CRITICAL",
         "auth: 535 5.7.8 Authentication failed: you sent ********",
         fake({"AUTH": "334 VXNlcm5hbWU6", _b64("u"): "334 UGFzc3dvcmQ6",
               _b64(SASL_SECRET): _quote_back}, ehlo_keywords=("AUTH PLAIN LOGIN",)),
         args={P: (*SASL_LOGIN[P], "--sasl-mechanism", "LOGIN")}, password=SASL_SECRET),
    # -- unexpected positive replies
    smtp("smtp-data-250", P, "250 to DATA instead of 354 (with --send-data)", "CRITICAL",
         "data: 250 2.0.0 Ok", fake({"DATA": "250 2.0.0 Ok"}), args=SEND_DATA),

    # -- STARTTLS
    tls("tls-starttls-454", P, "STARTTLS offered, then refused with 454", "CRITICAL",
        "STARTTLS refused: 454 4.7.0 TLS not available",
        fake({"STARTTLS": "454 4.7.0 TLS not available due to local problem"})),
    tls("tls-starttls-454-required", P, "STARTTLS refused with 454, with --require-starttls",
        "CRITICAL", "STARTTLS refused: 454 4.7.0 TLS not available",
        fake({"STARTTLS": "454 4.7.0 TLS not available due to local problem"}),
        args={P: ("--require-starttls",)}),
    tls("tls-starttls-454-relay", R, "STARTTLS offered, then refused with 454", "WARNING",
        "starttls: 454 4.7.0 TLS not available",
        fake({"STARTTLS": "454 4.7.0 TLS not available due to local problem"})),
    tls("tls-starttls-stall", BOTH, "no reply to STARTTLS", "CRITICAL",
        f"starttls: {NO_REPLY}", fake({"STARTTLS": STALL}), timeout=STALL_T),
    tls("tls-starttls-missing-required", P,
        "STARTTLS not offered (lab Postfix, smtpd_tls_security_level=none), with "
        "--require-starttls", "CRITICAL", "STARTTLS not offered",
        lab_endpoint("notls", "--require-starttls"), lab=True),
    tls("tls-starttls-missing", P, "STARTTLS not offered (lab Postfix), without "
        "--require-starttls", "OK", "no STARTTLS", lab_endpoint("notls"), lab=True),
    # -- the handshake
    tls("tls-handshake-garbage", BOTH, "220 to STARTTLS, then plain text instead of TLS",
        "CRITICAL", "tls_handshake: handshake failed: WRONG_VERSION_NUMBER",
        hostile({"EHLO": EHLO_STARTTLS,
                 "STARTTLS": (READY, AWAIT, b"HTTP/1.1 400 Bad Request\r\n\r\n", SILENCE)})),
    tls("tls-handshake-close", BOTH, "220 to STARTTLS, then the connection closed",
        "CRITICAL", "tls_handshake: handshake failed",
        hostile({"EHLO": EHLO_STARTTLS, "STARTTLS": (READY, AWAIT, CLOSE)})),
    tls("tls-handshake-stall", BOTH, "220 to STARTTLS, then no TLS handshake (silence)",
        "CRITICAL", "tls_handshake: TLS handshake did not finish within",
        fake({"STARTTLS": ("220 2.0.0 Ready to start TLS", STALL)}), timeout=STALL_T),
    tls("tls-handshake-drip", BOTH, "TLS handshake dripped a few bytes per second",
        "CRITICAL", "tls_handshake: TLS handshake did not finish within",
        hostile({"EHLO": EHLO_STARTTLS,
                 "STARTTLS": (READY, AWAIT, Drip(TLS_RECORD, 0.25))}),
        timeout=STALL_T),
    # -- certificates (check_smtp_phases judges them; check_open_relay only probes)
    tls("tls-cert-private-ca", P,
        "certificate from a CA not in the trust store (lab Postfix, no --ca-file)",
        "WARNING", "certificate: untrusted (self-signed certificate in chain)",
        lab_endpoint("mx1", "--servername", "mx1.posture.test"), lab=True),
    tls("tls-cert-expired", P, "certificate expired", "CRITICAL",
        "certificate: expired 1 day ago", certified("expired")),
    tls("tls-cert-expired-ok", P, "certificate expired, with --cert-error-state ok",
        "CRITICAL", "certificate: expired 1 day ago",
        certified("expired", "--cert-error-state", "ok")),
    tls("tls-cert-expired-relay", R,
        "certificate expired (check_open_relay does not judge certificates)", "OK",
        "16 relay probes refused", certified("expired")),
    tls("tls-cert-notyet", P, "certificate not yet valid", "CRITICAL",
        "certificate: not valid before", certified("notyet")),
    tls("tls-cert-notyet-ok", P, "certificate not yet valid, with --cert-error-state ok",
        "CRITICAL", "certificate: not valid before",
        certified("notyet", "--cert-error-state", "ok")),
    tls("tls-cert-selfsigned", P, "self-signed certificate", "WARNING",
        "certificate: untrusted (self-signed certificate)", certified("selfsigned")),
    tls("tls-cert-selfsigned-ok", P, "self-signed certificate, with --cert-error-state ok",
        "OK", "STARTTLS TLSv1.3", certified("selfsigned", "--cert-error-state", "ok")),
    tls("tls-cert-wronghost", P, "certificate for another name", "WARNING",
        f"certificate: name mismatch for {TLS_NAME}", certified("wronghost")),
    tls("tls-cert-wronghost-ok", P,
        "certificate for another name, with --cert-error-state ok", "OK", "STARTTLS TLSv1.3",
        certified("wronghost", "--cert-error-state", "ok")),
    tls("tls-cert-weak-key", P, "weak key (RSA 1024 bits)", "WARNING",
        "certificate: weak key (RSA 1024 bits)", certified("rsa1024")),
    tls("tls-cert-weak-key-ok", P, "weak key (RSA 1024 bits), with --cert-error-state ok",
        "WARNING", "certificate: weak key (RSA 1024 bits)",
        certified("rsa1024", "--cert-error-state", "ok")),
    tls("tls-cert-sha1", P, "SHA-1 signature", "WARNING",
        "certificate: weak signature (sha1)", certified("sha1")),
    tls("tls-cert-sha1-ok", P, "SHA-1 signature, with --cert-error-state ok", "WARNING",
        "certificate: weak signature (sha1)", certified("sha1", "--cert-error-state", "ok")),
]

MATRIX = [case.row for case in CASES]

#: row id -> the whole line a user reads for the fault, for each run (tests.faultmatrix)
SAYS: dict[str, tuple[str, ...]] = {
    "smtp-connect-refused": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 connect: connection refused",
        "OPEN_RELAY CRITICAL - 127.0.27.1 connect: connection refused (17 probes untested)",
    ),
    "smtp-connect-unreachable": (
        "SMTP_PHASES WARNING - 203.0.113.25 connect: Network is unreachable",
        "OPEN_RELAY WARNING - 203.0.113.25 connect: Network is unreachable (17 probes "
        "untested)",
    ),
    "smtp-connect-blackhole": (
        "SMTP_PHASES CRITICAL - 198.51.100.25 connect: no connection within {N}s",
        "OPEN_RELAY CRITICAL - 198.51.100.25 connect: no connection within {N}s (17 probes "
        "untested)",
    ),
    "smtp-banner-never": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 banner: no complete reply within {N}s",
        "OPEN_RELAY CRITICAL - 127.0.27.1 banner: no complete reply within {N}s (17 probes "
        "untested)",
    ),
    "smtp-banner-stall": (
        "SMTP_PHASES CRITICAL - 127.0.27.9 banner: no complete reply within {N}s",
        "OPEN_RELAY CRITICAL - 127.0.27.9 banner: no complete reply within {N}s (17 probes "
        "untested)",
    ),
    "smtp-banner-drip": (
        "SMTP_PHASES CRITICAL - 127.0.27.9 banner: no complete reply within {N}s",
        "OPEN_RELAY CRITICAL - 127.0.27.9 banner: no complete reply within {N}s (17 probes "
        "untested)",
    ),
    "smtp-banner-221": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 banner: 221 2.0.0 Bye",
        "OPEN_RELAY CRITICAL - 127.0.27.1 banner: 221 2.0.0 Bye",
    ),
    "smtp-ehlo-stall": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 ehlo: no complete reply within {N}s",
        "OPEN_RELAY CRITICAL - 127.0.27.1 ehlo: no complete reply within {N}s (17 probes "
        "untested)",
    ),
    "smtp-mail-stall": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 mail: no complete reply within {N}s",
        "OPEN_RELAY CRITICAL - 127.0.27.1 mail: no complete reply within {N}s (17 probes "
        "untested)",
    ),
    "smtp-rcpt-stall": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 rcpt: no complete reply within {N}s",
        "OPEN_RELAY CRITICAL - 127.0.27.1 rcpt: no complete reply within {N}s (17 probes "
        "untested)",
    ),
    "smtp-data-stall": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 data: no complete reply within {N}s",
    ),
    "smtp-body-stall": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 body: no complete reply within {N}s",
    ),
    "smtp-rset-stall": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 rset: no complete reply within {N}s",
        "OPEN_RELAY CRITICAL - 127.0.27.1 rset: no complete reply within {N}s (16 probes "
        "untested)",
    ),
    "smtp-quit-stall": (
        "SMTP_PHASES WARNING - 127.0.27.1 quit: no complete reply within {N}s",
    ),
    "smtp-quit-stall-relay": (
        "OPEN_RELAY OK - 127.0.27.1: 16 relay probes refused, <> to postmaster accepted, {N}s",
    ),
    "smtp-line-1mb": (
        "SMTP_PHASES CRITICAL - 127.0.27.9 banner: reply line longer than 8192 bytes",
        "OPEN_RELAY CRITICAL - 127.0.27.9 banner: reply line longer than 8192 bytes (17 "
        "probes untested)",
    ),
    "smtp-continuation-flood": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 ehlo: reply longer than 100 lines",
        "OPEN_RELAY CRITICAL - 127.0.27.1 ehlo: reply longer than 100 lines (17 probes "
        "untested)",
    ),
    "smtp-code-nonnumeric": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 banner: not an SMTP reply: 'ABC fake.posture.test "
        "ESMTP'",
        "OPEN_RELAY CRITICAL - 127.0.27.1 banner: not an SMTP reply: 'ABC fake.posture.test "
        "ESMTP' (17 probes untested)",
    ),
    "smtp-code-mismatch": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 ehlo: reply code changed within a reply: 250 then "
        "251",
        "OPEN_RELAY CRITICAL - 127.0.27.1 ehlo: reply code changed within a reply: 250 then "
        "251 (17 probes untested)",
    ),
    "smtp-reply-nul": (
        "SMTP_PHASES CRITICAL - 127.0.27.9 banner: 554 5.3.2 mx.posture.test no service here",
        "OPEN_RELAY CRITICAL - 127.0.27.9 banner: 554 5.3.2 mx.posture.test no service here",
    ),
    "smtp-reply-not-utf8": (
        "SMTP_PHASES CRITICAL - 127.0.27.9 banner: 554 5.3.2 No service for you "
        "\ufffdd\ufffdsol\ufffd",
        "OPEN_RELAY CRITICAL - 127.0.27.9 banner: 554 5.3.2 No service for you "
        "\ufffdd\ufffdsol\ufffd",
    ),
    "smtp-reply-controls": (
        "SMTP_PHASES CRITICAL - 127.0.27.9 banner: 554 5.3.2 No service here 31m txet",
        "OPEN_RELAY CRITICAL - 127.0.27.9 banner: 554 5.3.2 No service here 31m txet",
    ),
    "smtp-reset-mid-reply": (
        "SMTP_PHASES CRITICAL - 127.0.27.9 ehlo: connection reset by server",
        "OPEN_RELAY CRITICAL - 127.0.27.9 ehlo: connection reset by server (17 probes "
        "untested)",
    ),
    "smtp-421-banner": (
        "SMTP_PHASES WARNING - 127.0.27.1 banner: 421 4.3.2 Service shutting down, closing "
        "transmission channel",
        "OPEN_RELAY WARNING - 127.0.27.1 banner: 421 4.3.2 Service shutting down, closing "
        "transmission channel",
    ),
    "smtp-421-ehlo": (
        "SMTP_PHASES WARNING - 127.0.27.1 ehlo: 421 4.3.2 Service shutting down, closing "
        "transmission channel",
        "OPEN_RELAY WARNING - 127.0.27.1 ehlo: 421 4.3.2 Service shutting down, closing "
        "transmission channel",
    ),
    "smtp-421-starttls": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 STARTTLS refused: 421 4.3.2 Service shutting "
        "down, closing transmission channel",
    ),
    "smtp-421-starttls-relay": (
        "OPEN_RELAY WARNING - 127.0.27.1 starttls: 421 4.3.2 Service shutting down, closing "
        "transmission channel",
    ),
    "smtp-421-mail": (
        "SMTP_PHASES WARNING - 127.0.27.1 mail: 421 4.3.2 Service shutting down, closing "
        "transmission channel",
    ),
    "smtp-421-mail-relay": (
        "OPEN_RELAY WARNING - 127.0.27.1: 17 probes untested, 421 4.3.2 Service shutting "
        "down, closing transmission channel",
    ),
    "smtp-421-rcpt": (
        "SMTP_PHASES WARNING - 127.0.27.1 rcpt: RCPT <probe@posture.test>: 421 4.3.2 Service "
        "shutting down, closing transmission channel",
    ),
    "smtp-421-rcpt-relay": (
        "OPEN_RELAY WARNING - 127.0.27.1: 17 probes untested, 421 4.3.2 Service shutting "
        "down, closing transmission channel",
    ),
    "smtp-421-data": (
        "SMTP_PHASES WARNING - 127.0.27.1 data: 421 4.3.2 Service shutting down, closing "
        "transmission channel",
    ),
    "smtp-421-body": (
        "SMTP_PHASES WARNING - 127.0.27.1 body: 421 4.3.2 Service shutting down, closing "
        "transmission channel",
    ),
    "smtp-421-rset": (
        "SMTP_PHASES WARNING - 127.0.27.1 rset: 421 4.3.2 Service shutting down, closing "
        "transmission channel",
    ),
    "smtp-421-rset-relay": (
        "OPEN_RELAY OK - 127.0.27.1: 16 relay probes refused, <> to postmaster accepted, {N}s",
    ),
    "smtp-421-quit": (
        "SMTP_PHASES WARNING - 127.0.27.1 quit: 421 4.3.2 Service shutting down, closing "
        "transmission channel",
    ),
    "smtp-421-quit-relay": (
        "OPEN_RELAY OK - 127.0.27.1: 16 relay probes refused, <> to postmaster accepted, {N}s",
    ),
    "smtp-auth-echo-plain": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 auth: 535 5.7.8 Authentication failed: you sent "
        "AUTH PLAIN ********; 127.0.27.1 offers AUTH (PLAIN LOGIN) without TLS",
    ),
    "smtp-auth-echo-login": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 auth: 535 5.7.8 Authentication failed: you sent "
        "********; 127.0.27.1 offers AUTH (PLAIN LOGIN) without TLS",
    ),
    "smtp-data-250": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 data: 250 2.0.0 Ok",
    ),
    "tls-starttls-454": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 STARTTLS refused: 454 4.7.0 TLS not available due "
        "to local problem",
    ),
    "tls-starttls-454-required": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 STARTTLS refused: 454 4.7.0 TLS not available due "
        "to local problem",
    ),
    "tls-starttls-454-relay": (
        "OPEN_RELAY WARNING - 127.0.27.1 starttls: 454 4.7.0 TLS not available due to local "
        "problem",
    ),
    "tls-starttls-stall": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 starttls: no complete reply within {N}s",
        "OPEN_RELAY CRITICAL - 127.0.27.1 starttls: no complete reply within {N}s (17 probes "
        "untested)",
    ),
    "tls-starttls-missing-required": (
        "SMTP_PHASES CRITICAL - 127.0.25.5 STARTTLS not offered",
    ),
    "tls-starttls-missing": (
        "SMTP_PHASES OK - 127.0.25.5, banner 220, no STARTTLS, 1 RCPT accepted, {N}s",
    ),
    "tls-handshake-garbage": (
        "SMTP_PHASES CRITICAL - 127.0.27.9 tls_handshake: handshake failed: "
        "WRONG_VERSION_NUMBER",
        "OPEN_RELAY CRITICAL - 127.0.27.9 tls_handshake: handshake failed: "
        "WRONG_VERSION_NUMBER (17 probes untested)",
    ),
    "tls-handshake-close": (
        "SMTP_PHASES CRITICAL - 127.0.27.9 tls_handshake: handshake failed: "
        "UNEXPECTED_EOF_WHILE_READING",
        "OPEN_RELAY CRITICAL - 127.0.27.9 tls_handshake: handshake failed: "
        "UNEXPECTED_EOF_WHILE_READING (17 probes untested)",
    ),
    "tls-handshake-stall": (
        "SMTP_PHASES CRITICAL - 127.0.27.1 tls_handshake: TLS handshake did not finish "
        "within {N}s",
        "OPEN_RELAY CRITICAL - 127.0.27.1 tls_handshake: TLS handshake did not finish within "
        "{N}s (17 probes untested)",
    ),
    "tls-handshake-drip": (
        "SMTP_PHASES CRITICAL - 127.0.27.9 tls_handshake: TLS handshake did not finish "
        "within {N}s",
        "OPEN_RELAY CRITICAL - 127.0.27.9 tls_handshake: TLS handshake did not finish within "
        "{N}s (17 probes untested)",
    ),
    "tls-cert-private-ca": (
        "SMTP_PHASES WARNING - mx1.posture.test[127.0.25.1] certificate: untrusted "
        "(self-signed certificate in chain)",
    ),
    "tls-cert-expired": (
        "SMTP_PHASES CRITICAL - fake.posture.test[127.0.27.1] certificate: expired 1 day ago",
    ),
    "tls-cert-expired-ok": (
        "SMTP_PHASES CRITICAL - fake.posture.test[127.0.27.1] certificate: expired 1 day ago",
    ),
    "tls-cert-expired-relay": (
        "OPEN_RELAY OK - 127.0.27.1: 16 relay probes refused, <> to postmaster accepted, {N}s",
    ),
    "tls-cert-notyet": (
        "SMTP_PHASES CRITICAL - fake.posture.test[127.0.27.1] certificate: not valid before "
        "{DATE}",
    ),
    "tls-cert-notyet-ok": (
        "SMTP_PHASES CRITICAL - fake.posture.test[127.0.27.1] certificate: not valid before "
        "{DATE}",
    ),
    "tls-cert-selfsigned": (
        "SMTP_PHASES WARNING - fake.posture.test[127.0.27.1] certificate: untrusted "
        "(self-signed certificate)",
    ),
    "tls-cert-selfsigned-ok": (
        "SMTP_PHASES OK - fake.posture.test[127.0.27.1], banner 220, STARTTLS TLSv1.3, 1 "
        "RCPT accepted, {N}s",
    ),
    "tls-cert-wronghost": (
        "SMTP_PHASES WARNING - fake.posture.test[127.0.27.1] certificate: name mismatch for "
        "fake.posture.test",
    ),
    "tls-cert-wronghost-ok": (
        "SMTP_PHASES OK - fake.posture.test[127.0.27.1], banner 220, STARTTLS TLSv1.3, 1 "
        "RCPT accepted, {N}s",
    ),
    "tls-cert-weak-key": (
        "SMTP_PHASES WARNING - fake.posture.test[127.0.27.1] certificate: weak key (RSA 1024 "
        "bits)",
    ),
    "tls-cert-weak-key-ok": (
        "SMTP_PHASES WARNING - fake.posture.test[127.0.27.1] certificate: weak key (RSA 1024 "
        "bits)",
    ),
    "tls-cert-sha1": (
        "SMTP_PHASES WARNING - fake.posture.test[127.0.27.1] certificate: weak signature "
        "(sha1)",
    ),
    "tls-cert-sha1-ok": (
        "SMTP_PHASES WARNING - fake.posture.test[127.0.27.1] certificate: weak signature "
        "(sha1)",
    ),
}


# -- running the plugins ------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("fault-certs")
    ca = LabCA("Fault matrix CA")
    now = datetime.datetime.now(datetime.timezone.utc)
    day = datetime.timedelta(days=1)
    made = {
        "expired": ca.issue([TLS_NAME], not_before=now - 60 * day, not_after=now - day),
        "notyet": ca.issue([TLS_NAME], not_before=now + 2 * day, not_after=now + 90 * day),
        "selfsigned": self_signed(TLS_NAME),
        "wronghost": ca.issue(["elsewhere.posture.test"]),
        "rsa1024": ca.issue([TLS_NAME], key_bits=1024, fresh_key=True),
        "sha1": ca.issue([TLS_NAME], hash="sha1"),
    }
    return str(ca.write(directory)), {name: cert.write(directory, name)
                                      for name, cert in made.items()}


class Env:
    """What a row's server may need, fetched only by the rows that need it."""

    def __init__(self, request):
        self.request = request

    @property
    def certs(self):
        return self.request.getfixturevalue("certs")

    @property
    def lab(self):
        return self.request.getfixturevalue("lab_postfix")


@dataclass
class Run:
    plugin: str
    exitcode: int
    output: str
    elapsed: float

    @property
    def first_line(self) -> str:
        # what Nagios takes: up to the first "\n" (str.splitlines() would also
        # split at characters no monitoring system treats as line ends)
        return self.output.split("\n", 1)[0]


def argv(plugin: str, target: Target, case: Case) -> list[str]:
    where = ["-H", target.host, "-p", str(target.port)]
    if plugin == P:
        where += ["--to", MAILBOX]
    else:
        where = ["-D", "posture.test", *where]
    return [*where, "--helo-name", HELO, "-t", f"{case.timeout:g}",
            *target.args.get(plugin, ()),
            *case.args.get(plugin, ())]


def run_here(plugin: str, args: list[str]) -> Run:
    started = time.monotonic()
    result = run_main(MAINS[plugin], args)
    return Run(plugin, result.exitcode, result.output, time.monotonic() - started)


#: a console script's own steps (import, then main()), timing main() alone: interpreter
#: start-up on a busy machine is no part of -t
TIMED_MAIN = ("import sys, time\n"
              "from check_smtp_posture.plugins.{plugin} import main\n"
              "started = time.monotonic()\n"
              "code = main(sys.argv[1:])\n"
              "print(time.monotonic() - started, file=sys.stderr)\n"
              "sys.exit(code)\n")


def run_in_netns(plugins: list[str], args: dict) -> list[Run]:
    """Each plugin as a process in a network namespace of its own, all at once."""
    reason = _lab_requirement("unshare", "ip")
    if reason:
        pytest.skip(reason)
    procs = [subprocess.Popen(["unshare", "--net", "sh", "-c", NETNS_SETUP, "sh",
                               sys.executable, "-c", TIMED_MAIN.format(plugin=plugin),
                               *args[plugin]],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for plugin in plugins]
    runs = []
    for plugin, proc in zip(plugins, procs):
        output, errors = proc.communicate(timeout=30)
        secretguard.check(args[plugin], os.environ, output, errors)
        assert proc.returncode is not None and errors.strip(), (plugin, output, errors)
        elapsed = float(errors.strip().splitlines()[-1])
        runs.append(Run(plugin, proc.returncode, output + errors, elapsed))
    return runs


def params():
    for case in CASES:
        marks = [pytest.mark.lab] if case.lab else []
        if case.defect:
            marks.append(pytest.mark.xfail(strict=True, reason=case.defect))
        # a run that holds a password runs at every verbosity: none may show it
        # (every output is checked for it: tests/secretguard.py)
        for verbosity in (0, 1, 2, 3) if case.password else (0,):
            yield pytest.param(case, verbosity, marks=marks,
                               id=case.row.id + (f"-{'v' * verbosity}" if verbosity else ""))


@pytest.mark.parametrize("case, verbosity", params())
def test_fault(case: Case, verbosity: int, request, monkeypatch):
    row = case.row
    plugins = row.plugins.split(", ")
    if case.password:
        monkeypatch.setenv("CHECK_SMTP_PASSWORD", case.password)
    with case.serve(Env(request)) as target:
        args = {plugin: argv(plugin, target, case) + (["-" + "v" * verbosity] if verbosity
                                                      else [])
                for plugin in plugins}
        if case.netns:
            runs = run_in_netns(plugins, args)
        else:
            runs = [run_here(plugin, args[plugin]) for plugin in plugins]
    for run in runs:
        first = run.first_line
        assert "Traceback" not in run.output, run.output
        assert run.exitcode == EXIT[row.state], (run.plugin, run.output)
        assert first.startswith(f"{NAMES[run.plugin]} {row.state} - "), (run.plugin, first)
        assert row.message in first, (run.plugin, first)
        assert first.isprintable(), (run.plugin, first)
        assert run.elapsed < case.timeout + MARGIN, (run.plugin, run.elapsed)
    check_says(SAYS, row.id, [(run.plugin, said(run.plugin, run.output)) for run in runs])


# -- the matrix itself ------------------------------------------------------------------


def test_rows_are_unique_and_well_formed():
    ids = [row.id for row in MATRIX]
    assert len(ids) == len(set(ids))
    for row in MATRIX:
        assert row.area in ("SMTP", "TLS") and row.id.startswith(row.area.lower() + "-")
        assert row.state in EXIT
        assert set(row.plugins.split(", ")) <= {P, R}
        assert row.fault and row.message and "\n" not in row.fault + row.message


@pytest.mark.parametrize("serve", [fake({}), hostile({})], ids=["fakesmtp", "hostile"])
def test_without_the_fault_both_plugins_are_ok(serve, request):
    base = Case(Fault("baseline", "SMTP", BOTH, "", "OK", ""), serve)
    with serve(Env(request)) as target:
        runs = [run_here(plugin, argv(plugin, target, base)) for plugin in (P, R)]
    assert [run.exitcode for run in runs] == [0, 0], [run.output for run in runs]
    assert "1 RCPT accepted" in runs[0].first_line
    assert "16 relay probes refused, <> to postmaster accepted" in runs[1].first_line
