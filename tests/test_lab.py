"""The lab itself works: DNS answers, Postfix and Dovecot behave as documented.

Python's smtplib and imaplib serve as independent clients, so a bug in the
project's own SMTP library cannot hide a broken lab (or the other way round).
"""

from __future__ import annotations

import imaplib
import re
import smtplib
import ssl
import uuid

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


# --- relay probes (the lab of check_open_relay) ---------------------------------------


def _relay_probe(lab_postfix, name: str, sender: str, forms: dict[str, str]):
    """EHLO, STARTTLS, then MAIL FROM:<sender> + RCPT TO:<path> + RSET per form, QUIT,
    byte-exact paths (smtplib's rcpt() would requote them); {form: (code, text)}, the
    client port."""
    replies = {}
    with _smtp(lab_postfix, name) as client:
        client.ehlo()
        assert client.starttls(context=_tls_context(lab_postfix))[0] == 220
        client.ehlo()
        port = client.sock.getsockname()[1]
        for form, path in forms.items():
            assert client.docmd("MAIL", f"FROM:<{sender}>")[0] == 250
            replies[form] = client.docmd("RCPT", f"TO:<{path}>")
            assert client.docmd("RSET")[0] == 250
    return replies, port


@pytest.mark.parametrize("sender", ["probe@example.org", ""], ids=["sender", "null-sender"])
@pytest.mark.parametrize("name", ["mx1", "mx2", "openrelay", "percentrelay", "routerelay"])
def test_relay_probe_replies(lab_postfix, name, sender):
    """Every endpoint answers each probe form as RELAY_PROBE_REPLIES says, and the
    connection shows in the maillog as a probe: no DATA/BDAT, RSETs, ended by QUIT."""
    from tests.lab.postfix import DOMAIN, RELAY_PROBE_FORMS, RELAY_PROBE_REPLIES

    forms = {**RELAY_PROBE_FORMS, "postmaster": f"postmaster@{DOMAIN}"}
    mark = lab_postfix.mark()
    replies, port = _relay_probe(lab_postfix, name, sender, forms)
    expected = RELAY_PROBE_REPLIES["mx1" if name == "mx2" else name] + (250,)
    assert {f: code for f, (code, _) in replies.items()} == dict(zip(forms, expected))
    texts = {f: text.decode() for f, (_, text) in replies.items()}
    for form, (code, _) in replies.items():
        assert texts[form].startswith({250: "2.1.5 Ok", 550: "5.1.1 <", 554: "5.7.1 <"}[code])
        if code == 554:
            assert texts[form].endswith(">: Relay access denied")
        elif code == 550:
            assert texts[form].endswith("User unknown in virtual mailbox table")
    counts = lab_postfix.connection(port, since=mark, endpoint=name)
    assert lab_postfix.probe_only(counts)
    n = len(forms)
    assert counts["mail"] == str(n) and counts["rset"] == str(n)
    accepted = sum(code == 250 for code, _ in replies.values())
    assert counts["rcpt"] == (str(n) if accepted == n else f"{accepted}/{n}")


def test_mx1_refuses_every_relay_form_but_accepts_postmaster(lab_postfix):
    from tests.lab.postfix import RELAY_PROBE_FORMS

    for sender in ("probe@example.org", ""):
        replies, _ = _relay_probe(lab_postfix, "mx1", sender, {
            **RELAY_PROBE_FORMS, "postmaster": "postmaster@posture.test"})
        assert replies.pop("postmaster")[0] == 250
        assert {f: code // 100 for f, (code, _) in replies.items()} == dict.fromkeys(
            RELAY_PROBE_FORMS, 5)


def _send_through(lab_postfix, name: str, path: str, marker: str) -> None:
    """A whole message (the relay probe never does this) to the byte-exact `path`."""
    with _smtp(lab_postfix, name) as client:
        client.ehlo()
        assert client.docmd("MAIL", "FROM:<stranger@example.org>")[0] == 250
        assert client.docmd("RCPT", f"TO:<{path}>")[0] == 250
        assert client.data(f"Subject: relay {marker}\r\n\r\nrelayed?\r\n".encode())[0] == 250


def _discarded_to(lab_postfix, rcpt: str, orig: str, since: int) -> None:
    """The maillog shows `orig` relayed as `rcpt` (to the discard transport: nothing
    leaves the machine)."""
    lab_postfix.wait_for_log(
        rf"postfix/discard\[\d+\]: [0-9A-F]+: to=<{re.escape(rcpt)}>, "
        rf"orig_to=<{re.escape(orig)}>, relay=none, .*status=sent", since=since)


def test_percentrelay_relays_the_percent_hack(lab_postfix):
    from tests.lab.postfix import DOMAIN, RELAY_TARGET

    user = f"pct-{uuid.uuid4().hex[:12]}"
    mark = lab_postfix.mark()
    _send_through(lab_postfix, "percentrelay", f"{user}%{RELAY_TARGET}@{DOMAIN}", user)
    _discarded_to(lab_postfix, f"{user}@{RELAY_TARGET}", f"{user}%{RELAY_TARGET}@{DOMAIN}",
                  since=mark)


def test_routerelay_relays_bang_paths_and_source_routes(lab_postfix):
    from tests.lab.postfix import DOMAIN, RELAY_TARGET

    bang, routed = (f"{kind}-{uuid.uuid4().hex[:12]}" for kind in ("bang", "route"))
    mark = lab_postfix.mark()
    _send_through(lab_postfix, "routerelay", f"{RELAY_TARGET}!{bang}@{DOMAIN}", bang)
    _send_through(lab_postfix, "routerelay", f"@{DOMAIN}:{routed}@{RELAY_TARGET}", routed)
    _discarded_to(lab_postfix, f"{bang}@{RELAY_TARGET}", f"{RELAY_TARGET}!{bang}@{DOMAIN}",
                  since=mark)
    # the source route reaches smtpd as the bang path (smtpd_command_filter), then the same
    lab_postfix.wait_for_log(
        rf'routerelay/smtpd\[\d+\]: .*replacing command "RCPT TO:<@{re.escape(DOMAIN)}:'
        rf'{routed}@{re.escape(RELAY_TARGET)}>" with "RCPT TO:<{re.escape(RELAY_TARGET)}!'
        rf'{routed}@{re.escape(DOMAIN)}>"', since=mark)
    _discarded_to(lab_postfix, f"{routed}@{RELAY_TARGET}",
                  f"{RELAY_TARGET}!{routed}@{DOMAIN}", since=mark)


@pytest.mark.parametrize("name", ["mx1", "percentrelay", "routerelay"])
def test_closed_endpoints_refuse_the_plain_relay(lab_postfix, name):
    with _smtp(lab_postfix, name) as client:
        client.ehlo()
        client.mail("stranger@example.org")
        code, text = client.rcpt("victim@relay-target.example")
        assert code == 554 and text.endswith(b"Relay access denied")


def test_disconnect_counts_show_data_and_bdat(lab_postfix):
    """The maillog tells a probe from a delivery: DATA and BDAT show in the counts."""
    mark = lab_postfix.mark()
    with _smtp(lab_postfix, "mx1") as client:
        client.ehlo()
        assert client.has_extn("chunking")
        data_port = client.sock.getsockname()[1]
        client.sendmail("a@example.org", ["postmaster@posture.test"], b"Subject: d\r\n\r\nx\r\n")
    with _smtp(lab_postfix, "mx1") as client:
        client.ehlo()
        bdat_port = client.sock.getsockname()[1]
        client.mail("a@example.org")
        client.rcpt("postmaster@posture.test")
        body = b"Subject: b\r\n\r\nchunked\r\n"
        client.send(b"BDAT %d LAST\r\n" % len(body) + body)
        assert client.getreply()[0] == 250
    with _smtp(lab_postfix, "mx1") as client:  # no QUIT: the client just hangs up
        client.ehlo()
        hangup_port = client.sock.getsockname()[1]
        client.close()
    data = lab_postfix.connection(data_port, since=mark, endpoint="mx1")
    bdat = lab_postfix.connection(bdat_port, since=mark, endpoint="mx1")
    hangup = lab_postfix.connection(hangup_port, since=mark, endpoint="mx1")
    assert data["data"] == "1" and "bdat" not in data and data["quit"] == "1"
    assert bdat["bdat"] == "1" and "data" not in bdat and bdat["quit"] == "1"
    assert "quit" not in hangup
    assert not any(lab_postfix.probe_only(c) for c in (data, bdat, hangup))


def test_joining_an_instance_of_another_configuration(lab_postfix):
    """A session whose endpoints the shared instance lacks fails at once, saying why;
    one that needs nothing missing joins with a warning (see LabPostfix.start)."""
    import time

    from tests.lab.postfix import Endpoint, LabPostfix

    class More(LabPostfix):
        endpoints = {**lab_postfix.endpoints,
                     "extra": Endpoint("extra", "extra.posture.test", "127.0.25.99", 25, ())}

    class Fewer(LabPostfix):
        endpoints = {k: v for k, v in lab_postfix.endpoints.items() if k != "routerelay"}

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="has no endpoint extra: let that session end"):
        More().start()
    assert time.monotonic() - start < 5
    with pytest.warns(UserWarning, match="older configuration"):
        Fewer().start().stop()
    with _smtp(lab_postfix, "routerelay") as client:  # the instance is still up
        assert client.noop()[0] == 250
