"""check_mail_roundtrip in the fault matrix: hostile mailboxes (area "mailbox"), bad
arguments and state files.

The loop is the lab's real one (-D loop.test, tests/lab/roundtriplab.py); the mailbox
where it ends is a scripted fake (FakeMailbox) for what Dovecot will not do on demand:
garbage, silence, resets, refusals, plain text on the TLS port. Each fake has an address
of its own (MAILBOXES) and listens on the scheme's usual port, so the URL is the one a
user would write. Every run must end within -t with the row's state and fragment, and a
mailbox that fails before it is usable must cost no probe: the lab Postfix takes no
message from FAULTS_SENDER (told by sender: other test sessions share the loop MX).

A row whose fault comes after the mailbox is open sends its probes; they come back to the
lab's real monitor mailbox (nothing here reads it) and are swept from its Maildir by
their sender, FAULTS_SENDER, which no other test uses.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import mailbox
import os
import re
import socket
import struct
import time
from dataclasses import dataclass

import pytest

from check_smtp_posture.plugins.check_mail_roundtrip import MAILBOX_PASSWORD_ENV, main
from tests.conftest import run_main
from tests.faultmatrix import AREAS, Fault, check_says, said
from tests.lab import roundtriplab as rt
from tests.lab.threadedserver import ThreadedServer

EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
PLUGIN = "check_mail_roundtrip"
NAME = "MAIL_ROUNDTRIP"
TIMEOUT = 3.0
MARGIN = 0.5
USER = rt.MONITOR_USER  # the fakes take any user; this one is an address, as in real use
PASSWORD = "faults-secret"  # never printed
#: a password that IMAP quotes and Python's bytes repr escapes: echoed back in those forms
TRICKY_PASSWORD = "faults-\"se\\cret'"
#: the probes' sender: the sweep takes exactly this module's probes, and no other test's
#: cleanup takes them for its own
FAULTS_SENDER = "faults@monitor.test"
TICK = 0.05


# --------------------------------------------------------------------------- the fakes


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


STALL = _Marker("STALL")  # say nothing more; read and drop until the client leaves
RESET = _Marker("RESET")  # close with a TCP RST
CLOSE = _Marker("CLOSE")  # close without a word


class _End(Exception):
    """This connection's conversation is over."""


#: an empty INBOX with IDLE and UIDPLUS, as far as the plugin asks ("{tag}": the command's)
IMAP_DEFAULTS = {
    "greeting": b"* OK fake IMAP ready\r\n",
    "CAPABILITY": b"* CAPABILITY IMAP4rev1 IDLE UIDPLUS\r\n{tag} OK CAPABILITY done\r\n",
    "LOGIN": b"{tag} OK LOGIN done\r\n",
    "LIST": b'* LIST (\\HasNoChildren) "/" INBOX\r\n{tag} OK LIST done\r\n',
    "SELECT": b"* FLAGS (\\Seen \\Deleted)\r\n* 0 EXISTS\r\n* 0 RECENT\r\n"
              b"* OK [UIDVALIDITY 1] UIDs valid\r\n* OK [UIDNEXT 1] next UID\r\n"
              b"{tag} OK [READ-WRITE] SELECT done\r\n",
    "SEARCH": b"* SEARCH\r\n{tag} OK SEARCH done\r\n",
    "IDLE": b"+ idling\r\n",
    "DONE": b"{tag} OK IDLE done\r\n",
    "NOOP": b"{tag} OK NOOP done\r\n",
    "LOGOUT": b"* BYE logging out\r\n{tag} OK LOGOUT done\r\n",
    "*": b"{tag} BAD unknown command\r\n",
}

#: an empty maildrop, no STLS offered
POP3_DEFAULTS = {
    "greeting": b"+OK fake POP3 ready\r\n",
    "CAPA": b"+OK capabilities\r\nUSER\r\nUIDL\r\nTOP\r\n.\r\n",
    "USER": b"+OK\r\n",
    "PASS": b"+OK logged in\r\n",
    "UIDL": b"+OK\r\n.\r\n",
    "LIST": b"+OK\r\n.\r\n",
    "QUIT": b"+OK bye\r\n",
    "*": b"-ERR unknown command\r\n",
}

_LITERAL = re.compile(rb"\{(\d+)(\+?)\}$")


class FakeMailbox(ThreadedServer):
    """An IMAP or POP3 server on `address`:`port` that answers as `script` says.

    A script maps "greeting" or a command word (IMAP: after the tag, the word after UID
    for UID commands; DONE ends an IDLE) to a step: bytes ("{tag}" is the command's
    tag), STALL, RESET, CLOSE, a tuple of steps in turn, or a callable `(line) -> step`
    for an answer that depends on the command line. Unscripted commands get the
    protocol's defaults above: an empty mailbox that works. Every command line
    received is kept in `lines`.
    """

    thread_name = "fake-mailbox"

    def __init__(self, protocol: str, address: str, port: int, script: dict):
        super().__init__()
        self.protocol = protocol
        self.address = address
        self.port = port
        defaults = IMAP_DEFAULTS if protocol == "imap" else POP3_DEFAULTS
        self.script = {**defaults, **script}
        self.lines: list[bytes] = []

    def start(self) -> FakeMailbox:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.address, self.port))
        listener.listen(16)
        listener.settimeout(TICK)
        self._listen(listener)
        return self

    def _serve(self, conn: socket.socket, peer) -> None:
        conn.settimeout(TICK)
        buffer = [b""]
        idle_tag = b"*"
        try:
            self._perform(conn, self.script["greeting"], b"*")
            while True:
                line = self._readline(conn, buffer)
                self.lines.append(line)
                tag, word = self._command(line)
                if word == "IDLE":
                    idle_tag = tag
                elif word == "DONE":
                    tag = idle_tag
                step = self.script.get(word, self.script["*"])
                self._perform(conn, step(line) if callable(step) else step, tag)
                if word in ("LOGOUT", "QUIT"):
                    return
        except (_End, OSError):
            pass

    def _command(self, line: bytes) -> tuple[bytes, str]:
        words = line.split()
        if not words:
            return b"*", ""
        if self.protocol == "pop3":
            return b"", words[0].decode("latin-1").upper()
        if words[0].upper() == b"DONE":
            return b"*", "DONE"
        verbs = [w.decode("latin-1").upper() for w in words[1:3]]
        if verbs and verbs[0] == "UID" and len(verbs) > 1:
            return words[0], verbs[1]
        return words[0], verbs[0] if verbs else ""

    def _readline(self, conn: socket.socket, buffer: list) -> bytes:
        """One command line; an IMAP literal ({n}) is read into it."""
        line = self._rawline(conn, buffer)
        while self.protocol == "imap" and (match := _LITERAL.search(line)):
            if not match.group(2):  # a synchronising literal waits for our go-ahead
                self._send(conn, b"+ go ahead\r\n")
            size = int(match.group(1))
            while len(buffer[0]) < size:
                buffer[0] += self._recv(conn)
            literal, buffer[0] = buffer[0][:size], buffer[0][size:]
            line = line[:match.start()] + literal + self._rawline(conn, buffer)
        return line

    def _rawline(self, conn: socket.socket, buffer: list) -> bytes:
        while b"\n" not in buffer[0]:
            if len(buffer[0]) > 65536:
                raise _End
            buffer[0] += self._recv(conn)
        line, _, buffer[0] = buffer[0].partition(b"\n")
        return line.rstrip(b"\r")

    def _recv(self, conn: socket.socket) -> bytes:
        while not self._stop.is_set():
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise _End
            return data
        raise _End

    def _send(self, conn: socket.socket, data: bytes) -> None:
        if self._stop.is_set():
            raise _End
        conn.settimeout(2)
        try:
            conn.sendall(data)
        finally:
            conn.settimeout(TICK)

    def _perform(self, conn: socket.socket, step, tag: bytes) -> None:
        if isinstance(step, tuple):
            for part in step:
                self._perform(conn, part, tag)
        elif isinstance(step, bytes):
            self._send(conn, step.replace(b"{tag}", tag))
        elif step is STALL:
            while True:
                self._recv(conn)
        elif step is RESET:  # SO_LINGER 0: close() sends a RST instead of a FIN
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            raise _End
        elif step is CLOSE:
            raise _End
        else:
            raise ValueError(f"unknown step {step!r}")


@dataclass(frozen=True)
class Fake:
    """One fake: where it listens and what it says."""

    protocol: str  # "imap" or "pop3"
    address: str
    port: int
    script: dict


def fetched(uid: int, item: str, data: bytes, date: str = "14-Nov-2023 22:13:20 +0000") \
        -> bytes:
    """An untagged FETCH response of message `uid` carrying `item` (BODY[HEADER]...)."""
    return (f'* 1 FETCH (UID {uid} INTERNALDATE "{date}" {item} {{{len(data)}}}\r\n'.encode()
            + data + b")\r\n{tag} OK FETCH done\r\n")


#: a person's message in the probe mailbox: the words of a probe token, never the token
STRANGER_HEADER = (b"From: colleague@example.org\r\nTo: monitor@monitor.test\r\n"
                   b"Subject: posture of the mail loop\r\n\r\n")
STRANGER_BODY = b"Our mail posture is fine; see ticket 1700000000 and 0123456789ab.\r\n"


def _loose_search(line: bytes) -> bytes:
    """A word-based full-text index: every SEARCH TEXT finds the stranger's message 7."""
    hit = b" 7" if b" TEXT " in line.upper() else b""
    return b"* SEARCH" + hit + b"\r\n{tag} OK SEARCH done\r\n"


def _stranger(line: bytes) -> bytes:
    if b"HEADER" in line.upper():
        return fetched(7, "BODY[HEADER]", STRANGER_HEADER)
    return fetched(7, "BODY[TEXT]<0>", STRANGER_BODY)


#: a probe of an earlier run waiting in a fake mailbox (an asynchronous run collects it):
#: sent at 22:13:20.75, dated 22:13:20 by the mailbox (INTERNALDATE, Received), which
#: counts arrivals to the second
ARRIVED_TOKEN = "posture-1700000000-0123456789ab"
ARRIVED_SENT = 1700000000.75
ARRIVED_DATE = "14-Nov-2023 22:13:20 +0000"
ARRIVED_HEADER = (
    b"Received: from mx1.loop.test by mail.monitor.test with ESMTP id 1;\r\n"
    b" Tue, 14 Nov 2023 22:13:20 +0000\r\n"
    b"From: check_smtp_posture <" + FAULTS_SENDER.encode() + b">\r\n"
    b"Subject: check_smtp_posture round-trip probe " + ARRIVED_TOKEN.encode() + b"\r\n"
    b"X-Smtp-Posture-Probe: token=" + ARRIVED_TOKEN.encode()
    + b"; domain=loop.test; mx=mx1.loop.test[127.0.25.13]\r\n\r\n")
ARRIVED_MESSAGE = ARRIVED_HEADER + b"probe token: " + ARRIVED_TOKEN.encode() + b"\r\n"
#: the state file of an asynchronous run that sent it (a release before issue 24: the
#: probe's perfdata label prefix, not its endpoint key)
ARRIVED_STATE = json.dumps({"loop.test": {ARRIVED_TOKEN: {
    "label": "mx1.loop.test[127.0.25.13]", "prefix": "mx1.loop.test_127.0.25.13_",
    "sent": ARRIVED_SENT}}}).encode()
#: an IMAP mailbox holding it as message 1
IMAP_ARRIVED = {
    "SEARCH": b"* SEARCH 1\r\n{tag} OK SEARCH done\r\n",
    "FETCH": fetched(1, "BODY[HEADER]", ARRIVED_HEADER, ARRIVED_DATE),
    "STORE": b"{tag} OK STORE done\r\n", "EXPUNGE": b"{tag} OK EXPUNGE done\r\n"}
#: a POP3 maildrop holding it as message 1
POP3_ARRIVED = {
    "UIDL": b"+OK\r\n1 arrived-1\r\n.\r\n",
    "LIST": f"+OK\r\n1 {len(ARRIVED_MESSAGE)}\r\n.\r\n".encode(),
    "TOP": b"+OK\r\n" + ARRIVED_HEADER + b".\r\n",
    "RETR": b"+OK\r\n" + ARRIVED_MESSAGE + b".\r\n",
    "DELE": b"+OK deleted\r\n"}

#: the fakes, by name; their addresses are 127.0.27.140-.169, used nowhere else
MAILBOXES = {
    "imap-smtp-banner": Fake("imap", "127.0.27.140", 143, {
        "greeting": (b"220 mail.example.org ESMTP Postfix\r\n", STALL)}),
    "imap-bye": Fake("imap", "127.0.27.141", 143, {
        "greeting": (b"* BYE Too many connections, try again later\r\n", CLOSE)}),
    "imap-silent": Fake("imap", "127.0.27.142", 143, {"greeting": STALL}),
    "imap-stall": Fake("imap", "127.0.27.143", 143, {"CAPABILITY": STALL}),
    "imap-reset": Fake("imap", "127.0.27.144", 143, {"CAPABILITY": RESET}),
    "imap-login-garbage": Fake("imap", "127.0.27.145", 143, {
        "LOGIN": (b"* 7 FROBNICATE\r\n* garbage \x00\xff nonsense\r\n", STALL)}),
    "imap-login-hangup": Fake("imap", "127.0.27.146", 143, {"LOGIN": CLOSE}),
    "imap-login-no": Fake("imap", "127.0.27.147", 143, {
        "LOGIN": b"{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"}),
    "imap-list-garbage": Fake("imap", "127.0.27.148", 143, {
        "LIST": b"* LIST garbage (((\r\n{tag} OK LIST done\r\n"}),
    "imap-idle-stall": Fake("imap", "127.0.27.149", 143, {"IDLE": (b"+ idling\r\n", STALL)}),
    "imap-starttls-plain": Fake("imap", "127.0.27.150", 143, {
        "CAPABILITY": b"* CAPABILITY IMAP4rev1 STARTTLS\r\n{tag} OK CAPABILITY done\r\n",
        "STARTTLS": b"{tag} OK Begin TLS negotiation now\r\n",
        "*": b"* BAD this is no TLS\r\n"}),
    "imaps-plain": Fake("imap", "127.0.27.151", 993, {}),
    "imap-good": Fake("imap", "127.0.27.152", 143, {}),
    "imap-search-loose": Fake("imap", "127.0.27.154", 143, {
        "SEARCH": _loose_search, "FETCH": _stranger, "STORE": b"{tag} OK STORE done\r\n",
        "EXPUNGE": b"{tag} OK EXPUNGE done\r\n"}),
    "imap-arrived": Fake("imap", "127.0.27.156", 143, IMAP_ARRIVED),
    "imap-internaldate-bogus": Fake("imap", "127.0.27.155", 143, {
        **IMAP_ARRIVED,
        "FETCH": fetched(1, "BODY[HEADER]", ARRIVED_HEADER, "31-Dec-9999 23:59:59 -2400")}),
    "pop3-arrived": Fake("pop3", "127.0.27.157", 110, POP3_ARRIVED),
    "imap-login-echo": Fake("imap", "127.0.27.153", 143, {
        "LOGIN": lambda line: b"{tag} NO [AUTHENTICATIONFAILED] Invalid credentials: "
                              + line.split(b" ", 2)[2] + b"\r\n"}),
    "pop3-err-greeting": Fake("pop3", "127.0.27.160", 110, {
        "greeting": (b"-ERR [SYS/TEMP] Too many connections\r\n", CLOSE)}),
    "pop3-garbage-greeting": Fake("pop3", "127.0.27.161", 110, {
        "greeting": (b"\x00\xff\x1b[2J| no POP3 here\r\n", STALL)}),
    "pop3-user-stall": Fake("pop3", "127.0.27.162", 110, {"USER": STALL}),
    "pop3-pass-refused": Fake("pop3", "127.0.27.163", 110, {
        "PASS": b"-ERR [AUTH] Authentication failed.\r\n"}),
    "pop3-pass-hangup": Fake("pop3", "127.0.27.164", 110, {"PASS": CLOSE}),
    "pop3-quit-err": Fake("pop3", "127.0.27.166", 110, {
        **POP3_ARRIVED, "QUIT": b"-ERR [SYS/TEMP] cannot commit, try again\r\n"}),
    "pop3-quit-hangup": Fake("pop3", "127.0.27.167", 110, {**POP3_ARRIVED, "QUIT": CLOSE}),
    "pop3-quit-garbage": Fake("pop3", "127.0.27.168", 110, {
        **POP3_ARRIVED, "QUIT": b"\x00\xff\x1b[2J| bye?\r\n"}),
    "pop3-pass-echo": Fake("pop3", "127.0.27.165", 110, {
        "PASS": lambda line: b"-ERR [AUTH] Invalid credentials: " + line[5:] + b"\r\n"}),
}


def url(name: str) -> str:
    box = MAILBOXES[name]
    user = USER.replace("@", "%40")
    if box.protocol == "pop3":
        return f"pop3://{user}@{box.address}"
    scheme = "imaps" if box.port == 993 else "imap"
    return f"{scheme}://{user}@{box.address}/INBOX"


def label(name: str) -> str:
    """The mailbox as the first line names it."""
    box = MAILBOXES[name]
    scheme = "pop3" if box.protocol == "pop3" else "imaps" if box.port == 993 else "imap"
    return f"{scheme}://{USER}@{box.address}:{box.port}" + ("" if scheme == "pop3" else "/INBOX")


@pytest.fixture(scope="module")
def fake_mailboxes():
    """Every fake of MAILBOXES, started: name -> FakeMailbox."""
    servers = {name: FakeMailbox(box.protocol, box.address, box.port, box.script).start()
               for name, box in MAILBOXES.items()}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def swept(lab):
    """The lab; at the end, probes of this module left in its monitor Maildir are removed."""
    yield lab
    _sweep(lab, expected=0, timeout=0)


def _sweep(lab, expected: int, timeout: float = 10.0) -> int:
    """Remove this module's probes from the monitor Maildir, waiting for `expected` of them."""
    removed = 0
    end = time.monotonic() + timeout
    while True:
        box = mailbox.Maildir(str(lab.monitor_maildir()), factory=None, create=False)
        for key in list(box.iterkeys()):
            head = box.get_bytes(key).split(b"\n\n")[0]
            if f"<{FAULTS_SENDER}>".encode() in head and b"From: check_smtp_posture" in head:
                box.discard(key)
                removed += 1
        if removed >= expected or time.monotonic() > end:
            return removed
        time.sleep(0.1)


# --------------------------------------------------------------------------- the rows


@dataclass(frozen=True)
class Case:
    row: Fault
    args: tuple  # after -D/--to/--from; "{state}": the state file, "{maildir}": a Maildir,
    #              "{not-pem}": a file that holds no PEM certificate
    password: str | None = PASSWORD  # $CHECK_MAILBOX_PASSWORD (None: unset)
    state_setup: object = None  # bytes written to the state file first, "directory" or "lock"
    sends: bool = False  # the fault comes once the mailbox is open: the probes go out
    maildir: dict | None = None  # the "{maildir}": entry under it -> "fifo" or "loop"


def mailbox_row(id_, name, fault, detail, state="CRITICAL", *extra, sends=False,
                password=PASSWORD) -> Case:
    """A row of a fake mailbox: the first line names it, then says `detail`."""
    return Case(Fault(id_, "mailbox", PLUGIN, fault, state, f"mailbox {label(name)}: {detail}"),
                ("--mailbox", url(name), *extra), sends=sends, password=password)


def usage_row(id_, fault, message, *args, password=PASSWORD) -> Case:
    return Case(Fault(id_, "arguments", PLUGIN, fault, "UNKNOWN", message), args,
                password=password)


def maildir_row(id_, fault, message, entries) -> Case:
    """An asynchronous first run with a Maildir holding `entries` (path -> "fifo" or "loop"):
    it looks once, sends its probes (they go to the lab's mailbox), and says `message`."""
    return Case(Fault(id_, "mailbox", PLUGIN, fault, "WARNING", f"mailbox maildir:MAILDIR: "
                                                                f"{message}"),
                ("--mailbox", "{maildir}", "--state-file", "{state}"), password=None,
                sends=True, maildir=entries)


def collecting_row(id_, name, fault) -> Case:
    """An asynchronous run collecting the probe a fake mailbox holds (ARRIVED_STATE)."""
    return Case(Fault(id_, "mailbox", PLUGIN, fault, "OK", "1 of 2 probes back via 2 MX "
                                                            "endpoints of loop.test"),
                ("--mailbox", url(name), "--state-file", "{state}"), state_setup=ARRIVED_STATE,
                sends=True)


def state_row(id_, fault, state, message, setup, sends=False) -> Case:
    return Case(Fault(id_, "state files", PLUGIN, fault, state, message),
                ("--mailbox", url("imap-good"), "--state-file", "{state}"),
                state_setup=setup, sends=sends)


CASES = [
    # -- IMAP ------------------------------------------------------------------------------
    mailbox_row("rt-imap-greeting-smtp", "imap-smtp-banner",
                "the IMAP port answers with an SMTP banner",
                "greeting: unexpected response: b'220 mail.example.org ESMTP Postfix'"),
    mailbox_row("rt-imap-greeting-bye", "imap-bye",
                "the IMAP server greets with * BYE and hangs up",
                "greeting: * BYE Too many connections, try again later"),
    mailbox_row("rt-imap-no-greeting", "imap-silent",
                "the IMAP server accepts and never greets, --unreachable-state warning (-t 3)",
                "127.0.27.142 port 143: timed out", "WARNING", "--unreachable-state", "warning"),
    mailbox_row("rt-imap-stall", "imap-stall",
                "the IMAP server greets, then never answers (-t 3)",
                "127.0.27.143 port 143: timed out"),
    mailbox_row("rt-imap-reset", "imap-reset",
                "the IMAP server resets the connection after its greeting, "
                "--unreachable-state warning (it was reached)",
                "127.0.27.144 port 143: connection reset by server", "CRITICAL",
                "--unreachable-state", "warning"),
    mailbox_row("rt-imap-login-garbage", "imap-login-garbage",
                "the IMAP server answers LOGIN with untagged nonsense",
                r"LOGIN: unexpected response: b'* garbage \x00\xff nonsense'"),
    mailbox_row("rt-imap-login-hangup", "imap-login-hangup",
                "the IMAP server closes the connection at LOGIN",
                "LOGIN: the server closed the connection"),
    mailbox_row("rt-imap-login-refused", "imap-login-no", "the IMAP server refuses LOGIN (NO)",
                f"login as {USER} refused: [AUTHENTICATIONFAILED] Authentication failed."),
    mailbox_row("rt-imap-login-echo", "imap-login-echo",
                "the IMAP server refuses LOGIN quoting the user and password back",
                f'login as {USER} refused: [AUTHENTICATIONFAILED] Invalid credentials: '
                f'{USER} "********"', password=TRICKY_PASSWORD),
    collecting_row("rt-imap-internaldate-bogus", "imap-internaldate-bogus",
                   "the IMAP server dates the probe 31-Dec-9999 23:59:59 -2400 (INTERNALDATE "
                   "with an impossible zone): the Received date stands in"),
    mailbox_row("rt-imap-list-garbage", "imap-list-garbage",
                "LOGIN accepted, LIST answered with garbage",
                'listing folders: Tuple incomplete before "("'),
    mailbox_row("rt-imap-idle-stall", "imap-idle-stall",
                "the IMAP server stalls inside IDLE, after the probes went out (-t 3)",
                "127.0.27.149 port 143: timed out", sends=True),
    mailbox_row("rt-imap-starttls-plain", "imap-starttls-plain",
                "the IMAP server answers STARTTLS with OK, then speaks no TLS",
                "127.0.27.150 port 143: TLS failed: WRONG_VERSION_NUMBER"),
    mailbox_row("rt-imaps-ca-file-not-pem", "imaps-plain",
                "--mailbox-ca-file is a text file without a PEM certificate",
                "certificate untrusted (no trust anchors in CA file /", "CRITICAL",
                "--mailbox-ca-file", "{not-pem}"),
    mailbox_row("rt-imaps-plain", "imaps-plain",
                "imaps:// to a server that speaks plain IMAP on port 993",
                "127.0.27.151 port 993: TLS failed: WRONG_VERSION_NUMBER"),
    # -- POP3 ------------------------------------------------------------------------------
    mailbox_row("rt-pop3-greeting-err", "pop3-err-greeting",
                "the POP3 server greets with -ERR and hangs up",
                "greeting: -ERR [SYS/TEMP] Too many connections"),
    mailbox_row("rt-pop3-greeting-garbage", "pop3-garbage-greeting",
                "the POP3 greeting is binary garbage with control characters",
                r"greeting: \x00\xff\x1b[2J no POP3 here"),
    mailbox_row("rt-pop3-user-stall", "pop3-user-stall",
                "the POP3 server never answers USER (-t 3)", "127.0.27.162 port 110: timed out"),
    mailbox_row("rt-pop3-pass-refused", "pop3-pass-refused", "the POP3 server refuses PASS",
                f"login as {USER} refused: -ERR [AUTH] Authentication failed."),
    collecting_row("rt-pop3-quit-err", "pop3-quit-err",
                   "the POP3 server answers QUIT with -ERR once the probe was read and deleted "
                   "(the deletion is left to a later run's cleanup)"),
    collecting_row("rt-pop3-quit-hangup", "pop3-quit-hangup",
                   "the POP3 server closes the connection at QUIT once the work is done"),
    collecting_row("rt-pop3-quit-garbage", "pop3-quit-garbage",
                   "the POP3 server answers QUIT with binary garbage once the work is done"),
    mailbox_row("rt-pop3-pass-echo", "pop3-pass-echo",
                "the POP3 server refuses PASS quoting the password back",
                f"login as {USER} refused: -ERR [AUTH] Invalid credentials: ********",
                password=TRICKY_PASSWORD),
    mailbox_row("rt-pop3-pass-hangup", "pop3-pass-hangup",
                "the POP3 server closes the connection at PASS",
                f"login as {USER}: the server closed the connection"),
    # -- Maildir -----------------------------------------------------------------------------
    maildir_row("rt-maildir-fifo", "a named pipe in the Maildir's new/ and cur/: skipped, "
                "never opened", "cur/1700000001.fifo.host:2,S is not a regular file, skipped "
                "(+1 more)", {"new/1700000000.fifo.host": "fifo",
                              "cur/1700000001.fifo.host:2,S": "fifo"}),
    maildir_row("rt-maildir-symlink-loop", "a symbolic link loop in the Maildir's cur/: "
                "skipped", "cur/1700000000.loop.host:2,S: Too many levels of symbolic "
                "links, skipped", {"cur/1700000000.loop.host:2,S": "loop"}),
    # -- arguments -------------------------------------------------------------------------
    usage_row("rt-args-mailbox-scheme", "--mailbox with a scheme that is no mailbox (https://)",
              "the scheme must be one of imap://, imaps://, pop3://, pop3s:// or maildir:",
              "--mailbox", "https://mail.monitor.test/"),
    usage_row("rt-args-mailbox-no-user", "--mailbox URL without a user",
              "--mailbox 'imaps://mail.monitor.test/INBOX': the URL names no user: "
              "imaps://USER@HOST", "--mailbox", "imaps://mail.monitor.test/INBOX"),
    usage_row("rt-args-mailbox-port", "--mailbox URL with port 99999",
              "the port is not a number from 1 to 65535",
              "--mailbox", "imaps://monitor%40monitor.test@mail.monitor.test:99999/INBOX"),
    usage_row("rt-args-mailbox-port-zero", "--mailbox URL with port 0",
              "--mailbox 'pop3://monitor%40monitor.test@mail.monitor.test:0': the port is "
              "not a number from 1 to 65535",
              "--mailbox", "pop3://monitor%40monitor.test@mail.monitor.test:0"),
    usage_row("rt-args-mailbox-host-space", "--mailbox URL whose host has a space in it",
              "--mailbox 'imap://monitor%40monitor.test@mail monitor.test/': bad host name "
              "'mail monitor.test'",
              "--mailbox", "imap://monitor%40monitor.test@mail monitor.test/"),
    usage_row("rt-args-submit-unclosed-bracket", "--submit '[::1' (no closing bracket)",
              "--submit '[::1': not HOST[:PORT]", "--mailbox", url("imap-good"),
              "--submit", "[::1"),
    usage_row("rt-args-pop3-folder", "--mailbox pop3:// URL naming a folder",
              "POP3 has no folders", "--mailbox", "pop3://monitor%40monitor.test@"
                                                   "mail.monitor.test/INBOX"),
    usage_row("rt-args-maildir-relative", "--mailbox maildir: with a relative path",
              "a Maildir is named by an absolute path, maildir:/PATH",
              "--mailbox", "maildir:Maildir"),
    usage_row("rt-args-password-file-missing", "--mailbox-password-file does not exist",
              "--mailbox-password-file: cannot read password file /nonexistent/pw: No such "
              "file or directory", "--mailbox", url("imap-good"), "--mailbox-password-file",
              "/nonexistent/pw"),
    usage_row("rt-args-password-file-empty", "--mailbox-password-file with an empty first line",
              "--mailbox-password-file: password file /dev/null",
              "--mailbox", url("imap-good"), "--mailbox-password-file", "/dev/null"),
    usage_row("rt-args-password-env-empty", "$CHECK_MAILBOX_PASSWORD set but empty",
              "the mailbox needs a password: --mailbox-password-file FILE or "
              "$CHECK_MAILBOX_PASSWORD", "--mailbox", url("imap-good"), password=""),
    usage_row("rt-args-poll-interval-zero", "--poll-interval 0",
              "argument --poll-interval: must be greater than zero: '0'",
              "--mailbox", url("imap-good"), "--poll-interval", "0"),
    Case(Fault("rt-submit-ca-file-not-pem", "TLS", PLUGIN, "--ca-file (of --submit) is a text "
               "file without a PEM certificate", "CRITICAL",
               "sending via submit.posture.test[127.0.25.3] tls_handshake: certificate "
               "untrusted (no trust anchors in CA file /"),
         ("--mailbox", url("imap-good"), "--submit", "submit.posture.test", "--ca-file",
          "{not-pem}")),
    # -- state files -----------------------------------------------------------------------
    state_row("rt-state-directory", "--state-file is a directory", "UNKNOWN",
              "state file PATH: not a regular file", "directory"),
    state_row("rt-state-locked", "--state-file locked by another run (flock) past -t 3",
              "UNKNOWN", "state file PATH is locked by another run", "lock"),
    state_row("rt-state-bad-entry", "the domain's entry in --state-file is not a table of "
                                    "probes (probes are still sent)", "WARNING",
              "state file PATH was corrupt and has been started afresh",
              b'{"loop.test": ["posture-1-0123456789ab"]}', sends=True),
    state_row("rt-state-bad-probe", "a probe in --state-file has no send time", "WARNING",
              "state file PATH was corrupt and has been started afresh",
              b'{"loop.test": {"posture-1-0123456789ab": {"label": "mx1.loop.test"}}}',
              sends=True),
]

MATRIX = [case.row for case in CASES]

#: row id -> the whole line a user reads for the fault, for each run (tests.faultmatrix)
SAYS: dict[str, tuple[str, ...]] = {
    "rt-imap-greeting-smtp": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox "
        "imap://monitor@monitor.test@127.0.27.140:143/INBOX: greeting: unexpected response: "
        "b'220 mail.example.org ESMTP Postfix'",
    ),
    "rt-imap-greeting-bye": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox "
        "imap://monitor@monitor.test@127.0.27.141:143/INBOX: greeting: * BYE Too many "
        "connections, try again later",
    ),
    "rt-imap-no-greeting": (
        "MAIL_ROUNDTRIP WARNING - mailbox "
        "imap://monitor@monitor.test@127.0.27.142:143/INBOX: 127.0.27.142 port 143: timed out",
    ),
    "rt-imap-stall": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox "
        "imap://monitor@monitor.test@127.0.27.143:143/INBOX: 127.0.27.143 port 143: timed out",
    ),
    "rt-imap-reset": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox "
        "imap://monitor@monitor.test@127.0.27.144:143/INBOX: 127.0.27.144 port 143: "
        "connection reset by server",
    ),
    "rt-imap-login-garbage": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox "
        "imap://monitor@monitor.test@127.0.27.145:143/INBOX: LOGIN: unexpected response: b'* "
        "garbage \\x00\\xff nonsense'",
    ),
    "rt-imap-login-hangup": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox "
        "imap://monitor@monitor.test@127.0.27.146:143/INBOX: LOGIN: the server closed the "
        "connection",
    ),
    "rt-imap-login-refused": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox "
        "imap://monitor@monitor.test@127.0.27.147:143/INBOX: login as monitor@monitor.test "
        "refused: [AUTHENTICATIONFAILED] Authentication failed.",
    ),
    "rt-imap-login-echo": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox "
        "imap://monitor@monitor.test@127.0.27.153:143/INBOX: login as monitor@monitor.test "
        "refused: [AUTHENTICATIONFAILED] Invalid credentials: monitor@monitor.test "
        "\"********\"",
    ),
    "rt-imap-internaldate-bogus": (
        "MAIL_ROUNDTRIP OK - 1 of 2 probes back via 2 MX endpoints of loop.test, slowest "
        "mx1.loop.test[127.0.25.13] within {N}s (the mailbox dates arrivals to the second)",
    ),
    "rt-imap-list-garbage": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox "
        "imap://monitor@monitor.test@127.0.27.148:143/INBOX: listing folders: Tuple "
        "incomplete before \"(\"",
    ),
    "rt-imap-idle-stall": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox "
        "imap://monitor@monitor.test@127.0.27.149:143/INBOX: 127.0.27.149 port 143: timed out",
    ),
    "rt-imap-starttls-plain": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox "
        "imap://monitor@monitor.test@127.0.27.150:143/INBOX: 127.0.27.150 port 143: TLS "
        "failed: WRONG_VERSION_NUMBER",
    ),
    "rt-imaps-ca-file-not-pem": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox "
        "imaps://monitor@monitor.test@127.0.27.151:993/INBOX: certificate untrusted (no "
        "trust anchors in CA file {PATH}...",
    ),
    "rt-imaps-plain": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox "
        "imaps://monitor@monitor.test@127.0.27.151:993/INBOX: 127.0.27.151 port 993: TLS "
        "failed: WRONG_VERSION_NUMBER",
    ),
    "rt-pop3-greeting-err": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox pop3://monitor@monitor.test@127.0.27.160:110: "
        "greeting: -ERR [SYS/TEMP] Too many connections",
    ),
    "rt-pop3-greeting-garbage": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox pop3://monitor@monitor.test@127.0.27.161:110: "
        "greeting: \\x00\\xff\\x1b[2J no POP3 here",
    ),
    "rt-pop3-user-stall": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox pop3://monitor@monitor.test@127.0.27.162:110: "
        "127.0.27.162 port 110: timed out",
    ),
    "rt-pop3-pass-refused": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox pop3://monitor@monitor.test@127.0.27.163:110: "
        "login as monitor@monitor.test refused: -ERR [AUTH] Authentication failed.",
    ),
    "rt-pop3-quit-err": (
        "MAIL_ROUNDTRIP OK - 1 of 2 probes back via 2 MX endpoints of loop.test, slowest "
        "mx1.loop.test[127.0.25.13] within {N}s (the mailbox dates arrivals to the second)",
    ),
    "rt-pop3-quit-hangup": (
        "MAIL_ROUNDTRIP OK - 1 of 2 probes back via 2 MX endpoints of loop.test, slowest "
        "mx1.loop.test[127.0.25.13] within {N}s (the mailbox dates arrivals to the second)",
    ),
    "rt-pop3-quit-garbage": (
        "MAIL_ROUNDTRIP OK - 1 of 2 probes back via 2 MX endpoints of loop.test, slowest "
        "mx1.loop.test[127.0.25.13] within {N}s (the mailbox dates arrivals to the second)",
    ),
    "rt-pop3-pass-echo": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox pop3://monitor@monitor.test@127.0.27.165:110: "
        "login as monitor@monitor.test refused: -ERR [AUTH] Invalid credentials: ********",
    ),
    "rt-pop3-pass-hangup": (
        "MAIL_ROUNDTRIP CRITICAL - mailbox pop3://monitor@monitor.test@127.0.27.164:110: "
        "login as monitor@monitor.test: the server closed the connection",
    ),
    "rt-maildir-fifo": (
        "MAIL_ROUNDTRIP WARNING - mailbox maildir:{PATH}: cur/1700000001.fifo.host:2,S is "
        "not a regular file, skipped (+1 more)",
    ),
    "rt-maildir-symlink-loop": (
        "MAIL_ROUNDTRIP WARNING - mailbox maildir:{PATH}: cur/1700000000.loop.host:2,S: Too "
        "many levels of symbolic links, skipped",
    ),
    "rt-args-mailbox-scheme": (
        "check_mail_roundtrip: error: --mailbox 'https://mail.monitor.test/': the scheme "
        "must be one of imap://, imaps://, pop3://, pop3s:// or maildir:",
    ),
    "rt-args-mailbox-no-user": (
        "check_mail_roundtrip: error: --mailbox 'imaps://mail.monitor.test/INBOX': the URL "
        "names no user: imaps://USER@HOST",
    ),
    "rt-args-mailbox-port": (
        "check_mail_roundtrip: error: --mailbox "
        "'imaps://monitor%40monitor.test@mail.monitor.test:99999/INBOX': the port is not a "
        "number from 1 to 65535",
    ),
    "rt-args-mailbox-port-zero": (
        "check_mail_roundtrip: error: --mailbox "
        "'pop3://monitor%40monitor.test@mail.monitor.test:0': the port is not a number from "
        "1 to 65535",
    ),
    "rt-args-mailbox-host-space": (
        "check_mail_roundtrip: error: --mailbox 'imap://monitor%40monitor.test@mail "
        "monitor.test/': bad host name 'mail monitor.test'",
    ),
    "rt-args-submit-unclosed-bracket": (
        "check_mail_roundtrip: error: --submit '[::1': not HOST[:PORT]",
    ),
    "rt-args-pop3-folder": (
        "check_mail_roundtrip: error: --mailbox "
        "'pop3://monitor%40monitor.test@mail.monitor.test/INBOX': POP3 has no folders",
    ),
    "rt-args-maildir-relative": (
        "check_mail_roundtrip: error: --mailbox 'maildir:Maildir': a Maildir is named by an "
        "absolute path, maildir:/PATH",
    ),
    "rt-args-password-file-missing": (
        "check_mail_roundtrip: error: --mailbox-password-file: cannot read password file "
        "/nonexistent/pw: No such file or directory",
    ),
    "rt-args-password-file-empty": (
        "check_mail_roundtrip: error: --mailbox-password-file: password file /dev/null is "
        "not a regular file",
    ),
    "rt-args-password-env-empty": (
        "check_mail_roundtrip: error: the mailbox needs a password: --mailbox-password-file "
        "FILE or $CHECK_MAILBOX_PASSWORD",
    ),
    "rt-args-poll-interval-zero": (
        "check_mail_roundtrip: error: argument --poll-interval: must be greater than zero: "
        "'0'",
    ),
    "rt-submit-ca-file-not-pem": (
        "MAIL_ROUNDTRIP CRITICAL - sending via submit.posture.test[127.0.25.3] "
        "tls_handshake: certificate untrusted (no trust anchors in CA file {PATH}...",
    ),
    "rt-state-directory": (
        "MAIL_ROUNDTRIP UNKNOWN - state file {PATH}: not a regular file",
    ),
    "rt-state-locked": (
        # the mailbox may time out while the run waits for the lock, or not
        "MAIL_ROUNDTRIP UNKNOWN - state file {PATH} is locked by another run{MORE}",
    ),
    "rt-state-bad-entry": (
        "MAIL_ROUNDTRIP WARNING - state file {PATH} was corrupt and has been started afresh",
    ),
    "rt-state-bad-probe": (
        "MAIL_ROUNDTRIP WARNING - state file {PATH} was corrupt and has been started afresh",
    ),
}

#: a DNS server nothing answers: a usage error must not ask it
UNASKED_DNS = "127.0.27.169:9"


def _state_path(case: Case, tmp_path):
    path = tmp_path / "roundtrip.json"
    if case.state_setup == "directory":
        path.mkdir()
    elif isinstance(case.state_setup, bytes):
        path.write_bytes(case.state_setup)
    return path


def _maildir(case: Case, tmp_path):
    """A Maildir of the row's entries, if it has any."""
    path = tmp_path / "Maildir"
    if case.maildir is None:
        return path
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True)
    for name, kind in case.maildir.items():
        if kind == "fifo":
            os.mkfifo(path / name)  # nobody ever writes to it: an open would wait for ever
        else:
            os.symlink(path / name, path / name)
    return path


def verbosities(case: Case) -> tuple:
    """A run that holds the mailbox password runs without -v and at -vvv: neither may
    show it (conftest.run_main checks every output for it, tests/secretguard.py). The
    long output only grows with -v, so -vvv holds what -v and -vv would show; the
    rows that wait out -t would cost twice as much at every level between."""
    return (0, 3) if case.password and case.row.area != "arguments" else (0,)


@pytest.mark.parametrize("case, verbosity", [
    pytest.param(c, v, id=c.row.id + (f"-{'v' * v}" if v else ""),
                 marks=[pytest.mark.lab] if c.row.area != "arguments" else [])
    for c in CASES for v in verbosities(c)])
def test_roundtrip_fault(case, verbosity, request, tmp_path, monkeypatch):
    if case.password is None:
        monkeypatch.delenv(MAILBOX_PASSWORD_ENV, raising=False)
    else:
        monkeypatch.setenv(MAILBOX_PASSWORD_ENV, case.password)
    lab = None
    if case.row.area == "arguments":
        dns = UNASKED_DNS
    else:
        lab = request.getfixturevalue("swept")
        dns = request.getfixturevalue("lab_dns").server_arg
        request.getfixturevalue("fake_mailboxes")
    path = _state_path(case, tmp_path)
    maildir = _maildir(case, tmp_path)
    not_pem = tmp_path / "not-pem.crt"
    not_pem.write_text("This is no certificate.\n")
    args = [{"{state}": str(path), "{maildir}": f"maildir:{maildir}",
             "{not-pem}": str(not_pem)}.get(a, a) for a in case.args]
    argv = ["-D", rt.LOOP_DOMAIN, "--to", f"{rt.PROBE_LOCAL}@{rt.LOOP_DOMAIN}", "--from",
            FAULTS_SENDER, *args, "--dns-server", dns, "--helo-name", "monitor.posture.test",
            "-t", f"{TIMEOUT:g}", *(["-" + "v" * verbosity] if verbosity else [])]
    mark = lab.mark() if lab else 0
    with contextlib.ExitStack() as stack:
        if case.state_setup == "lock":  # another run holds it all the time
            fcntl.flock(stack.enter_context(open(path, "a")), fcntl.LOCK_EX)
        started = time.monotonic()
        run = run_main(main, argv)
        elapsed = time.monotonic() - started
    message = case.row.message.replace("MAILDIR", str(maildir))
    if case.row.area == "state files":
        message = message.replace("PATH", str(path))
    where = f"{' '.join(argv)}:\n{run.output}"
    assert run.exitcode == EXIT[case.row.state], where
    assert "Traceback" not in run.output and PASSWORD not in run.output, where
    if case.row.area == "arguments":
        assert run.output.startswith("usage: check_mail_roundtrip"), where
        assert message in run.output, where
        assert elapsed < 1.0, where
        check_says(SAYS, case.row.id, [(PLUGIN, said(PLUGIN, run.output))])
        return
    assert run.first_line.startswith(f"{NAME} {case.row.state} - "), where
    assert message in run.first_line, where
    check_says(SAYS, case.row.id, [(PLUGIN, said(PLUGIN, run.output))])
    assert elapsed < TIMEOUT + MARGIN, f"{elapsed:.2f}s: {where}"
    if case.sends:
        assert _sweep(lab, expected=2) >= 2, "the probes did not come back to the Maildir"
        assert _accepted(lab, mark) >= 2, lab.log_since(mark)
    else:  # nothing is sent that could not be collected
        time.sleep(0.3)  # what Postfix did reaches its maillog a moment later
        assert _accepted(lab, mark) == 0, lab.log_since(mark)


def _accepted(lab, mark: int) -> int:
    """Messages from FAULTS_SENDER the lab Postfix took since `mark`.

    By sender, not by connections to the loop MX: other test sessions share them.
    """
    pattern = rf"postfix/qmgr\[\d+\]: [0-9A-F]+: from=<{re.escape(FAULTS_SENDER)}>"
    return len(re.findall(pattern, lab.log_since(mark)))


def test_rows_are_well_formed():
    ids = [row.id for row in MATRIX]
    assert len(ids) == len(set(ids))
    for row in MATRIX:
        assert row.area in AREAS and row.state in EXIT and row.message
        assert row.id.startswith("rt-") and row.plugins == PLUGIN
    addresses = [(box.address, box.port) for box in MAILBOXES.values()]
    assert len(addresses) == len(set(addresses))


# --------------------------------------------------------------------------- known defects


def _run_lab(lab_dns, *args):
    return run_main(main, ["-D", rt.LOOP_DOMAIN, "--to", f"{rt.PROBE_LOCAL}@{rt.LOOP_DOMAIN}",
                           "--from", FAULTS_SENDER, *args, "--dns-server", lab_dns.server_arg,
                           "--helo-name", "monitor.posture.test", "-t", f"{TIMEOUT:g}"])


@pytest.mark.parametrize("ca_file", ["/nonexistent/ca.pem", "/"])
def test_an_unreadable_mailbox_ca_file_is_a_usage_error(ca_file, lab_dns, fake_mailboxes,
                                                       monkeypatch):
    monkeypatch.setenv(MAILBOX_PASSWORD_ENV, PASSWORD)
    run = _run_lab(lab_dns, "--mailbox", url("imaps-plain"), "--mailbox-ca-file", ca_file)
    assert run.exitcode == 3, run.output
    assert run.output.startswith("usage: check_mail_roundtrip"), run.output
    assert re.search(rf"--mailbox-ca-file: .*{re.escape(ca_file)}", run.output), run.output


def test_probes_the_mailbox_could_not_look_for_are_not_called_lost(swept, lab_dns,
                                                                   fake_mailboxes,
                                                                   monkeypatch):
    monkeypatch.setenv(MAILBOX_PASSWORD_ENV, PASSWORD)
    try:
        run = _run_lab(lab_dns, "--mailbox", url("imap-idle-stall"))
    finally:
        _sweep(swept, expected=2)
    assert run.exitcode == 2, run.output
    assert run.first_line.startswith(f"{NAME} CRITICAL - mailbox {label('imap-idle-stall')}"), \
        run.first_line
    assert "not back" not in run.first_line, run.first_line


def test_a_search_hit_without_the_token_is_neither_a_probe_nor_deleted(swept, lab_dns,
                                                                       fake_mailboxes,
                                                                       monkeypatch):
    # A word-based full-text search (Dovecot with fts, Exchange, Gmail) answers SEARCH
    # TEXT with a message that only shares the token's words: it counts, and is
    # touched, only once its own headers or body show the exact token.
    monkeypatch.setenv(MAILBOX_PASSWORD_ENV, PASSWORD)
    fake = fake_mailboxes["imap-search-loose"]
    try:
        run = _run_lab(lab_dns, "--mailbox", url("imap-search-loose"))
    finally:
        _sweep(swept, expected=2)
    commands = [line.split()[1:3] for line in fake.lines]
    assert [b"UID", b"FETCH"] in commands, fake.lines  # it did look at the hit
    assert not [c for c in commands if c[-1:] in ([b"STORE"], [b"EXPUNGE"])], fake.lines
    assert run.exitcode == 2, run.output
    assert run.first_line.startswith(f"{NAME} CRITICAL - probe via mx"), run.first_line
    assert "not back within" in run.first_line, run.first_line


@pytest.mark.parametrize("name", ["imap-arrived", "pop3-arrived"])
def test_an_arrival_dated_to_the_second_is_never_a_negative_roundtrip(name, swept, lab_dns,
                                                                      fake_mailboxes,
                                                                      monkeypatch, tmp_path):
    # Sent at 22:13:20.75, dated 22:13:20 by the mailbox (IMAP INTERNALDATE; POP3: the
    # newest Received date): it came back within the second it was sent in.
    monkeypatch.setenv(MAILBOX_PASSWORD_ENV, PASSWORD)
    state = tmp_path / "roundtrip.json"
    state.write_bytes(ARRIVED_STATE)
    try:
        run = _run_lab(lab_dns, "--mailbox", url(name), "--state-file", state, "-v",
                       "--perfdata-per-endpoint")
    finally:
        _sweep(swept, expected=2)
    assert run.exitcode == 0, run.output
    assert run.first_line.startswith(
        f"{NAME} OK - 1 of 2 probes back via 2 MX endpoints of loop.test, slowest "
        "mx1.loop.test[127.0.25.13] within 1s (the mailbox dates arrivals to the second) | "), \
        run.first_line
    assert run.perfdata["roundtrip_time"] == "0.000000s", run.output
    # ARRIVED_STATE is a state file of a release before issue 24 (a "prefix" with dots):
    # the probe is found, and labelled by the key of this run's endpoint of its name
    assert run.perfdata["mx1_loop_test_v4_1_roundtrip_time"] == "0.000000s", run.output
    assert ("mx1.loop.test[127.0.25.13]: back within 1s (INBOX; the mailbox dates arrivals "
            "to the second), 1 hops") in run.output, run.output
    assert "-0." not in run.output, run.output


def test_a_quit_that_fails_after_dele_claims_no_deletion(swept, lab_dns, fake_mailboxes,
                                                         monkeypatch, tmp_path):
    # POP3 commits DELE at QUIT (RFC 1939): a refused QUIT leaves the probe in the
    # maildrop, for a later run's cleanup; the result stands, the long output says so.
    monkeypatch.setenv(MAILBOX_PASSWORD_ENV, PASSWORD)
    state = tmp_path / "roundtrip.json"
    state.write_bytes(ARRIVED_STATE)
    fake = fake_mailboxes["pop3-quit-err"]
    before = len(fake.lines)
    try:
        run = _run_lab(lab_dns, "--mailbox", url("pop3-quit-err"), "--state-file", state,
                       "-vvv")
    finally:
        _sweep(swept, expected=2)
    assert run.exitcode == 0, run.output
    assert [line for line in fake.lines[before:] if line.startswith(b"DELE")] == [b"DELE 1"]
    assert "QUIT: -ERR [SYS/TEMP] cannot commit, try again: the deletions are not committed " \
           "(a later run's cleanup takes the probes)" in run.output, run.output
    assert "deleted 1 probe(s)" not in run.output, run.output
