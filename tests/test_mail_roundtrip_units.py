"""check_mail_roundtrip's pieces without servers: the --mailbox URL, the probe message,
and which outcomes an asynchronous run reports."""

from __future__ import annotations

import email
from types import SimpleNamespace

import nagiosplugin
import pytest
from nagiosplugin.state import Critical, Ok, Warn

from check_smtp_posture import probemail
from check_smtp_posture.mailbox import parse_url
from check_smtp_posture.plugins import roundtrip_probe as rt_probe
from check_smtp_posture.plugins.roundtrip_contexts import ProbeContext, took


@pytest.mark.parametrize("url, scheme, user, host, port, folder", [
    ("imap://monitor%40example.org@mail.example.org/INBOX", "imap", "monitor@example.org",
     "mail.example.org", 143, "INBOX"),
    ("imaps://monitor@mail.example.org:1993/Probes/In", "imaps", "monitor",
     "mail.example.org", 1993, "Probes/In"),
    ("IMAPS://monitor@mail.example.org", "imaps", "monitor", "mail.example.org", 993, "INBOX"),
    ("pop3://u@[2001:db8::1]", "pop3", "u", "2001:db8::1", 110, "INBOX"),
    ("pop3s://u@pop.example.org:1995", "pop3s", "u", "pop.example.org", 1995, "INBOX"),
])
def test_mailbox_urls(url, scheme, user, host, port, folder):
    spec = parse_url(url)
    assert (spec.scheme, spec.user, spec.host, spec.port, spec.folder) == \
        (scheme, user, host, port, folder)


def test_maildir_url_and_label():
    assert parse_url("maildir:/var/mail/probe").path == "/var/mail/probe"
    assert parse_url("maildir:///var/mail/probe").path == "/var/mail/probe"
    assert parse_url("imaps://m%40x.org@h.x.org/INBOX").label == "imaps://m@x.org@h.x.org:993/INBOX"


@pytest.mark.parametrize("url, reason", [
    ("http://u@h/INBOX", "the scheme must be one of"),
    ("imap://u:secret@h/INBOX", "no password in the URL"),
    ("imap://h/INBOX", "names no user"),
    ("imap://u@h:99999/", "the port is not a number"),
    ("pop3://u@h/INBOX", "POP3 has no folders"),
    ("maildir:relative/path", "absolute path"),
])
def test_bad_mailbox_urls(url, reason):
    with pytest.raises(ValueError, match=reason):
        parse_url(url)


def test_probe_message_carries_its_token_three_times_and_parses_back():
    token = probemail.new_token(1_800_000_000)
    raw = probemail.build(token=token, domain="example.org", mx_label="mx1.example.org[192.0.2.1]",
                          sender="monitor@example.net", recipient="probe@example.org",
                          helo_name="monitor.example.net", sent=1_800_000_000.5)
    message = email.message_from_bytes(raw)
    assert message["X-Smtp-Posture-Probe"] == \
        f"token={token}; domain=example.org; mx=mx1.example.org[192.0.2.1]"
    assert token in message["Subject"] and token in message.get_payload()
    assert message["Message-ID"] == f"<{token}@monitor.example.net>"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"] == "Fri, 15 Jan 2027 08:00:00 +0000"
    assert len(raw) < 2048
    header = raw.split(b"\n\n")[0] + b"\n\n"
    facts = probemail.facts(header, "header")
    assert facts == (token, "example.org", "mx1.example.org[192.0.2.1]", "monitor@example.net")
    assert facts.sent == 1_800_000_000


def test_facts_of_a_message_whose_probe_header_was_stripped():
    """A forwarder dropped the X- field: the Subject (or the matched token) still names it."""
    token = probemail.new_token(1_800_000_000)
    header = (f"From: Monitor <MONITOR@example.net>\r\nSubject: Fwd: check_smtp_posture "
              f"round-trip probe {token}\r\n\r\n").encode()
    facts = probemail.facts(header, token)
    assert facts.token == token and facts.domain is None and facts.sender == "monitor@example.net"
    assert probemail.facts(b"Subject: hello\r\n\r\n", token).token == token
    assert probemail.facts(b"Subject: hello\r\n\r\n", "header").token is None


def _outcome(label, status, sent):
    return rt_probe.ProbeOutcome(label, label + "_", status, f"t{sent}", float(sent))


def test_async_run_reports_the_newest_per_endpoint():
    given_up = _outcome("a", rt_probe.IN_FLIGHT, 0)
    given_up.given_up = True
    earlier = [_outcome("a", rt_probe.BACK, 1), _outcome("a", rt_probe.BACK, 2),
               given_up, _outcome("b", rt_probe.IN_FLIGHT, 1),
               _outcome("b", rt_probe.IN_FLIGHT, 2)]
    sent = [_outcome("a", rt_probe.SENT, 3), _outcome("b", rt_probe.SENT, 3),
            _outcome("c", rt_probe.SENT, 3), _outcome("d", rt_probe.SEND_FAILED, 3)]
    chosen = rt_probe._latest_per_endpoint(earlier, sent)
    assert [(o.label, o.status, o.sent, o.given_up) for o in chosen] == [
        ("a", rt_probe.BACK, 2.0, False), ("a", rt_probe.IN_FLIGHT, 0.0, True),
        ("b", rt_probe.IN_FLIGHT, 2.0, False), ("c", rt_probe.SENT, 3.0, False),
        ("d", rt_probe.SEND_FAILED, 3.0, False)]


@pytest.mark.parametrize("age, mailbox_error, said", [
    (1.0, None, (Ok, "")),
    (1.5, None, (Warn, "probe via a not back after 2s")),
    (2.5, None, (Critical, "probe via a lost: not back after 2s")),
    (9.0, "the mailbox failed", (Warn, "probe via a not back after 9s")),  # not looked for
])
def test_the_critical_range_decides_when_a_probe_in_flight_is_lost(age, mailbox_error, said):
    outcome = _outcome("a", rt_probe.IN_FLIGHT, 1)
    outcome.age = age
    options = SimpleNamespace(lost_after=2.0, late_after=1.0)
    resource = SimpleNamespace(mailbox_error=mailbox_error)
    metric = nagiosplugin.Metric("a_probe", outcome, context="probe")
    result = ProbeContext(options).evaluate(metric, resource)
    assert (result.state, result.hint) == said


@pytest.mark.parametrize("roundtrip, to_second, said", [
    (0.5978, False, ("in 0.598s", None)),  # found by this run: its own clock
    (0.0, True, ("within 1s", "the mailbox dates arrivals to the second")),
    (3.0, True, ("in 3s", None)),
    (-2.0, True, ("dated 2s before it was sent", "clock skew")),
])
def test_a_roundtrip_is_said_as_precisely_as_it_is_known(roundtrip, to_second, said):
    outcome = _outcome("a", rt_probe.BACK, 1)
    outcome.roundtrip, outcome.to_second = roundtrip, to_second
    assert took(outcome, "in ") == said


def test_a_garbage_pop3_greeting_leaves_no_socket_open():
    # poplib opens the socket, then raises on the greeting without closing it: the
    # ResourceWarning came later, from whatever code the garbage collector ran in.
    import gc
    import poplib
    import socket
    import threading
    import warnings

    from check_smtp_posture.mailbox.pop3 import _Pop3

    with socket.create_server(("127.0.27.170", 0)) as listener:
        def greet():
            conn, _ = listener.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n")
                conn.recv(1)  # until the client hangs up

        server = threading.Thread(target=greet, daemon=True)
        server.start()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always", ResourceWarning)
            with pytest.raises(poplib.error_proto):
                _Pop3("mail.monitor.test", listener.getsockname()[1], "127.0.27.170", 2.0)
            gc.collect()
        server.join(2.0)
    assert [w for w in seen if issubclass(w.category, ResourceWarning)] == []
    assert not server.is_alive()  # the client's socket was closed: the server saw EOF
