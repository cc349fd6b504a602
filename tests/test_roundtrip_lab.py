"""The round-trip lab works: the loop forwards, the drop MX loses, Dovecot serves the monitor.

Python's smtplib, imaplib, poplib and dnspython are the clients, independent of the
project's own code (see tests/lab/roundtriplab.py and tests/lab/postfix.py). The
monitor mailbox is shared with other tests and sessions: each test deletes the
message files of its own probes (found by a unique marker) and nothing else.
"""

from __future__ import annotations

import email
import imaplib
import poplib
import re
import smtplib
import ssl
import threading
import time
import uuid
from email.utils import formatdate

import pytest

from tests.lab import roundtriplab as rt

pytestmark = pytest.mark.lab

SENDER = "roundtrip-lab@example.org"  # bounces would go to discard: nothing leaves


def _tls_context(lab_postfix) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(lab_postfix.ca_file))


def _probe_message(marker: str, rcpt: str) -> bytes:
    return (f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: roundtrip-lab {marker}\r\n"
            f"Date: {formatdate()}\r\nMessage-ID: <{marker}@client.posture.test>\r\n"
            f"\r\nprobe {marker}\r\n").encode()


def _send_probe(lab_postfix, endpoint: str, rcpt: str, probes: list[str]):
    """One probe through `endpoint` after STARTTLS; (marker, end-of-DATA reply, its time)."""
    marker = f"rtlab-{uuid.uuid4().hex}"
    probes.append(marker)
    e = lab_postfix.endpoint(endpoint)
    with smtplib.SMTP(e.address, e.port, local_hostname="client.posture.test",
                      timeout=10) as client:
        client._host = e.hostname  # smtplib verifies STARTTLS against _host
        client.ehlo()
        assert client.starttls(context=_tls_context(lab_postfix))[0] == 220
        client.ehlo()
        assert client.mail(SENDER)[0] == 250
        assert client.rcpt(rcpt)[0] == 250
        reply = client.data(_probe_message(marker, rcpt))
        sent = time.monotonic()
    return marker, reply, sent


def _files_with(lab_postfix, marker: str, folder: str | None = None) -> list:
    found = []
    for path in lab_postfix.monitor_messages(folder):
        try:
            if marker.encode() in path.read_bytes():
                found.append(path)
        except FileNotFoundError:  # Dovecot moved it from new/ to cur/ meanwhile
            return _files_with(lab_postfix, marker, folder)
    return found


def _wait_for_file(lab_postfix, marker: str, folder: str | None = None,
                   timeout: float = 10.0, poll: float = 0.005):
    """The probe's message file in the monitor mailbox and when it was first seen."""
    end = time.monotonic() + timeout
    while True:
        found = _files_with(lab_postfix, marker, folder)
        if found:
            return found[0], time.monotonic()
        if time.monotonic() > end:
            raise AssertionError(f"probe {marker} not in the monitor's "
                                 f"{folder or 'INBOX'} within {timeout}s")
        time.sleep(poll)


@pytest.fixture
def probes(lab_postfix):
    """The markers of this test's probes; their files (and only theirs) go at the end."""
    markers: list[str] = []
    yield markers
    for marker in markers:
        for folder in (None, rt.JUNK_FOLDER):
            for _ in range(5):  # a file renamed new/ -> cur/ while we look: look again
                found = _files_with(lab_postfix, marker, folder)
                try:
                    for path in found:
                        path.unlink()
                except FileNotFoundError:
                    continue
                break


def _parse(path) -> email.message.Message:
    return email.message_from_bytes(path.read_bytes())


def _unfolded(value: str) -> str:
    return " ".join(value.split())


# --- DNS -------------------------------------------------------------------------------


def test_loop_domains_resolve_through_the_lab_dns(lab_dns):
    import dns.resolver
    import dns.reversename

    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [lab_dns.address]
    resolver.port = lab_dns.port

    def mx(domain):
        return sorted((r.preference, r.exchange.to_text()) for r in resolver.resolve(domain, "MX"))

    def a(name):
        return [r.address for r in resolver.resolve(name, "A")]

    assert mx(rt.LOOP_DOMAIN) == [(10, "mx1.loop.test."), (20, "mx2.loop.test.")]
    assert mx(rt.LOSSY_DOMAIN) == [(10, "mx1.loop.test."), (20, "drop.loop.test.")]
    assert mx(rt.JUNK_DOMAIN) == [(10, "mx1.loop.test.")]
    assert mx(rt.MONITOR_DOMAIN) == [(10, "mx.monitor.test.")]
    for name, address in (rt.MX1, rt.MX2, rt.DROP_MX, rt.MONITOR_MX,
                          (rt.MAILBOX_HOST, rt.MAILBOX_ADDRESS)):
        assert a(name) == [address]
    for name, address in (rt.MX1, rt.MX2, rt.DROP_MX, rt.MONITOR_MX):
        ptr = resolver.resolve(dns.reversename.from_address(address), "PTR")
        assert [r.target.to_text() for r in ptr] == [name + "."]
    for domain in (rt.LOOP_DOMAIN, rt.LOSSY_DOMAIN, rt.JUNK_DOMAIN, rt.MONITOR_DOMAIN):
        txt = [b"".join(r.strings).decode() for r in resolver.resolve(domain, "TXT")]
        assert txt == ["v=spf1 ip4:127.0.0.0/8 -all"]


# --- the forwarding loop ---------------------------------------------------------------


@pytest.mark.parametrize(("endpoint", "rcpt"), [
    ("loopmx1", f"{rt.PROBE_LOCAL}@{rt.LOOP_DOMAIN}"),
    ("loopmx2", f"{rt.PROBE_LOCAL}@{rt.LOOP_DOMAIN}"),
    ("loopmx1", f"{rt.PROBE_LOCAL}@{rt.LOSSY_DOMAIN}"),
])
def test_probe_comes_back_through_two_hops(lab_postfix, probes, endpoint, rcpt):
    from tests.lab.postfix import MONITOR_AUTH_RESULTS

    marker, (code, _), _ = _send_probe(lab_postfix, endpoint, rcpt, probes)
    assert code == 250
    path, _ = _wait_for_file(lab_postfix, marker)
    message = _parse(path)
    newest, older = (_unfolded(h) for h in message.get_all("Received"))
    assert re.search(r"\bby mx\.monitor\.test \(Postfix\) with ESMTPS id \w+ "
                     r"for <monitor@monitor\.test>; ", newest)
    hostname = lab_postfix.endpoint(endpoint).hostname
    assert re.search(rf"^from client\.posture\.test .* by {re.escape(hostname)} \(Postfix\) "
                     rf"with ESMTPS id \w+ for <{re.escape(rcpt)}>; ", older)
    assert f"Authentication-Results: {message['Authentication-Results']}" \
        == MONITOR_AUTH_RESULTS
    assert message["Delivered-To"] == f"monitor@{rt.INBOX_DOMAIN}"
    assert not _files_with(lab_postfix, marker, rt.JUNK_FOLDER)


def test_junk_probe_is_filed_into_junk(lab_postfix, probes):
    marker, (code, _), _ = _send_probe(lab_postfix, "loopmx1",
                                       f"{rt.PROBE_LOCAL}@{rt.JUNK_DOMAIN}", probes)
    assert code == 250
    path, _ = _wait_for_file(lab_postfix, marker, rt.JUNK_FOLDER)
    assert path.parent.parent == lab_postfix.monitor_maildir() / f".{rt.JUNK_FOLDER}"
    assert not _files_with(lab_postfix, marker)


def test_drop_mx_accepts_and_never_forwards(lab_postfix, probes):
    mark = lab_postfix.mark()
    marker, (code, text), _ = _send_probe(lab_postfix, "loopdrop",
                                          f"{rt.PROBE_LOCAL}@{rt.LOSSY_DOMAIN}", probes)
    assert code == 250
    queue_id = re.search(rb"queued as ([0-9A-F]+)", text).group(1).decode()
    lab_postfix.wait_for_log(
        rf"postfix/discard\[\d+\]: {queue_id}: to=<{re.escape(rt.MONITOR_USER)}>, "
        rf"orig_to=<probe@lossy\.test>, relay=none, .*status=sent \(never forwarded\)",
        since=mark)
    lab_postfix.wait_for_log(rf"qmgr\[\d+\]: {queue_id}: removed", since=mark)
    assert f"{queue_id}: to=<{rt.MONITOR_USER}>, orig_to=<probe@lossy.test>, relay=1" \
        not in lab_postfix.log_since(mark)
    assert not _files_with(lab_postfix, marker) + _files_with(lab_postfix, marker,
                                                               rt.JUNK_FOLDER)


@pytest.mark.parametrize(("endpoint", "rcpt", "table"), [
    ("loopmx1", "nobody@loop.test", "virtual alias"),
    ("loopmx2", "nobody@lossy.test", "virtual alias"),
    ("loopmx1", "nobody@junky.test", "virtual alias"),
    ("loopdrop", "nobody@lossy.test", "virtual alias"),
    # only the monitor's two addresses are relayed: no loop through monitormx
    ("loopmx1", "nobody@monitor.test", "relay recipient"),
    ("monitormx", "nobody@monitor.test", "relay recipient"),
])
def test_other_recipients_are_refused_at_rcpt(lab_postfix, endpoint, rcpt, table):
    e = lab_postfix.endpoint(endpoint)
    with smtplib.SMTP(e.address, e.port, local_hostname="client.posture.test",
                      timeout=10) as client:
        client.ehlo()
        assert client.mail(SENDER)[0] == 250
        code, text = client.rcpt(rcpt)
        client.rset()
    assert code == 550
    assert text.decode() == (f"5.1.1 <{rcpt}>: Recipient address rejected: "
                             f"User unknown in {table} table")


# --- Dovecot: the monitor mailbox ------------------------------------------------------


class _Imaps(imaplib.IMAP4_SSL):
    """IMAPS to the lab address, the certificate verified for MAILBOX_HOST."""

    def _create_socket(self, timeout):
        sock = imaplib.IMAP4._create_socket(self, timeout)
        return self.ssl_context.wrap_socket(sock, server_hostname=rt.MAILBOX_HOST)


class _Pop3s(poplib.POP3_SSL):
    """POP3S to the lab address, the certificate verified for MAILBOX_HOST."""

    def _create_socket(self, timeout):
        sock = poplib.POP3._create_socket(self, timeout)
        return self.context.wrap_socket(sock, server_hostname=rt.MAILBOX_HOST)


def _peer_name(sock) -> str:
    return dict(item[0] for item in sock.getpeercert()["subject"])["commonName"]


def test_imaps_login_and_junk_is_special_use(lab_postfix):
    imap = _Imaps(rt.MAILBOX_ADDRESS, rt.IMAPS_PORT, ssl_context=_tls_context(lab_postfix),
                  timeout=10)
    try:
        assert _peer_name(imap.sock) == rt.MAILBOX_HOST
        assert imap.login(rt.MONITOR_USER, rt.MONITOR_PASSWORD)[0] == "OK"
        status, folders = imap.list()
        assert status == "OK"
        flags = {line.rsplit(b" ", 1)[-1].strip(b'"').decode():
                 line.split(b")", 1)[0] for line in folders}
        assert b"\\Junk" in flags[rt.JUNK_FOLDER]
        assert b"\\Trash" in flags["Trash"]
        assert "INBOX" in flags
        assert imap.select("INBOX")[0] == "OK"
    finally:
        imap.logout()


def test_imap_starttls_on_143(lab_postfix):
    imap = imaplib.IMAP4(rt.MAILBOX_ADDRESS, rt.IMAP_PORT, timeout=10)
    try:
        assert "STARTTLS" in imap.capabilities
        imap.host = rt.MAILBOX_HOST  # imaplib verifies STARTTLS against .host
        assert imap.starttls(ssl_context=_tls_context(lab_postfix))[0] == "OK"
        assert _peer_name(imap.sock) == rt.MAILBOX_HOST
        assert imap.login(rt.MONITOR_USER, rt.MONITOR_PASSWORD)[0] == "OK"
        assert imap.select("INBOX", readonly=True)[0] == "OK"
    finally:
        imap.logout()


def test_imap_wrong_password_refused(lab_postfix):
    imap = imaplib.IMAP4(rt.MAILBOX_ADDRESS, rt.IMAP_PORT, timeout=10)
    try:
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            imap.login(rt.MONITOR_USER, "wrong")
    finally:
        imap.logout()


def test_pop3s_login_and_stat(lab_postfix):
    pop = _Pop3s(rt.MAILBOX_ADDRESS, rt.POP3S_PORT, context=_tls_context(lab_postfix),
                 timeout=10)
    try:
        assert _peer_name(pop.sock) == rt.MAILBOX_HOST
        pop.user(rt.MONITOR_USER)
        assert pop.pass_(rt.MONITOR_PASSWORD).startswith(b"+OK")
        count, size = pop.stat()
        assert count >= 0 and size >= 0
    finally:
        pop.quit()


def test_pop3_stls_on_110(lab_postfix):
    pop = poplib.POP3(rt.MAILBOX_ADDRESS, rt.POP3_PORT, timeout=10)
    try:
        assert "STLS" in pop.capa()
        pop.host = rt.MAILBOX_HOST  # poplib verifies STLS against .host
        assert pop.stls(context=_tls_context(lab_postfix)).startswith(b"+OK")
        assert _peer_name(pop.sock) == rt.MAILBOX_HOST
        pop.user(rt.MONITOR_USER)
        assert pop.pass_(rt.MONITOR_PASSWORD).startswith(b"+OK")
        count, size = pop.stat()
        assert count >= 0 and size >= 0
    finally:
        pop.quit()


def test_idle_notices_a_delivery_at_once(lab_postfix, probes):
    """IDLE answers EXISTS soon after the file lands (inotify), not at a poll interval.

    Dovecot 2.3 waits a fixed 500 ms after the first inotify event to gather more
    changes (NOTIFY_DELAY_MSECS in its mailbox-watch.c, not a setting), so EXISTS
    comes ~0.5 s after the delivery; without inotify it would come at the next
    mailbox_idle_check_interval (30 s).
    """
    imap = _Imaps(rt.MAILBOX_ADDRESS, rt.IMAPS_PORT, ssl_context=_tls_context(lab_postfix),
                  timeout=10)
    try:
        imap.login(rt.MONITOR_USER, rt.MONITOR_PASSWORD)
        assert imap.select("INBOX")[0] == "OK"
        imap.send(b"idle1 IDLE\r\n")
        assert imap.readline().startswith(b"+ ")
        noticed: list = []

        def wait_for_exists():
            try:
                while not re.match(rb"\* \d+ EXISTS", imap.readline()):
                    pass
                noticed.append(time.monotonic())
            except OSError as exc:  # a timeout: the test fails below
                noticed.append(exc)

        reader = threading.Thread(target=wait_for_exists)
        reader.start()
        marker, (code, _), sent = _send_probe(lab_postfix, "loopmx1",
                                              f"{rt.PROBE_LOCAL}@{rt.LOOP_DOMAIN}", probes)
        assert code == 250
        _, landed = _wait_for_file(lab_postfix, marker, poll=0.001)
        reader.join(12)
        [exists] = noticed
        assert isinstance(exists, float), f"no EXISTS while idling: {exists!r}"
        print(f"end of DATA -> Maildir file {landed - sent:.3f}s, "
              f"file -> IDLE EXISTS {exists - landed:.3f}s")
        assert exists - landed < 2.0
        imap.send(b"DONE\r\n")
        while not (line := imap.readline()).startswith(b"idle1 "):
            pass
        assert line.startswith(b"idle1 OK")
        status, found = imap.search(None, "HEADER", "Subject", marker)
        assert status == "OK" and found[0].split()
    finally:
        imap.logout()
