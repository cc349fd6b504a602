"""check_smtp_phases against scripted misbehaving servers: every failure ends in its
stated state, names its phase, and the run keeps within -t."""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
import time

import pytest

from check_smtp_posture.plugins.check_smtp_phases import main
from tests.conftest import run_main
from tests.lab.certs import LabCA, self_signed

FAKE_NAME = "fake.posture.test"


def run(server, *argv, timeout=2):
    started = time.monotonic()
    result = run_main(main, ["-H", server.host, "-p", server.port, "-t", timeout, *argv])
    result.elapsed = time.monotonic() - started
    return result


@pytest.mark.slow
@pytest.mark.parametrize("scenario, phase", [
    ("no-banner", "banner"),
    ("drip-banner", "banner"),
    ("stall-ehlo", "ehlo"),
    ("starttls-stall", "starttls"),
])
def test_stall_is_critical_naming_the_phase_within_the_deadline(fake_smtp, scenario, phase):
    server = fake_smtp(scenario)
    result = run(server, "--to", "probe@posture.test", timeout=1)
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith(
        f"SMTP_PHASES CRITICAL - {server.host} {phase}: no complete reply within 1s")
    assert result.elapsed < 1.5


@pytest.mark.slow
@pytest.mark.parametrize("scenario, phase", [
    ("stall-mail", "mail"), ("stall-rcpt", "rcpt"), ("stall-data", "data")])
def test_stall_in_the_mail_transaction(fake_smtp, scenario, phase):
    server = fake_smtp(scenario)
    result = run(server, "--to", "probe@posture.test", "--send-data", timeout=0.8)
    assert result.exitcode == 2, result.output
    assert f"{server.host} {phase}: no complete reply within 0.8s" in result.first_line
    assert re.search(rf"{phase}_time=0\.[78]\d+s", result.first_line)  # partial time recorded
    assert result.elapsed < 1.3


@pytest.mark.slow
def test_stalled_quit_is_a_warning_unless_ignored(fake_smtp):
    server = fake_smtp("stall-quit")
    result = run(server, timeout=0.5)
    assert result.exitcode == 1, result.output
    assert f"{server.host} quit: no complete reply within 0.5s" in result.first_line
    assert run(server, "--ignore-quit-failure", timeout=0.5).exitcode == 0


@pytest.mark.slow
def test_a_silent_server_ends_the_process_within_deadline_plus_half_a_second(fake_smtp):
    server = fake_smtp("no-banner")
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "check_smtp_posture.plugins.check_smtp_phases",
                           "-H", server.host, "-p", str(server.port), "-t", "2"],
                          capture_output=True, text=True, timeout=10)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2
    assert proc.stdout.startswith(f"SMTP_PHASES CRITICAL - {server.host} banner: ")
    assert elapsed < 2.5, elapsed
    assert "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("scenario, phase, detail", [
    ("garbage-banner", "banner", "not an SMTP reply"),
    ("overlong-banner", "banner", "reply line longer than 8192 bytes"),
    ("endless-banner", "banner", "reply longer than 100 lines"),
    ("reset-banner", "banner", "connection reset by server"),
    ("close-banner", "banner", "connection closed by server"),
    ("endless-ehlo", "ehlo", "reply longer than 100 lines"),
    ("garbage-ehlo", "ehlo", "not an SMTP reply"),
    ("reset-mail", "mail", "connection reset by server"),
])
def test_broken_replies_are_critical(fake_smtp, scenario, phase, detail):
    server = fake_smtp(scenario)
    result = run(server, "--to", "probe@posture.test")
    assert result.exitcode == 2, result.output
    assert f"CRITICAL - {server.host} {phase}: {detail}" in result.first_line
    assert "\x00" not in result.output and "\x1b" not in result.output
    assert result.first_line.count("|") == 1


@pytest.mark.parametrize("scenario, state, text", [
    ("421-banner", 1, "banner: 421 4.3.2 fake.posture.test Service not available, closing"),
    ("554-banner", 2, "banner: 554 5.3.2 fake.posture.test No SMTP service here"),
    ("mail-451", 1, "mail: 451 4.3.0 Temporary failure, try again later"),
    ("rcpt-450", 1, "rcpt: RCPT <probe@posture.test>: 450 4.2.0 Mailbox temporarily"),
    ("rcpt-550", 2, "rcpt: RCPT <probe@posture.test>: 550 5.1.1 No such user here"),
    ("ehlo-500", 1, "EHLO refused, HELO accepted"),
])
def test_refusing_replies_by_class(fake_smtp, scenario, state, text):
    server = fake_smtp(scenario)
    result = run(server, "--to", "probe@posture.test")
    assert result.exitcode == state, result.output
    assert f"{server.host} {text}" in result.first_line


def test_transient_state_option_changes_a_4xx(fake_smtp):
    server = fake_smtp("mail-451")
    result = run(server, "--to", "probe@posture.test", "--transient-state", "critical")
    assert result.exitcode == 2


def test_refused_connection_is_critical_or_as_configured():
    result = run_main(main, ["-H", "127.0.27.1", "-p", "9", "-t", "2"])
    assert result.exitcode == 2
    assert result.first_line.startswith(
        "SMTP_PHASES CRITICAL - 127.0.27.1 connect: connection refused")
    assert run_main(main, ["-H", "127.0.27.1", "-p", "9", "--unreachable-state",
                           "warning"]).exitcode == 1


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    directory = tmp_path_factory.mktemp("certs")
    ca = LabCA("Failure test CA")
    now = datetime.datetime.now(datetime.timezone.utc)
    made = {
        "valid": ca.issue([FAKE_NAME]),
        "expired": ca.issue([FAKE_NAME], not_before=now - datetime.timedelta(days=60),
                            not_after=now - datetime.timedelta(days=1)),
        "notyet": ca.issue([FAKE_NAME], not_before=now + datetime.timedelta(days=2),
                           not_after=now + datetime.timedelta(days=90)),
        "wronghost": ca.issue(["elsewhere.posture.test"]),
        "expiring": ca.issue([FAKE_NAME], not_after=now + datetime.timedelta(days=10)),
        "rsa1024": ca.issue([FAKE_NAME], key_bits=1024, fresh_key=True),
        "sha1": ca.issue([FAKE_NAME], hash="sha1"),
        "selfsigned": self_signed(FAKE_NAME),
    }
    files = {name: cert.write(directory, name) for name, cert in made.items()}
    return ca.write(directory), files


@pytest.mark.parametrize("cert, state, text", [
    ("valid", 0, "STARTTLS TLSv1.3"),
    ("expired", 2, "certificate: expired "),
    ("notyet", 2, "certificate: not valid before "),
    ("wronghost", 1, "certificate: name mismatch for fake.posture.test"),
    ("selfsigned", 1, "certificate: untrusted (self-signed certificate)"),
    ("expiring", 2, f"{FAKE_NAME}[127.0.27.1] certificate: expires in 10 days"),
    ("rsa1024", 1, "certificate: weak key (RSA 1024 bits)"),
    ("sha1", 1, "certificate: weak signature (sha1)"),
])
def test_certificate_findings(fake_smtp, certs, cert, state, text):
    ca_file, files = certs
    server = fake_smtp("normal", cert=files[cert])
    result = run(server, "--servername", FAKE_NAME, "--ca-file", ca_file)
    assert result.exitcode == state, result.output
    assert text in result.first_line


def test_starttls_refused_is_critical(fake_smtp):
    server = fake_smtp("starttls-454")
    result = run(server)
    assert result.exitcode == 2, result.output
    assert f"{server.host} STARTTLS refused: 454 4.7.0 TLS not available" in result.first_line


@pytest.mark.parametrize("scenario", [
    # a TLS record promising bytes that never come: the client waits until the fake hangs
    # up, a second later
    pytest.param("starttls-garbage", marks=pytest.mark.slow), "starttls-close"])
def test_failed_handshake_is_critical(fake_smtp, scenario):
    server = fake_smtp(scenario)
    result = run(server)
    assert result.exitcode == 2, result.output
    assert f"{server.host} tls_handshake: handshake failed" in result.first_line


def test_no_starttls_skips_an_offered_starttls(fake_smtp, certs):
    server = fake_smtp("normal", cert=certs[1]["valid"])
    result = run(server, "--no-starttls")
    assert result.exitcode == 0, result.output
    assert "STARTTLS" not in server.commands


def test_implicit_tls(fake_smtp, certs):
    ca_file, files = certs
    server = fake_smtp("implicit-tls", cert=files["valid"])
    result = run(server, "--tls", "--servername", FAKE_NAME, "--ca-file", ca_file)
    assert result.exitcode == 0, result.output
    assert ", TLS TLSv1.3," in result.first_line


@pytest.mark.parametrize("version, expected", [
    (1, b"PROXY TCP4 198.51.100.7 127.0.27.1 40000 25\r\n"),
    (2, None),
])
def test_proxy_header_reaches_the_server(fake_smtp, version, expected):
    server = fake_smtp("proxy")
    result = run(server, "--proxy-protocol", version, "--proxy-source-address", "198.51.100.7",
                 "--proxy-source-port", "40000", "--proxy-dest-port", "25")
    assert result.exitcode == 0, result.output
    server.wait_ended()
    header = server.sessions[0].proxy_header
    if expected is not None:
        assert header == expected
    else:
        assert header.startswith(b"\r\n\r\n\x00\r\nQUIT\n\x21\x11")
        assert header[16:20] == bytes([198, 51, 100, 7])


def test_proxy_header_on_ipv6_is_tcp6_with_the_real_addresses(fake_smtp):
    server = fake_smtp("proxy", address="::1")
    result = run(server, "--proxy-protocol", 1)
    assert result.exitcode == 0, result.output
    server.wait_ended()
    header = server.sessions[0].proxy_header
    source_port = server.sessions[0].peer[1]
    assert header == f"PROXY TCP6 ::1 ::1 {source_port} {server.port}\r\n".encode()


@pytest.mark.slow
def test_without_proxy_header_a_proxy_server_gives_no_banner(fake_smtp):
    server = fake_smtp("proxy", proxy_timeout=5)
    result = run(server, timeout=1)
    assert result.exitcode == 2
    assert "banner: no complete reply within 1s" in result.first_line


@pytest.mark.parametrize("argv, message", [
    (["-p", "25"], "one of -H/--hostname or -D/--domain is required"),
    (["-H", "x", "-D", "y.test"], "not allowed with argument"),
    (["-H", "x", "--send-data"], "--send-data needs at least one --to"),
    (["-H", "x", "--sasl-user", "u"], "SASL needs a password"),
    (["-H", "x", "--proxy-family", "TCP6"], "PROXY header options need --proxy-protocol"),
    (["-H", "x", "--proxy-protocol", "1", "--proxy-family", "TCP4",
      "--proxy-source-address", "::1"], "is IPv6, but family TCP4 needs IPv4"),
    (["-H", "x", "--cert-days", "10,20"], "must not exceed"),
    (["-H", "x", "--phase-threshold", "warp=1"], "want PHASE=WARN[,CRIT]"),
    (["-H", "x", "-w", "abc"], "bad threshold range"),
    (["-H", "x", "-t", "0"], "must be greater than zero"),
    (["-H", "x", "--no-starttls", "--require-starttls"], "not allowed with argument"),
    (["-H", "x", "--command", "NOOP", "--response", "250", "--response", "x"],
     "one --response per --command"),
])
def test_usage_errors_exit_3_with_usage_on_stdout(argv, message, monkeypatch):
    monkeypatch.delenv("CHECK_SMTP_PASSWORD", raising=False)
    result = run_main(main, argv)
    assert result.exitcode == 3
    assert result.output.startswith("usage: check_smtp_phases")
    assert message in result.output


def test_a_plain_check_of_an_address_imports_neither_dnspython_nor_cryptography(fake_smtp):
    # Startup is most of a plugin's cost when Icinga runs thousands of checks.
    server = fake_smtp("normal")
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m",
                           "check_smtp_posture.plugins.check_smtp_phases",
                           "-H", server.host, "-p", str(server.port)],
                          capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0, proc.stdout
    modules = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "check_smtp_posture.smtp.session" in modules
    assert not {m for m in modules if m == "dns" or m.startswith(("dns.", "cryptography"))}


def test_tls_below_1_2_is_a_warning(fake_smtp, certs):
    import ssl
    import warnings

    ca_file, files = certs
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # old versions are the point of this test
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.load_cert_chain(*map(str, files["valid"]))
    server = fake_smtp("normal", cert=context)
    result = run(server, "--servername", FAKE_NAME, "--ca-file", ca_file)
    assert result.exitcode == 1, result.output
    assert f"{FAKE_NAME}[{server.host}] negotiated TLSv1.1 (below TLS 1.2)" in result.first_line


# -- secrets: check_smtp_posture.secrets as the user meets it ----------------------------

def auth_server(fake_smtp):
    return fake_smtp({"AUTH": "235 2.7.0 Authentication successful"},
                     ehlo_keywords=("AUTH PLAIN LOGIN", "8BITMIME"))


def test_password_file_gives_its_first_line_only(fake_smtp, tmp_path):
    import base64

    server = auth_server(fake_smtp)
    secret = tmp_path / "pw"
    secret.write_text("s3cret\nnot part of it\n")
    result = run(server, "--sasl-user", "probe", "--sasl-password-file", secret,
                 "--allow-plaintext-auth")
    assert result.first_line.startswith(
        f"SMTP_PHASES WARNING - {server.host} offers AUTH (PLAIN LOGIN) without TLS")
    server.wait_ended()
    auth = next(line for line in server.lines if line.startswith("AUTH PLAIN "))
    assert base64.b64decode(auth.split()[2]) == b"\0probe\0s3cret"


def test_an_empty_password_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv("CHECK_SMTP_PASSWORD", "")
    result = run_main(main, ["-H", "127.0.27.1", "--sasl-user", "probe"])
    assert result.exitcode == 3
    assert "SASL needs a password: --sasl-password-file FILE or $CHECK_SMTP_PASSWORD" \
        in result.output


@pytest.mark.parametrize("make, message", [
    (lambda p: os.mkfifo(p), "is not a regular file"),
    (lambda p: p.write_bytes(b"\xff\xfe\n"), "is not UTF-8 text"),
    (lambda p: p.write_text("\nsecond\n"), "has an empty first line"),
    (lambda p: None, "cannot read password file"),
])
def test_unusable_password_files_are_usage_errors_without_waiting(tmp_path, make, message):
    path = tmp_path / "pw"
    make(path)
    started = time.monotonic()
    result = run_main(main, ["-H", "127.0.27.1", "--sasl-user", "probe",
                             "--sasl-password-file", path])
    assert time.monotonic() - started < 1  # a named pipe is not opened for reading
    assert result.exitcode == 3
    assert "check_smtp_phases: error: " in result.output and message in result.output
