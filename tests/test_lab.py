"""The lab itself works: DNS answers, Postfix and Dovecot behave as documented.

Python's smtplib and imaplib serve as independent clients, so a bug in the
project's own SMTP library cannot hide a broken lab (or the other way round).
"""

from __future__ import annotations

import imaplib
import smtplib
import ssl

import pytest

pytestmark = pytest.mark.lab


def _tls_context(lab_postfix) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(lab_postfix.ca_file))


def _smtp(lab_postfix, name: str) -> smtplib.SMTP:
    e = lab_postfix.endpoint(name)
    client = smtplib.SMTP(e.address, e.port, local_hostname="client.posture.test", timeout=10)
    client._host = e.hostname  # smtplib verifies STARTTLS against _host
    return client


def test_dns_answers_mx_and_a(lab_dns):
    import dns.message
    import dns.query

    answer = dns.query.udp(dns.message.make_query("posture.test", "MX"),
                           lab_dns.address, port=lab_dns.port, timeout=2)
    mx = sorted((r.preference, r.exchange.to_text()) for rrset in answer.answer for r in rrset)
    assert mx == [(10, "mx1.posture.test."), (20, "mx2.posture.test.")]
    answer = dns.query.udp(dns.message.make_query("mx1.posture.test", "A"),
                           lab_dns.address, port=lab_dns.port, timeout=2)
    assert [r.address for rrset in answer.answer for r in rrset] == ["127.0.25.1"]


@pytest.mark.parametrize("name", ["mx1", "mx2"])
def test_postfix_greets_and_starttls_verifies_with_lab_ca(lab_postfix, name):
    e = lab_postfix.endpoint(name)
    with _smtp(lab_postfix, name) as client:
        assert client.ehlo()[0] == 250
        assert client.has_extn("starttls")
        assert not client.has_extn("auth")
        assert client.starttls(context=_tls_context(lab_postfix))[0] == 220
        assert client.sock.getpeercert()["subject"][-1] == (("commonName", e.hostname),)
        assert client.ehlo()[0] == 250


def test_banner_is_name_esmtp(lab_postfix):
    import socket

    e = lab_postfix.endpoint("mx1")
    with socket.create_connection((e.address, e.port), timeout=5) as s:
        banner = s.recv(1024)
        s.sendall(b"QUIT\r\n")
    assert banner == b"220 mx1.posture.test ESMTP\r\n"


def test_local_recipient_accepted_relay_refused_and_logged(lab_postfix):
    mark = lab_postfix.mark()
    with _smtp(lab_postfix, "mx1") as client:
        port = client.sock.getsockname()[1]
        client.ehlo()
        assert client.mail("someone@example.org")[0] == 250
        assert client.rcpt("probe@posture.test")[0] == 250
        assert client.rcpt("postmaster@posture.test")[0] == 250
        code, text = client.rcpt("victim@example.com")
        assert code == 554 and b"Relay access denied" in text
        assert client.rcpt("nobody-here@posture.test")[0] == 550
        assert client.rset()[0] == 250
    lab_postfix.wait_for_log(rf"mx1/smtpd.*disconnect from .*:{port} .*rset=1 quit=1",
                             since=mark)
    assert "Relay access denied" in lab_postfix.log_since(mark)
    [counts] = lab_postfix.disconnects(since=mark, endpoint="mx1", client_port=port)
    assert counts["rcpt"] == "2/4" and counts["quit"] == "1" and "data" not in counts


def test_delivery_to_maildir(lab_postfix):
    import time
    import uuid

    marker = uuid.uuid4().hex.encode()
    mark = lab_postfix.mark()
    with _smtp(lab_postfix, "mx2") as client:
        client.sendmail("sender@example.org", ["roundtrip@posture.test"],
                        b"Subject: lab " + marker + b"\r\n\r\nhello\r\n")
    end = time.monotonic() + 10
    while not any(marker in p.read_bytes() for p in lab_postfix.messages("roundtrip")):
        assert time.monotonic() < end, "message not delivered to the maildir within 10 s"
        time.sleep(0.05)
    assert lab_postfix.queued(since=mark)


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_submission_auth_only_after_starttls(lab_postfix, mechanism):
    with _smtp(lab_postfix, "submission") as client:
        client.ehlo()
        assert not client.has_extn("auth")
        assert client.mail("probe@posture.test")[0] == 530  # encryption required
        client.starttls(context=_tls_context(lab_postfix))
        client.ehlo()
        assert set(client.esmtp_features["auth"].upper().split()) >= {
            "PLAIN", "LOGIN", "CRAM-MD5"}
        client.user, client.password = lab_postfix.sasl_user, lab_postfix.sasl_password
        code, _ = client.auth(mechanism, getattr(client, "auth_" + mechanism.lower()
                                                 .replace("-", "_")))
        assert code == 235


def test_submission_wrong_password_refused(lab_postfix):
    with _smtp(lab_postfix, "submission") as client:
        client.starttls(context=_tls_context(lab_postfix))
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login(lab_postfix.sasl_user, "wrong")


def test_smtps_implicit_tls_with_auth(lab_postfix):
    e = lab_postfix.endpoint("smtps")
    # smtplib.SMTP_SSL connects to the name it verifies, which only the lab DNS knows:
    # connect to the address and verify against the name by hand instead.
    import socket

    raw = socket.create_connection((e.address, e.port), timeout=10)
    with _tls_context(lab_postfix).wrap_socket(raw, server_hostname=e.hostname) as tls:
        assert tls.recv(1024).startswith(b"220 submit.posture.test ESMTP")
        tls.sendall(b"EHLO client.posture.test\r\n")
        reply = b""
        while b"\r\n250 " not in reply:
            reply += tls.recv(4096)
        assert b"250-AUTH PLAIN LOGIN CRAM-MD5" in reply.upper()
        tls.sendall(b"QUIT\r\n")


def test_authfirst_offers_auth_before_starttls(lab_postfix):
    with _smtp(lab_postfix, "authfirst") as client:
        client.ehlo()
        assert client.has_extn("starttls") and client.has_extn("auth")
        assert client.login(lab_postfix.sasl_user, lab_postfix.sasl_password)[0] == 235


def test_notls_has_no_starttls(lab_postfix):
    with _smtp(lab_postfix, "notls") as client:
        client.ehlo()
        assert not client.has_extn("starttls")


def test_openrelay_relays(lab_postfix):
    with _smtp(lab_postfix, "openrelay") as client:
        client.ehlo()
        client.mail("stranger@example.org")
        assert client.rcpt("victim@example.com")[0] == 250
        client.rset()


def test_dovecot_imap_login(lab_postfix):
    host, port = lab_postfix.imap_address
    imap = imaplib.IMAP4(host, port, timeout=10)
    try:
        assert imap.login(lab_postfix.sasl_user, lab_postfix.sasl_password)[0] == "OK"
        assert imap.select("INBOX")[0] == "OK"
    finally:
        imap.logout()


def test_demo_joins_the_running_lab(lab):
    """`make demo` shares the session's servers instead of fighting over the addresses."""
    import io

    from tests.lab.demo import run_demo

    out = io.StringIO()
    assert run_demo(["check_mx_sanity"], out=out) == 0
    text = out.getvalue()
    assert "$ check_mx_sanity -D posture.test --dns-server 127.0.25.53:53" in text
    # the session's instance is still up afterwards
    with _smtp(lab, "mx1") as client:
        assert client.noop()[0] == 250
