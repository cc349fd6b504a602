"""The scripted fake SMTP servers do what their scenarios say (raw sockets as the client)."""

from __future__ import annotations

import smtplib
import socket
import ssl
import time

import pytest

from tests.lab.fakesmtp import SCENARIOS, FakeSmtpServer


def _connect(srv, timeout=2.0) -> socket.socket:
    return socket.create_connection((srv.host, srv.port), timeout=timeout)


def _read_reply(sock) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and any(len(x) >= 4 and x[3:4] == b" " for x in lines[:-1]):
            return data


def _smtp(srv) -> smtplib.SMTP:
    return smtplib.SMTP(srv.host, srv.port, local_hostname="client.posture.test", timeout=3)


def test_normal_dialogue_is_recorded(fake_smtp):
    srv = fake_smtp("normal")
    assert srv.host.startswith("127.0.27.")
    with _smtp(srv) as client:
        assert client.ehlo()[0] == 250
        assert not client.has_extn("starttls")
        client.sendmail("a@example.org", ["probe@posture.test"], b"Subject: x\r\n\r\n.hi\r\n")
    assert srv.wait_ended()
    assert srv.commands == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]
    assert srv.lines[1] == "mail FROM:<a@example.org> size=19"
    assert srv.sessions[0].data[-1] == b"..hi"


def test_no_banner_stalls_but_records(fake_smtp):
    srv = fake_smtp("no-banner")
    with _connect(srv, timeout=0.3) as s:
        with pytest.raises(socket.timeout):
            s.recv(100)
        s.sendall(b"QUIT\r\n")
        time.sleep(0.2)
    assert srv.wait_ended()
    assert srv.commands == ["QUIT"]


@pytest.mark.parametrize("phase", ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"])
def test_stall_at_phase(fake_smtp, phase):
    srv = fake_smtp(f"stall-{phase.lower()}")
    dialogue = [b"EHLO c\r\n", b"MAIL FROM:<>\r\n", b"RCPT TO:<p@posture.test>\r\n",
                b"DATA\r\n", b"QUIT\r\n"]
    stall_at = ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"].index(phase)
    before = [d for d in dialogue[:stall_at] if d != b"DATA\r\n"]
    with _connect(srv, timeout=0.5) as s:
        assert _read_reply(s).startswith(b"220 ")
        for line in before:
            s.sendall(line)
            assert _read_reply(s)[:1] == b"2"
        s.sendall(dialogue[stall_at])
        with pytest.raises(socket.timeout):
            s.recv(100)
    assert srv.wait_ended()
    assert srv.commands[-1] == phase


def test_drip_banner(fake_smtp):
    srv = fake_smtp("drip-banner", drip_interval=0.05)
    with _connect(srv) as s:
        time.sleep(0.5)
        data = s.recv(1000)
    assert data.startswith(b"220 ") and b"\n" not in data and 3 <= len(data) <= 20


@pytest.mark.parametrize("scenario,check", [
    ("garbage-banner", lambda d: d.startswith(b"\x16\x03")),
    ("overlong-banner", lambda d: len(d) >= 100_000 and b"\n" not in d),
    ("endless-banner", lambda d: d.count(b"220-endless") > 1000),
    ("421-banner", lambda d: d.startswith(b"421 4.3.2")),
    ("554-banner", lambda d: d.startswith(b"554 5.3.2")),
])
def test_banner_misbehaviour(fake_smtp, scenario, check):
    srv = fake_smtp(scenario)
    data = b""
    with _connect(srv, timeout=0.5) as s:
        try:
            while len(data) < 200_000:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
    assert check(data), data[:200]


def test_554_banner_then_only_quit(fake_smtp):
    srv = fake_smtp("554-banner")
    with _connect(srv) as s:
        _read_reply(s)
        s.sendall(b"EHLO c\r\n")
        assert _read_reply(s).startswith(b"503")
        s.sendall(b"QUIT\r\n")
        assert _read_reply(s).startswith(b"221")


def test_reset_mid_reply(fake_smtp):
    srv = fake_smtp("reset-ehlo")
    with _connect(srv) as s:
        _read_reply(s)
        s.sendall(b"EHLO c\r\n")
        with pytest.raises(ConnectionResetError):
            while s.recv(4096):
                time.sleep(0.05)


def test_ehlo_refused_helo_accepted(fake_smtp):
    srv = fake_smtp("ehlo-500")
    with _smtp(srv) as client:
        assert client.ehlo()[0] == 500
        assert client.helo()[0] == 250
    assert srv.commands[:2] == ["EHLO", "HELO"]


@pytest.mark.parametrize("scenario,verb,code", [("mail-451", "MAIL", 451),
                                                ("rcpt-450", "RCPT", 450)])
def test_temporary_failures(fake_smtp, scenario, verb, code):
    srv = fake_smtp(scenario)
    with _smtp(srv) as client:
        client.ehlo()
        got = client.mail("a@example.org")[0]
        if verb == "RCPT":
            assert got == 250
            got = client.rcpt("p@posture.test")[0]
        assert got == code


def test_starttls_454(fake_smtp):
    srv = fake_smtp("starttls-454")
    with _smtp(srv) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert client.docmd("STARTTLS")[0] == 454


@pytest.mark.parametrize("scenario", ["starttls-garbage", "starttls-close"])
def test_starttls_handshake_fails(fake_smtp, scenario):
    srv = fake_smtp(scenario)
    with _smtp(srv) as client:
        client.ehlo()
        with pytest.raises((ssl.SSLError, OSError, smtplib.SMTPServerDisconnected)):
            client.starttls(context=ssl.create_default_context())


@pytest.fixture(scope="module")
def lab_certs(tmp_path_factory):
    from tests.lab.certs import write_standard_set

    directory = tmp_path_factory.mktemp("fake-certs")
    certs = write_standard_set(directory, hostnames=["fake.posture.test"])
    return directory / "ca.pem", certs


def test_starttls_with_lab_cert(fake_smtp, lab_certs):
    ca, certs = lab_certs
    srv = fake_smtp("normal", cert=certs["valid"])
    context = ssl.create_default_context(cafile=str(ca))
    with _smtp(srv) as client:
        client._host = "fake.posture.test"
        client.ehlo()
        assert client.starttls(context=context)[0] == 220
        client.ehlo()
        assert not client.has_extn("starttls")
    assert srv.wait_ended()
    assert srv.sessions[0].tls and srv.commands == ["EHLO", "STARTTLS", "EHLO", "QUIT"]


def test_starttls_with_expired_cert_fails_verification(fake_smtp, lab_certs):
    ca, certs = lab_certs
    srv = fake_smtp("normal", cert=certs["expired"])
    with _smtp(srv) as client:
        client._host = "fake.posture.test"
        client.ehlo()
        with pytest.raises(ssl.SSLCertVerificationError):
            client.starttls(context=ssl.create_default_context(cafile=str(ca)))


def test_implicit_tls(fake_smtp, lab_certs):
    ca, certs = lab_certs
    srv = fake_smtp("implicit-tls", cert=certs["selfsigned"])
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with context.wrap_socket(_connect(srv), server_hostname="fake.posture.test") as s:
        assert _read_reply(s).startswith(b"220 fake.posture.test ESMTP")


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 192.0.2.1 127.0.27.1 40000 25\r\n",
    b"\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + bytes([192, 0, 2, 1, 127, 0, 27, 1])
    + (40000).to_bytes(2, "big") + (25).to_bytes(2, "big"),
])
def test_proxy_header_recorded(fake_smtp, header):
    srv = fake_smtp("proxy")
    with _connect(srv) as s:
        s.sendall(header)
        assert _read_reply(s).startswith(b"220 ")
    assert srv.wait_ended()
    assert srv.sessions[0].proxy_header == header


def test_proxy_required(fake_smtp):
    srv = fake_smtp("proxy", proxy_timeout=0.3)
    with _connect(srv) as s:
        s.sendall(b"EHLO c\r\n")
        assert s.recv(100) == b""
    assert srv.wait_ended()
    assert srv.sessions[0].proxy_header is None and srv.commands == []


def test_unknown_scenario():
    with pytest.raises(ValueError):
        FakeSmtpServer("no-such-thing")


def test_every_named_scenario_starts_and_stops():
    for name in SCENARIOS:
        if name == "implicit-tls":
            continue
        with FakeSmtpServer(name) as srv:
            assert srv.port
