"""check_smtp_phases end to end against the lab's real Postfix and NSD."""

from __future__ import annotations

import re

import pytest

from check_smtp_posture.plugins.check_smtp_phases import main
from tests.conftest import run_main
from tests.lab import world

pytestmark = pytest.mark.lab

MX1 = "127.0.25.1"


def run(*argv):
    return run_main(main, argv)


def test_mx1_with_lab_ca_is_ok_with_phase_perfdata(lab):
    run_ = run("-H", MX1, "--servername", "mx1.posture.test", "--ca-file", lab.ca_file)
    assert run_.exitcode == 0, run_.output
    assert run_.first_line.startswith(
        "SMTP_PHASES OK - mx1.posture.test[127.0.25.1], banner 220, STARTTLS TLSv1.3,")
    for label in ("connect_time", "banner_time", "ehlo_time", "starttls_time",
                  "tls_handshake_time", "ehlo_tls_time", "quit_time", "time"):
        assert re.fullmatch(r"\d+\.\d{6}s", run_.perfdata[label]), label
    assert float(run_.perfdata["cert_days_left"]) > 60


def test_untrusted_chain_is_a_warning_by_default(lab, tmp_path):
    no_anchors = tmp_path / "empty.pem"
    no_anchors.write_text("")
    run_ = run("-H", MX1, "--servername", "mx1.posture.test", "--ca-file", str(no_anchors))
    assert run_.exitcode == 1, run_.output
    assert "mx1.posture.test[127.0.25.1] certificate: untrusted (" in run_.first_line


def test_name_mismatch_follows_cert_error_state(lab):
    argv = ("-H", MX1, "--servername", "other.posture.test", "--ca-file", lab.ca_file)
    run_ = run(*argv)
    assert run_.exitcode == 1, run_.output
    assert "certificate: name mismatch for other.posture.test" in run_.first_line
    assert run(*argv, "--cert-error-state", "critical").exitcode == 2


def test_cert_days_window(lab):
    run_ = run("-H", MX1, "--servername", "mx1.posture.test", "--ca-file", lab.ca_file,
               "--cert-days", "5000,4000")
    assert run_.exitcode == 2, run_.output
    assert re.search(r"mx1\.posture\.test\[127\.0\.25\.1\] certificate: expires in \d+ days",
                     run_.first_line)
    assert ";5000:;4000:" in run_.first_line


def test_domain_probes_every_mx_endpoint_with_aggregate_perfdata(lab):
    run_ = run("-D", world.LAB_DOMAIN, "--dns-server", world.DNS_SERVER_ARG,
               "--ca-file", lab.ca_file)
    assert run_.exitcode == 0, run_.output
    slowest = re.match(r"SMTP_PHASES OK - 2 endpoints OK for MX of posture\.test, slowest "
                       r"(mx[12]\.posture\.test\[127\.0\.25\.[12]\]) (\d\.\d{3})s \| ",
                       run_.first_line)
    assert slowest, run_.first_line
    # one label per metric for the run (the slowest endpoint's time, named in the text),
    # never a host name or address in a label
    assert {"banner_time", "dns_time", "time", "cert_days_left"} <= set(run_.perfdata)
    assert all(re.fullmatch(r"[a-z0-9_]+", label) for label in run_.perfdata), run_.perfdata
    assert not [label for label in run_.perfdata if "posture" in label or "127" in label]
    assert run_.perfdata["endpoints"] == "2"
    assert run_.perfdata["endpoints_ok"] == "2"
    assert f"{float(run_.perfdata['time'].split('s')[0]):.3f}" == slowest.group(2)


def test_perfdata_per_endpoint_labels_by_endpoint_key(lab):
    run_ = run("-D", world.LAB_DOMAIN, "--dns-server", world.DNS_SERVER_ARG,
               "--ca-file", lab.ca_file, "--perfdata-per-endpoint")
    assert run_.exitcode == 0, run_.output
    assert "perfdata: " not in run_.output
    for key in ("mx1_posture_test_v4_1_", "mx2_posture_test_v4_1_"):
        assert key + "banner_time" in run_.perfdata
        assert key + "cert_days_left" in run_.perfdata
        assert key + "dns_time" in run_.perfdata
    assert "banner_time" in run_.perfdata and "endpoints" in run_.perfdata
    assert all(re.fullmatch(r"[a-z0-9_]+", label) for label in run_.perfdata), run_.perfdata
    # the run's worst is the aggregate, the endpoints' values are its candidates
    times = [float(run_.perfdata[f"mx{n}_posture_test_v4_1_time"].split("s")[0])
             for n in (1, 2)]
    assert float(run_.perfdata["time"].split("s")[0]) == max(times)


def test_rcpt_stops_with_rset_and_nothing_is_delivered(lab):
    mark = lab.mark()
    before = len(lab.messages("probe"))
    run_ = run("-H", MX1, "--ca-file", lab.ca_file, "--servername", "mx1.posture.test",
               "--from", "monitor@posture.test", "--to", "probe@posture.test", "-v")
    assert run_.exitcode == 0, run_.output
    assert "1 RCPT accepted" in run_.first_line
    assert "rset_time" in run_.perfdata and "data_time" not in run_.perfdata
    lab.wait_for_log(r"disconnect from .* rcpt=1 rset=1 quit=1", since=mark)
    assert "cleanup" not in lab.log_since(mark)  # no message was ever received
    assert len(lab.messages("probe")) == before


def test_relay_attempt_is_critical_quoting_the_reply(lab):
    run_ = run("-H", MX1, "--ca-file", lab.ca_file, "--servername", "mx1.posture.test",
               "--to", "someone@example.com")
    assert run_.exitcode == 2, run_.output
    assert re.search(r"CRITICAL - mx1.posture.test\[127.0.25.1\] rcpt: RCPT <someone@example.com>: "
                     r"554 5\.7\.1 .*Relay access denied", run_.first_line)


def test_send_data_delivers_one_message(lab):
    mark = lab.mark()
    before = len(lab.messages("probe"))
    run_ = run("-H", MX1, "--ca-file", lab.ca_file, "--servername", "mx1.posture.test",
               "--to", "probe@posture.test", "--send-data", "--payload",
               "Subject: lab\\n\\n.leading dot\\nbody")
    assert run_.exitcode == 0, run_.output
    assert "message accepted: 250 2.0.0 Ok: queued" in run_.first_line
    assert "body_time" in run_.perfdata
    lab.wait_for_log(r"to=<probe@posture.test>.*status=sent", since=mark)
    lab_messages = lab.messages("probe")
    assert len(lab_messages) == before + 1
    assert b"\n.leading dot\n" in lab_messages[-1].read_bytes()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_sasl_after_starttls_and_password_never_printed(lab, tmp_path, mechanism):
    pw = tmp_path / "pw"
    pw.write_text(lab.sasl_password + "\n")
    run_ = run("-H", "127.0.25.3", "-p", "587", "--servername", "submit.posture.test",
               "--ca-file", lab.ca_file, "--sasl-user", lab.sasl_user,
               "--sasl-mechanism", mechanism, "--sasl-password-file", pw, "-vvv")
    assert run_.exitcode == 0, run_.output
    assert "auth_time" in run_.perfdata
    assert lab.sasl_password not in run_.output
    assert "~>  AUTH" in run_.output and "********" in run_.output


def test_wrong_password_is_critical(lab, monkeypatch):
    monkeypatch.setenv("CHECK_SMTP_PASSWORD", "not-the-password")
    run_ = run("-H", "127.0.25.3", "-p", "587", "--servername", "submit.posture.test",
               "--ca-file", lab.ca_file, "--sasl-user", lab.sasl_user, "-vvv")
    assert run_.exitcode == 2, run_.output
    assert re.search(r"auth: 535 5\.7\.8", run_.first_line)
    assert "not-the-password" not in run_.output


def test_auth_before_starttls_is_a_warning(lab):
    run_ = run("-H", "127.0.25.4", "--ca-file", lab.ca_file,
               "--servername", "authfirst.posture.test")
    assert run_.exitcode == 1, run_.output
    assert "offers AUTH (PLAIN LOGIN" in run_.first_line
    assert "before STARTTLS" in run_.first_line


def test_no_starttls_is_ok_unless_required(lab):
    run_ = run("-H", "127.0.25.5", "-v")
    assert run_.exitcode == 0, run_.output
    assert "no STARTTLS" in run_.first_line
    assert "STARTTLS not offered" in run_.output
    required = run("-H", "127.0.25.5", "--require-starttls")
    assert required.exitcode == 2
    assert "127.0.25.5 STARTTLS not offered" in required.first_line


def test_implicit_tls_on_465(lab):
    run_ = run("-H", "127.0.25.3", "--tls", "--servername", "submit.posture.test",
               "--ca-file", lab.ca_file)
    assert run_.exitcode == 0, run_.output
    assert ", TLS TLSv1.3," in run_.first_line
    assert "tls_handshake_time" in run_.perfdata and "starttls_time" not in run_.perfdata


def test_expect_and_command_response(lab):
    ok = run("-H", MX1, "--no-starttls", "--expect", "ESMTP", "--command", "NOOP",
             "--response", "250")
    assert ok.exitcode == 0, ok.output
    assert "command_time" in ok.perfdata
    bad = run("-H", MX1, "--no-starttls", "--expect", "Exchange")
    assert bad.exitcode == 2
    assert "banner lacks 'Exchange'" in bad.first_line
    vrfy = run("-H", MX1, "--no-starttls", "--command", "VRFY probe", "--response", "252")
    assert vrfy.exitcode == 2, vrfy.output
    assert "VRFY probe: 502 5.5.1 VRFY command is disabled lacks '252'" in vrfy.first_line
