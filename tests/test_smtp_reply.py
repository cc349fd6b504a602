"""SMTP library units: replies, extensions, dot-stuffing, the line reader's bounds."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from check_smtp_posture.deadline import Deadline
from check_smtp_posture.smtp.dialogue import Extensions, dot_stuff
from check_smtp_posture.smtp.errors import (
    SmtpConnectionClosed,
    SmtpProtocolError,
    SmtpTimeout,
)
from check_smtp_posture.smtp.reply import MAX_LINE, MAX_LINES, LineReader, Reply, parse_reply


def test_multiline_reply_keeps_every_line():
    reply = parse_reply(["250-mx.example", "250-PIPELINING", "250 SIZE 1000"])
    assert reply.code == 250
    assert reply.lines == ("mx.example", "PIPELINING", "SIZE 1000")
    assert reply.positive and not reply.transient


def test_enhanced_status_code_is_read_when_class_matches():
    assert parse_reply(["550 5.7.1 Relay access denied"]).enhanced == "5.7.1"
    assert parse_reply(["451 4.3.0 try later"]).enhanced == "4.3.0"
    # a 2.x.x enhanced code on a 5xx reply is not an enhanced code of that reply
    assert parse_reply(["550 2.0.0 odd"]).enhanced is None
    assert parse_reply(["250 ok"]).enhanced is None


def test_bare_code_line_is_a_reply():
    assert parse_reply(["250"]) == Reply(250, ("",))


@pytest.mark.parametrize("lines", [
    ["hello"],
    ["99 too short"],
    ["650 bad class"],
    ["250-first", "251 other code"],
    ["250 last", "250 again"],
])
def test_malformed_replies_raise_protocol_error(lines):
    with pytest.raises(SmtpProtocolError):
        parse_reply(lines, "banner")


def test_ehlo_keywords_parse_old_auth_syntax_and_merge():
    reply = parse_reply(["250-mx.example greets you", "250-AUTH PLAIN", "250-AUTH=LOGIN PLAIN",
                         "250-size 1000", "250 STARTTLS"])
    ext = Extensions.from_reply(reply)
    assert ext.auth_mechanisms == ("PLAIN", "LOGIN")
    assert ext.params("SIZE") == "1000"
    assert "starttls" in ext and "PIPELINING" not in ext


def test_dot_stuffing_and_line_endings():
    assert dot_stuff(b"Subject: x\n\n.hidden\nend") == b"Subject: x\r\n\r\n..hidden\r\nend\r\n.\r\n"
    assert dot_stuff(b"a\r\nb\r\n") == b"a\r\nb\r\n.\r\n"


class _Feeder:
    """A connected socket pair; the far side sends what the test scripts."""

    def __init__(self):
        self.client, self.server = socket.socketpair()

    def send_later(self, chunks, pause=0.0):
        def run():
            for chunk in chunks:
                try:
                    self.server.sendall(chunk)
                except OSError:
                    return
                time.sleep(pause)
        threading.Thread(target=run, daemon=True).start()

    def close(self):
        self.client.close()
        self.server.close()


def test_reader_assembles_a_reply_from_single_bytes():
    feed = _Feeder()
    feed.send_later([bytes([b]) for b in b"250-a\r\n250 b\r\n"])
    reply, raw = LineReader(feed.client, Deadline(2)).read_reply("ehlo")
    assert reply.lines == ("a", "b") and raw == ["250-a", "250 b"]
    feed.close()


def test_reader_refuses_a_line_without_end():
    feed = _Feeder()
    feed.send_later([b"2" * (MAX_LINE + 10)])
    with pytest.raises(SmtpProtocolError, match="longer than 8192"):
        LineReader(feed.client, Deadline(2)).read_reply("banner")
    feed.close()


def test_reader_refuses_an_endless_multiline_reply():
    feed = _Feeder()
    feed.send_later([b"250-more\r\n" * (MAX_LINES + 5)])
    with pytest.raises(SmtpProtocolError, match="lines"):
        LineReader(feed.client, Deadline(2)).read_reply("ehlo")
    feed.close()


@pytest.mark.slow
def test_reader_holds_the_deadline_against_a_drip():
    feed = _Feeder()
    feed.send_later([b"2", b"2", b"0", b" "] * 10, pause=0.2)
    started = time.monotonic()
    with pytest.raises(SmtpTimeout) as caught:
        LineReader(feed.client, Deadline(0.6)).read_reply("banner")
    assert caught.value.phase == "banner"
    assert time.monotonic() - started < 0.9
    feed.close()


def test_reader_reports_a_closed_connection_with_its_phase():
    feed = _Feeder()
    feed.server.sendall(b"220 partial")
    feed.server.close()
    with pytest.raises(SmtpConnectionClosed) as caught:
        LineReader(feed.client, Deadline(2)).read_reply("banner")
    assert caught.value.phase == "banner"
    feed.client.close()
