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


@pytest.mark.slow
def test_no_banner_stalls_but_records(fake_smtp):
    srv = fake_smtp("no-banner")
    with _connect(srv, timeout=0.3) as s:
        with pytest.raises(socket.timeout):
            s.recv(100)
        s.sendall(b"QUIT\r\n")
        deadline = time.monotonic() + 2
        while srv.commands != ["QUIT"] and time.monotonic() < deadline:
            time.sleep(0.01)
    assert srv.wait_ended()
    assert srv.commands == ["QUIT"]


@pytest.mark.slow
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
        data = b""
        while len(data) < 4:  # a byte every 0.05 s
            data += s.recv(1000)
    assert data.startswith(b"220 ") and b"\n" not in data and len(data) <= 20


@pytest.mark.slow
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


@pytest.mark.parametrize("scenario", [
    # a TLS record promising bytes that never come: the client waits until the fake hangs
    # up, a second later
    pytest.param("starttls-garbage", marks=pytest.mark.slow), "starttls-close"])
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


# --- scenarios for relay probes (check_open_relay) ----------------------------------------


def _dialogue(s, *lines: bytes) -> list[bytes]:
    """Send each line, read its reply; the replies."""
    replies = []
    for line in lines:
        s.sendall(line)
        replies.append(_read_reply(s))
    return replies


def _read_to_eof(sock) -> bytes:
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            return data
        data += chunk


def test_greylist_every_rcpt(fake_smtp):
    srv = fake_smtp("greylist")
    with _smtp(srv) as client:
        client.ehlo()
        assert client.mail("a@example.org")[0] == 250
        for rcpt in ("postmaster@posture.test", "user@relay-target.example"):
            code, text = client.rcpt(rcpt)
            assert (code, text[:5]) == (450, b"4.7.1") and b"Greylisted" in text
        assert client.rset()[0] == 250
    assert srv.wait_ended()
    [session] = srv.sessions
    assert session.commands == ["EHLO", "MAIL", "RCPT", "RCPT", "RSET", "QUIT"]
    assert session.probe_only and session.ended_with_quit and not session.data_sent


def test_null_sender_refused_others_accepted(fake_smtp):
    srv = fake_smtp("null-sender-refused")
    with _smtp(srv) as client:
        client.ehlo()
        code, text = client.mail("")  # smtplib sends "mail FROM:<>": matched case-blind
        assert (code, text[:5]) == (550, b"5.7.1")
        assert client.rset()[0] == 250
        assert client.mail("a@example.org")[0] == 250
        assert client.rcpt("postmaster@posture.test")[0] == 250
    with _connect(srv) as s:
        _read_reply(s)
        replies = _dialogue(s, b"EHLO c\r\n", b"MAIL FROM:<> SIZE=100\r\n",
                            b"MAIL FROM:<b@example.org>\r\n", b"QUIT\r\n")
    assert [r[:3] for r in replies] == [b"250", b"550", b"250", b"221"]
    assert srv.wait_ended()
    assert srv.lines[1] == "mail FROM:<>"


def test_drop_after_3_refusals_per_connection(fake_smtp):
    srv = fake_smtp("drop-after-3")
    for _ in range(2):  # a new connection counts from zero again
        with _connect(srv) as s:
            _read_reply(s)
            replies = _dialogue(s, b"EHLO c\r\n", b"MAIL FROM:<a@example.org>\r\n",
                                b"RCPT TO:<user@relay-target.example>\r\n",
                                b"RCPT TO:<user%relay-target.example@posture.test>\r\n")
            assert [r[:9] for r in replies[2:]] == [b"550 5.7.1"] * 2
            s.sendall(b"RCPT TO:<@posture.test:user@relay-target.example>\r\n")
            rest = _read_to_eof(s)  # the third refusal, at once a 421, then the close
        assert rest.startswith(b"550 5.7.1 Relaying denied\r\n421 4.7.0 "), rest
        assert rest.endswith(b"too many errors\r\n")
    assert srv.wait_ended()
    assert [s.commands for s in srv.sessions] == [["EHLO", "MAIL", "RCPT", "RCPT", "RCPT"]] * 2
    assert not any(s.ended_with_quit for s in srv.sessions)


def test_drop_after_3_with_smtplib(fake_smtp):
    srv = fake_smtp("drop-after-3")
    client = _smtp(srv)
    client.ehlo()
    client.mail("a@example.org")
    assert [client.rcpt(f"u{i}@relay-target.example")[0] for i in range(3)] == [550] * 3
    assert client.rset()[0] == 421  # the unsolicited 421 is the next reply read
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    client.close()


def test_accept_rcpt_reject_data(fake_smtp):
    srv = fake_smtp("accept-rcpt-reject-data")
    with _smtp(srv) as client:
        client.ehlo()
        client.mail("a@example.org")
        assert client.rcpt("user@relay-target.example")[0] == 250
        assert client.rcpt("user%relay-target.example@posture.test")[0] == 250
        code, text = client.docmd("DATA")
        assert (code, text) == (554, b"5.7.1 No thanks")
    assert srv.wait_ended()
    [session] = srv.sessions
    assert session.data_sent and session.ended_with_quit and not session.probe_only


@pytest.mark.slow
def test_tarpit_holds_the_rcpt_reply(fake_smtp):
    srv = fake_smtp("tarpit")
    with _connect(srv, timeout=0.5) as s:
        _read_reply(s)
        _dialogue(s, b"EHLO c\r\n", b"MAIL FROM:<>\r\n")
        s.sendall(b"RCPT TO:<user@relay-target.example>\r\n")
        with pytest.raises(socket.timeout):
            s.recv(100)
        s.sendall(b"QUIT\r\n")  # a client whose budget ran out: QUIT, then hang up
    start = time.monotonic()
    assert srv.wait_ended(timeout=3)  # the hang-up ends the tarpit at once
    assert time.monotonic() - start < 2
    [session] = srv.sessions
    assert session.commands == ["EHLO", "MAIL", "RCPT", "QUIT"] and session.probe_only


def test_tarpit_stop_is_prompt(fake_smtp):
    srv = fake_smtp("tarpit")
    s = _connect(srv, timeout=0.5)
    try:
        _read_reply(s)
        _dialogue(s, b"EHLO c\r\n", b"MAIL FROM:<>\r\n")
        s.sendall(b"RCPT TO:<postmaster@posture.test>\r\n")
        deadline = time.monotonic() + 2
        while srv.commands[-1:] != ["RCPT"] and time.monotonic() < deadline:
            time.sleep(0.01)  # until the server holds the reply
        start = time.monotonic()
        srv.stop()
        assert time.monotonic() - start < 2
        assert srv.wait_ended(timeout=0.5)
        assert _read_to_eof(s) == b""  # closed without the reply
    finally:
        s.close()


@pytest.mark.slow
def test_tarpit_reply_comes_after_the_delay():
    from tests.lab.fakesmtp import Delayed

    script = {"RCPT": Delayed(0.5, SCENARIOS["tarpit"]["RCPT"].action)}
    with FakeSmtpServer(script) as srv, _smtp(srv) as client:
        client.ehlo()
        client.mail("")
        start = time.monotonic()
        assert client.rcpt("user@relay-target.example")[0] == 554
        assert time.monotonic() - start >= 0.45


def test_line_prefix_keys_longest_first_case_blind():
    script = {"RCPT": "550 5.7.1 no", "RCPT TO:<postmaster@": "250 2.1.5 pm",
              "rcpt to:<postmaster@posture.test>": "250 2.1.5 exactly"}
    with FakeSmtpServer(script) as srv, _connect(srv) as s:
        _read_reply(s)
        replies = _dialogue(s, b"RCPT TO:<Postmaster@posture.test>\r\n",
                            b"RCPT TO:<postmaster@other.example>\r\n",
                            b"RCPT TO:<user@posture.test>\r\n", b"QUIT\r\n")
    assert replies[:3] == [b"250 2.1.5 exactly\r\n", b"250 2.1.5 pm\r\n", b"550 5.7.1 no\r\n"]


def test_callable_and_sequence_actions():
    from tests.lab.fakesmtp import close_after

    def by_count(session, line):
        return f"250 2.0.0 noop {session.commands.count('NOOP')} {line.decode()}"

    script = {"NOOP": by_count, "VRFY": ("252 2.0.0 first", "252 2.0.0 second"),
              "RSET": close_after(2, "250 2.0.0 Ok", "421 4.7.0 enough")}
    with FakeSmtpServer(script) as srv, _connect(srv) as s:
        _read_reply(s)
        assert _dialogue(s, b"NOOP\r\n", b"NOOP x\r\n") == [b"250 2.0.0 noop 1 NOOP\r\n",
                                                            b"250 2.0.0 noop 2 NOOP x\r\n"]
        s.sendall(b"VRFY u\r\n")
        both = b""
        while both.count(b"\r\n") < 2:
            both += s.recv(4096)
        assert both == b"252 2.0.0 first\r\n252 2.0.0 second\r\n"
        assert _dialogue(s, b"RSET\r\n") == [b"250 2.0.0 Ok\r\n"]
        s.sendall(b"RSET\r\n")
        assert _read_to_eof(s) == b"250 2.0.0 Ok\r\n421 4.7.0 enough\r\n"


def test_session_verdicts_for_a_probe_and_a_delivery(fake_smtp):
    srv = fake_smtp("normal")
    with _smtp(srv) as client:  # a relay probe: MAIL, RCPT, RSET, QUIT
        client.ehlo()
        client.mail("")
        client.rcpt("postmaster@posture.test")
        client.rset()
    with _smtp(srv) as client:
        client.sendmail("a@example.org", ["p@posture.test"], b"Subject: x\r\n\r\nhi\r\n")
    with _connect(srv) as s:  # BDAT counts as a message too, and no QUIT here
        _read_reply(s)
        _dialogue(s, b"EHLO c\r\n", b"BDAT 4 LAST\r\n")
    assert srv.wait_ended()
    probe, delivery, bdat = srv.sessions
    assert probe.probe_only and probe.ended_with_quit and not probe.data_sent
    assert delivery.data_sent and delivery.ended_with_quit and not delivery.probe_only
    assert bdat.data_sent and not bdat.ended_with_quit and not bdat.probe_only
