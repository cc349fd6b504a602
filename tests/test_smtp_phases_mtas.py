"""check_smtp_phases as mail engineers meet it against MTAs other than the one it was
written against: envelope addresses as people write them, a delivered message that is
real RFC 5322 mail, a PROXY header the server does not expect, honest phase times,
and the details of the output (AUTH named, the extension inventory, the EHLO name)."""

from __future__ import annotations

import email
import email.policy
import re
import socket
import time

import pytest

from check_smtp_posture.plugins.check_smtp_phases import main
from tests.conftest import run_main
from tests.lab.fakesmtp import Delayed

MX1 = "127.0.25.1"
MX1_LABEL = r"mx1.posture.test[127.0.25.1]"
SUBMISSION = ("-H", "127.0.25.3", "-p", "587", "--servername", "submit.posture.test")


def run(*argv):
    return run_main(main, argv)


def mx1(lab, *argv):
    return run("-H", MX1, "--servername", "mx1.posture.test", "--ca-file", lab.ca_file, *argv)


def transcript_sent(output: str) -> list[str]:
    """The client's lines in a -vvv transcript, clear text or inside TLS."""
    return [m.group(1) for m in re.finditer(r"\] +[-~]>  (.*)$", output, re.MULTILINE)]


# -- 1. envelope addresses: one pair of brackets, whatever the user wrote ---------------


@pytest.mark.lab
@pytest.mark.parametrize("written, wire", [
    ("<>", "<>"), ("", "<>"),
    ("<monitor@posture.test>", "<monitor@posture.test>"),
    ("monitor@posture.test", "<monitor@posture.test>"),
])
def test_sender_is_sent_in_one_pair_of_brackets(lab, written, wire):
    mark = lab.mark()
    result = mx1(lab, "--from", written, "--to", "<probe@posture.test>", "-vvv")
    assert result.exitcode == 0, result.output
    assert "1 RCPT accepted" in result.first_line
    sent = transcript_sent(result.output)
    assert f"MAIL FROM:{wire}" in sent and "RCPT TO:<probe@posture.test>" in sent
    lab.wait_for_log(r"disconnect from .* mail=1 rcpt=1 rset=1 quit=1", since=mark)


@pytest.mark.parametrize("sender, recipient, wire", [
    ("<>", "<p@posture.test>", ["MAIL FROM:<>", "RCPT TO:<p@posture.test>"]),
    ("''", "p@posture.test", ["MAIL FROM:<>", "RCPT TO:<p@posture.test>"]),
    ("m@posture.test", "<postmaster>", ["MAIL FROM:<m@posture.test>", "RCPT TO:<postmaster>"]),
])
def test_what_reaches_the_server_has_one_pair_of_brackets(fake_smtp, sender, recipient, wire):
    server = fake_smtp()
    sender = "" if sender == "''" else sender
    result = run("-H", server.host, "-p", server.port, "--from", sender, "--to", recipient)
    assert result.exitcode == 0, result.output
    assert server.lines[1:3] == wire


@pytest.mark.lab
def test_null_sender_reaches_the_mailbox_as_null_sender(lab):
    mark = lab.mark()
    result = mx1(lab, "--from", "<>", "--to", "probe@posture.test", "--send-data")
    assert result.exitcode == 0, result.output
    lab.wait_for_log(r"from=<>, size=", since=mark)


@pytest.mark.parametrize("option, value, message", [
    ("--from", "a b@posture.test", "bad local part 'a b'"),
    ("--from", "<<>>", "angle brackets inside an address"),
    ("--from", "monitor@posture.test>", "angle brackets inside an address"),
    ("--from", "monitor@bad_domain!", "bad domain 'bad_domain!'"),
    ("--to", "<>", "the null address <> cannot be a recipient"),
    ("--to", "probe", "not an address of the form local@domain"),
    ("--to", "probe@posture.test\r\nDATA", "control characters in an address"),
    ("--header-from", "two@a.test, three@b.test", "not one address"),
])
def test_malformed_address_is_a_usage_error(option, value, message):
    result = run("-H", MX1, "--to", "probe@posture.test", "--send-data", option, value)
    assert result.exitcode == 3, result.output
    assert f"check_smtp_phases: error: argument {option}" in result.output
    assert message in result.output


# -- 2. the delivered message is RFC 5322 mail ------------------------------------------


def delivered(lab, before: int) -> email.message.EmailMessage:
    deadline = time.monotonic() + 5
    while len(lab.messages("probe")) <= before and time.monotonic() < deadline:
        time.sleep(0.05)
    messages = lab.messages("probe")
    assert len(messages) == before + 1
    return email.message_from_bytes(messages[-1].read_bytes(), policy=email.policy.default)


@pytest.mark.lab
def test_default_message_carries_every_header_a_receiver_wants(lab):
    before = len(lab.messages("probe"))
    result = mx1(lab, "--from", "monitor@posture.test", "--to", "probe@posture.test",
                 "--send-data", "--helo-name", "probe-host.posture.test")
    assert result.exitcode == 0, result.output
    message = delivered(lab, before)
    assert message["From"] == "monitor@posture.test"
    assert message["To"] == "probe@posture.test"
    assert message["Subject"] == "check_smtp_phases probe"
    assert message["MIME-Version"] == "1.0"
    assert message["Message-ID"].endswith("@probe-host.posture.test>")
    assert abs(email.utils.parsedate_to_datetime(message["Date"]).timestamp()
               - time.time()) < 60
    assert message.get_content() == "Probe message of check_smtp_phases.\n"


@pytest.mark.lab
def test_header_from_sets_from_and_null_sender_still_gets_one(lab):
    before = len(lab.messages("probe"))
    result = mx1(lab, "--to", "probe@posture.test", "--send-data",
                 "--header-from", "Monitoring <monitor@posture.test>")
    assert result.exitcode == 0, result.output
    assert delivered(lab, before)["From"] == "Monitoring <monitor@posture.test>"
    before += 1
    result = mx1(lab, "--to", "probe@posture.test", "--send-data",
                 "--helo-name", "probe-host.posture.test")
    assert result.exitcode == 0, result.output
    assert delivered(lab, before)["From"] == "check_smtp_phases@probe-host.posture.test"


def test_payload_is_still_sent_exactly(fake_smtp):
    server = fake_smtp()
    result = run("-H", server.host, "-p", server.port, "--to", "p@posture.test",
                 "--send-data", "--payload", "X-Only: this\\n\\nbody")
    assert result.exitcode == 0, result.output
    assert server.sessions[0].data == [b"X-Only: this", b"", b"body"]


# -- 3. a PROXY header the server does not expect ------------------------------------------


@pytest.mark.lab
@pytest.mark.parametrize("version, reply", [
    ("1", r"500 5\.5\.2 Error: command not recognized"),
    ("2", r"500 5\.5\.2 Error: bad syntax"),
])
def test_proxy_header_not_accepted_is_named_as_such(lab, version, reply):
    result = mx1(lab, "--proxy-protocol", version)
    assert result.exitcode == 2, result.output
    assert re.match(rf"SMTP_PHASES CRITICAL - {re.escape(MX1_LABEL)} connect: "
                    r"PROXY header not accepted: "
                    rf"{reply}", result.first_line), result.first_line
    assert "HELO" not in result.first_line


@pytest.mark.parametrize("version, shown", [
    ("1", r"PROXY TCP4 127\.0\.0\.1 127\.0\.27\.1 \d+ \d+"),
    ("2", r"PROXY v2 TCP4 127\.0\.0\.1:\d+ -> 127\.0\.27\.1:\d+ \(28 bytes, binary\)"),
])
def test_proxy_header_is_one_readable_transcript_line(fake_smtp, version, shown):
    server = fake_smtp("proxy")
    result = run("-H", server.host, "-p", server.port, "--proxy-protocol", version, "-vvv")
    assert result.exitcode == 0, result.output
    assert re.fullmatch(shown, transcript_sent(result.output)[0])


def test_proxy_line_refused_by_a_server_without_proxy_support(fake_smtp):
    server = fake_smtp()  # answers "PROXY ..." like any unknown command: 502
    result = run("-H", server.host, "-p", server.port, "--proxy-protocol", "1")
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith(
        f"SMTP_PHASES CRITICAL - {server.host} connect: PROXY header not accepted: "
        "502 5.5.2 Error: command not recognized")
    assert server.commands[0] == "PROXY" and "HELO" not in server.commands


@pytest.mark.parametrize("answer", [
    "421 4.7.0 fake.posture.test no proxies here",
    # as Haraka: the banner first, then the PROXY line answered, after EHLO has gone out
    Delayed(0.3, "421 4.7.0 fake.posture.test no proxies here"),
], ids=["at-once", "after-ehlo-was-sent"])
def test_proxy_line_answered_with_421_names_the_header(fake_smtp, answer):
    server = fake_smtp({"PROXY": answer})
    result = run("-H", server.host, "-p", server.port, "--proxy-protocol", "1")
    assert result.exitcode == 2, result.output
    # whether the 421 is already waiting when EHLO goes out or answers it, one reading
    assert result.first_line.startswith(
        f"SMTP_PHASES CRITICAL - {server.host} connect: PROXY header not accepted: "
        "421 4.7.0 fake.posture.test no proxies here"), result.first_line


def test_reply_before_its_command_is_a_protocol_fault(fake_smtp):
    # Two replies to EHLO: whatever follows would be read one step behind.
    server = fake_smtp({"EHLO": ("250-fake.posture.test\n250 8BITMIME", "250 2.0.0 extra")})
    result = run("-H", server.host, "-p", server.port, "--to", "p@posture.test")
    assert result.exitcode == 2, result.output
    # Caught before MAIL if the extra reply is already there, else when the server
    # closes after QUIT: by then the reply to QUIT is one too many.
    assert re.match(rf"SMTP_PHASES CRITICAL - {server.host} (mail: reply before MAIL was "
                    r"sent: 250 2\.0\.0 extra|quit: a reply more than the commands sent: "
                    r"221 2\.0\.0 Bye \(every reply was read one step behind\))",
                    result.first_line), result.first_line


# -- 4. auth_time counted once ------------------------------------------------------------


@pytest.mark.slow
def test_auth_time_is_the_time_the_server_took(fake_smtp, monkeypatch):
    monkeypatch.setenv("CHECK_SMTP_PASSWORD", "secret")
    server = fake_smtp({"AUTH": Delayed(1.0, "535 5.7.8 Authentication failed")},
                       ehlo_keywords=("AUTH PLAIN LOGIN",))
    result = run("-H", server.host, "-p", server.port, "--sasl-user", "u", "-t", "5",
                 "--allow-plaintext-auth")
    assert result.exitcode == 2, result.output
    auth = float(result.perfdata["auth_time"].rstrip("s"))
    total = float(result.perfdata["time"].rstrip("s"))
    assert 1.0 <= auth < 1.5 and auth <= total, result.first_line


# -- details: AUTH in the OK line, the inventory, --expect, TLS time, EHLO name ----------


@pytest.mark.lab
def test_ok_line_names_the_auth_mechanism_and_inventory_is_rfc4954(lab, monkeypatch):
    monkeypatch.setenv("CHECK_SMTP_PASSWORD", lab.sasl_password)
    result = run(*SUBMISSION, "--ca-file", lab.ca_file, "--sasl-user", lab.sasl_user,
                 "--sasl-mechanism", "LOGIN", "-v")
    assert result.exitcode == 0, result.output
    assert ", AUTH LOGIN ok, " in result.first_line
    assert re.search(r"extensions: .*AUTH PLAIN LOGIN CRAM-MD5", result.output)
    assert "AUTH=" not in result.output


def test_obsolete_auth_form_is_shown_only_when_sent(fake_smtp):
    server = fake_smtp(ehlo_keywords=("AUTH=LOGIN PLAIN", "AUTH LOGIN PLAIN"))
    result = run("-H", server.host, "-p", server.port, "-v")
    assert "  extensions: AUTH LOGIN PLAIN AUTH= (obsolete form)\n" in result.output


@pytest.mark.lab
def test_failed_expect_shows_the_banner(lab):
    result = mx1(lab, "--expect", "Exim")
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith(
        f"SMTP_PHASES CRITICAL - {MX1_LABEL} banner lacks 'Exim': 220 mx1.posture.test ESMTP")


@pytest.mark.lab
def test_phases_add_up_to_the_total_with_starttls(lab):
    gaps = []
    for _ in range(3):
        result = mx1(lab, "-v")
        assert result.exitcode == 0, result.output
        perf = {k: float(v.rstrip("s")) for k, v in result.perfdata.items()
                if k.endswith("time")}
        gaps.append(perf.pop("time") - sum(perf.values()))
    # the best of three, so one scheduling hiccup does not decide it
    assert 0 <= min(gaps) < 0.005, gaps


def test_default_helo_name_is_the_fqdn(fake_smtp, monkeypatch):
    monkeypatch.setattr(socket, "getfqdn", lambda *a: "monitor.example.net")
    server = fake_smtp()
    result = run("-H", server.host, "-p", server.port, "-v")
    assert result.exitcode == 0, result.output
    assert server.lines[0] == "EHLO monitor.example.net"
    assert "not fully qualified" not in result.output


@pytest.mark.parametrize("fqdn", [lambda *a: "localhost", lambda *a: time.sleep(3) or "x.y"])
def test_without_fqdn_the_short_name_is_used_with_a_note(fake_smtp, monkeypatch, fqdn):
    monkeypatch.setattr(socket, "getfqdn", fqdn)
    monkeypatch.setattr(socket, "gethostname", lambda: "shorty")
    server = fake_smtp()
    started = time.monotonic()
    result = run("-H", server.host, "-p", server.port, "-t", "2", "-v")
    assert time.monotonic() - started < 1.0
    assert result.exitcode == 0, result.output
    assert server.lines[0] == "EHLO shorty"
    assert ("note: EHLO name 'shorty' is not fully qualified (this system knows no FQDN); "
            "receivers may refuse it: set --helo-name") in result.output


# -- the password: never in clear on the wire unless asked, never echoed into sight ------


def auth_echo_server(fake_smtp, **options):
    """A server that offers AUTH and quotes back whatever the client sent in its refusal."""
    return fake_smtp({"AUTH": lambda session, line: f"535 5.7.8 you sent {line.decode()}"},
                     ehlo_keywords=("AUTH PLAIN LOGIN",), **options)


def test_auth_is_withheld_without_tls(fake_smtp, monkeypatch):
    monkeypatch.setenv("CHECK_SMTP_PASSWORD", "hunter2-secret")
    server = auth_echo_server(fake_smtp)
    result = run("-H", server.host, "-p", server.port, "--sasl-user", "u")
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith(
        f"SMTP_PHASES CRITICAL - {server.host} auth: AUTH not sent in clear text (no TLS; "
        "--allow-plaintext-auth sends it anyway)")
    assert server.wait_ended()
    assert "AUTH" not in server.commands and server.commands[-1] == "QUIT"


def test_require_starttls_sends_nothing_after_ehlo(fake_smtp, monkeypatch):
    monkeypatch.setenv("CHECK_SMTP_PASSWORD", "hunter2-secret")
    server = auth_echo_server(fake_smtp)
    result = run("-H", server.host, "-p", server.port, "--sasl-user", "u",
                 "--allow-plaintext-auth", "--require-starttls", "--to", "p@posture.test")
    assert result.exitcode == 2, result.output
    assert f"{server.host} STARTTLS not offered" in result.first_line
    assert server.wait_ended()
    assert server.commands == ["EHLO", "QUIT"]


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_a_password_the_server_echoes_is_masked_everywhere(fake_smtp, monkeypatch, mechanism):
    import base64

    password = "hunter2-secret"
    monkeypatch.setenv("CHECK_SMTP_PASSWORD", password)
    b64 = base64.b64encode(password.encode()).decode()
    echo = lambda session, line: f"535 5.7.8 you sent {line.decode()}"  # noqa: E731
    if mechanism == "LOGIN":  # username prompt, password prompt, then the echo
        script = {"AUTH": "334 VXNlcm5hbWU6", "dQ==": "334 UGFzc3dvcmQ6", b64: echo}
    else:
        script = {"AUTH": echo}
    server = fake_smtp(script, ehlo_keywords=("AUTH PLAIN LOGIN",))
    result = run("-H", server.host, "-p", server.port, "--sasl-user", "u",
                 "--sasl-mechanism", mechanism, "--allow-plaintext-auth", "-vvv")
    assert result.exitcode == 2, result.output
    assert "535 5.7.8 you sent" in result.output
    token = base64.b64encode(f"\0u\0{password}".encode()).decode()
    for secret in (password, b64, token):
        assert secret not in result.output
    assert "********" in result.first_line


@pytest.mark.parametrize("argv, message", [
    (["--sasl-user", ""], "--sasl-user is empty: give the authentication identity"),
    (["--sasl-user", "  "], "--sasl-user is empty: give the authentication identity"),
    (["--allow-plaintext-auth"], "--allow-plaintext-auth needs --sasl-user"),
])
def test_auth_usage_errors(argv, message):
    result = run("-H", MX1, *argv)
    assert result.exitcode == 3, result.output
    assert f"check_smtp_phases: error: {message}\n" in result.output


def test_an_unfinished_unasked_line_quoting_the_password_shows_none_of_it(fake_smtp,
                                                                          monkeypatch):
    # The password, quoted back across the 60th byte of an unfinished line that came
    # before MAIL: the error quotes that line cut short, and no piece of it may show.
    secret = "unasked-sasl-secret-0123456789"
    monkeypatch.setenv("CHECK_SMTP_PASSWORD", secret)
    pending = b"250-" + b"x" * 50 + secret.encode()
    # one write, so the unfinished line is there before MAIL goes out
    server = fake_smtp({"AUTH": b"235 2.7.0 Authentication successful\r\n" + pending},
                       ehlo_keywords=("AUTH PLAIN",))
    result = run("-H", server.host, "-p", server.port, "--to", "p@posture.test",
                 "--sasl-user", "u", "--allow-plaintext-auth")
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith(
        f"SMTP_PHASES CRITICAL - {server.host} mail: reply before MAIL was sent: "
        "b'250-" + "x" * 50 + "********'; "), result.first_line
    assert secret[:6] not in result.output
