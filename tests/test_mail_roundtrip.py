"""check_mail_roundtrip end to end through the lab's real loop (tests/lab/roundtriplab.py):
Postfix MX that forward the probe address to the monitor mailbox on mx.monitor.test,
Dovecot serving it over IMAP (IDLE), IMAPS, POP3 and POP3S, and the Maildir itself.

The monitor mailbox holds a message that is no probe (the `bystander` fixture) for
the whole module: every test's cleanup must leave it there.
"""

from __future__ import annotations

import json
import mailbox
import os
import re
import time
from email.message import EmailMessage

import pytest

from check_smtp_posture import probemail
from check_smtp_posture.plugins.check_mail_roundtrip import main
from tests.conftest import run_main
from tests.lab import roundtriplab as rt
from tests.lab.postfix import MAIL_GID, MAIL_UID

pytestmark = pytest.mark.lab

USER = rt.MONITOR_USER.replace("@", "%40")
BOX = f"{USER}@{rt.MAILBOX_HOST}"
IMAPS = f"imaps://{BOX}/INBOX"


@pytest.fixture(autouse=True)
def password(monkeypatch):
    monkeypatch.setenv("CHECK_MAILBOX_PASSWORD", rt.MONITOR_PASSWORD)


@pytest.fixture(scope="module")
def bystander(lab, lab_dns):
    """A message in the monitor INBOX that is no probe; it must survive every test."""
    message = EmailMessage()
    message["From"] = "colleague@example.org"
    message["Subject"] = "not a probe: keep me (posture-1000000000-0123456789ab)"
    message.set_content("A person's mail in the probe mailbox.\n")
    key = _plant(lab, message)
    yield key
    assert key in _maildir(lab), "the cleanup deleted a message that is no probe"
    _maildir(lab).remove(key)


def _maildir(lab, folder=None):
    box = mailbox.Maildir(str(lab.monitor_maildir()), factory=None, create=False)
    return box.get_folder(folder) if folder else box


def _plant(lab, message, folder=None) -> str:
    box = _maildir(lab, folder)
    key = box.add(message)
    for sub in ("new", "cur"):
        path = os.path.join(box._path, sub)
        for name in os.listdir(path):
            if name.startswith(key):
                os.chown(os.path.join(path, name), MAIL_UID, MAIL_GID)
    return key


def _probe_keys(lab, domain) -> set:
    """The Maildir keys of probe messages of `domain` (INBOX and Junk)."""
    keys = set()
    for folder in (None, rt.JUNK_FOLDER):
        box = _maildir(lab, folder)
        for key in box.iterkeys():
            try:
                head = box.get_bytes(key).split(b"\n\n")[0]
            except KeyError:  # taken meanwhile
                continue
            if f"domain={domain};".encode() in head and b"From: check_smtp_posture" in head:
                keys.add(key)
    return keys


_EARLIER: dict = {}


@pytest.fixture(autouse=True)
def earlier_probes(request):
    """Probes already in the mailbox before the test (other tests' or sessions' strays)."""
    _EARLIER.clear()
    if "lab" in request.fixturenames:
        lab = request.getfixturevalue("lab")
        for domain in (rt.LOOP_DOMAIN, rt.LOSSY_DOMAIN, rt.JUNK_DOMAIN):
            _EARLIER[domain] = _probe_keys(lab, domain)


def _probes_left(lab, domain) -> list:
    """Probes of `domain` this test left in the mailbox."""
    return sorted(_probe_keys(lab, domain) - _EARLIER.get(domain, set()))


def run(lab, lab_dns, *args, mailbox=IMAPS, timeout=20):
    return run_main(main, ["--dns-server", lab_dns.server_arg, "--helo-name",
                           "monitor.posture.test", "--mailbox", mailbox,
                           "--mailbox-ca-file", lab.ca_file, "-t", timeout, *args])


def loop(domain=rt.LOOP_DOMAIN):
    return ("-D", domain, "--to", f"{rt.PROBE_LOCAL}@{domain}")


def perf(first_line: str) -> dict:
    return dict(re.findall(r"'?([^'\s=]+)'?=([^;\s]+)", first_line.partition(" | ")[2]))


#: what a state file of a release before issue 24 kept with a probe sent via mx1
MX1_OLD_PREFIX = "mx1.loop.test_127.0.25.13_"
#: the endpoint keys of loop.test's MX (--perfdata-per-endpoint, the state file)
MX1_KEY, MX2_KEY = "mx1_loop_test_v4_1", "mx2_loop_test_v4_1"


def test_the_loop_through_both_mx_is_ok_with_hops_and_verdicts(lab, lab_dns, bystander):
    mark = lab.mark()
    result = run(lab, lab_dns, *loop(), "-vv")
    assert result.exitcode == 0, result.output
    assert result.first_line.startswith(
        "MAIL_ROUNDTRIP OK - 2 probes back via 2 MX endpoints of loop.test, slowest ")
    values = perf(result.first_line)
    # the run's worst of each, no MX name or address in a label
    assert sorted(values) == ["endpoints", "endpoints_ok", "hops", "roundtrip_time",
                              "slowest_hop_time"]
    assert values["hops"] == "2"
    assert 0 < float(values["roundtrip_time"].rstrip("s")) < 10
    assert values["endpoints"] == values["endpoints_ok"] == "2"
    out = result.output
    assert "mx1.loop.test[127.0.25.13]: back in " in out and "(INBOX), 2 hops" in out
    assert "Authentication-Results: spf=pass dkim=none dmarc=none (mx.monitor.test)" in out
    # the hops, oldest first: the lab MX, then the monitor's MX, both over TLS
    assert re.search(r"hop mx1\.loop\.test <- monitor\.posture\.test \[127\.0\.0\.1\] ESMTPS",
                     out), out
    assert re.search(r"hop mx\.monitor\.test <- mx1\.posture\.test \[127\.0\.0\.1\] ESMTPS", out)
    assert "deleted 2 probe(s) found" in out
    # what reached the servers: one message through each loop MX, each DATA'd once
    assert {c["endpoint"] for c in lab.disconnects(mark) if c.get("data") == "1"} >= \
        {"loopmx1", "loopmx2"}
    assert _probes_left(lab, rt.LOOP_DOMAIN) == []


@pytest.mark.parametrize("url, extra, how", [
    (f"imap://{BOX}/INBOX", (), "IMAP on 143, STARTTLS, IDLE"),
    (f"imap://{BOX}/INBOX", ("--no-idle", "--poll-interval", "0.5"), "IMAP polled"),
    (f"pop3://{BOX}", ("--poll-interval", "0.5"), "POP3 on 110, STLS"),
    (f"pop3s://{BOX}", ("--poll-interval", "0.5"), "POP3S on 995"),
    ("maildir:{maildir}", ("--from", rt.MONITOR_USER, "--poll-interval", "0.5"), "Maildir"),
])
def test_every_kind_of_mailbox_closes_the_loop(lab, lab_dns, bystander, url, extra, how):
    url = url.format(maildir=lab.monitor_maildir())
    result = run(lab, lab_dns, *loop(), *extra, "-vvv", mailbox=url)
    assert result.exitcode == 0, result.output
    assert result.first_line.startswith(
        "MAIL_ROUNDTRIP OK - 2 probes back via 2 MX endpoints of loop.test"), how
    assert rt.MONITOR_PASSWORD not in result.output
    if url.startswith(("imap:", "pop3:")):
        assert "STARTTLS" in result.output or "STLS" in result.output
    assert _probes_left(lab, rt.LOOP_DOMAIN) == []


def test_an_mx_that_never_forwards_is_critical_by_name(lab, lab_dns, bystander):
    result = run(lab, lab_dns, *loop(rt.LOSSY_DOMAIN), timeout=6)
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith("MAIL_ROUNDTRIP CRITICAL - probe via "
                                        "drop.loop.test[127.0.25.15] not back within ")
    values = perf(result.first_line)
    assert "roundtrip_time" in values  # mx1's probe came back
    assert values["endpoints"] == "2" and values["endpoints_ok"] == "1"
    assert _probes_left(lab, rt.LOSSY_DOMAIN) == []


def test_a_probe_in_junk_is_a_warning_naming_its_mx(lab, lab_dns, bystander):
    result = run(lab, lab_dns, *loop(rt.JUNK_DOMAIN), "-v")
    assert result.exitcode == 1, result.output
    assert result.first_line.startswith(
        "MAIL_ROUNDTRIP WARNING - probe via mx1.loop.test[127.0.25.13] landed in junk folder "
        "Junk |")
    assert "mx1.loop.test[127.0.25.13]: junk in " in result.output
    assert _probes_left(lab, rt.JUNK_DOMAIN) == []


def _old_probe(domain, sender, age, token_suffix="aaaaaaaaaaaa"):
    token = f"posture-{int(time.time() - age)}-{token_suffix}"
    message = EmailMessage()
    message["From"] = f"check_smtp_posture <{sender}>"
    message["Subject"] = f"check_smtp_posture round-trip probe {token}"
    message["X-Smtp-Posture-Probe"] = f"token={token}; domain={domain}; mx=mx1.{domain}[x]"
    message.set_content(f"probe token: {token}\n")
    return message


def test_cleanup_takes_our_stale_probes_and_nothing_else(lab, lab_dns, bystander):
    ours_stale = _plant(lab, _old_probe(rt.LOOP_DOMAIN, rt.MONITOR_USER, 1000))
    ours_junk = _plant(lab, _old_probe(rt.LOOP_DOMAIN, rt.MONITOR_USER, 1000, "b" * 12),
                       rt.JUNK_FOLDER)
    keep = [_plant(lab, _old_probe(rt.LOOP_DOMAIN, "someone@example.org", 1000, "c" * 12)),
            _plant(lab, _old_probe(rt.LOOP_DOMAIN, rt.MONITOR_USER, 20, "d" * 12)),
            _plant(lab, _old_probe("other.example", rt.MONITOR_USER, 1000, "e" * 12))]
    try:
        result = run(lab, lab_dns, *loop(), "-v")
        assert result.exitcode == 0, result.output
        assert "deleted 2 probe(s) found and 2 stale probe(s) of earlier runs" in result.output
        assert ours_stale not in _maildir(lab)
        assert ours_junk not in _maildir(lab, rt.JUNK_FOLDER)
        assert all(key in _maildir(lab) for key in keep)
    finally:
        for key in keep:
            _maildir(lab).discard(key)


def _state(path) -> dict:
    return json.loads(path.read_text())


def test_asynchronous_runs_send_then_collect(lab, lab_dns, bystander, tmp_path):
    state = tmp_path / "roundtrip.json"
    first = run(lab, lab_dns, *loop(), "--state-file", state)
    assert first.exitcode == 0, first.output
    assert first.first_line == ("MAIL_ROUNDTRIP OK - first run: 2 probes sent via 2 MX "
                                "endpoints of loop.test, results on the next run")
    tokens = list(_state(state)[rt.LOOP_DOMAIN])
    assert len(tokens) == 2
    rt.wait_for_probes(lab, tokens)
    second = run(lab, lab_dns, *loop(), "--state-file", state, "-v")
    assert second.exitcode == 0, second.output
    assert second.first_line.startswith("MAIL_ROUNDTRIP OK - 2 probes back via 2 MX endpoints "
                                        "of loop.test, slowest ")
    assert perf(second.first_line)["endpoints_ok"] == "2"
    # the state file keeps each probe's endpoint key, never a label prefix with dots
    assert sorted(e["key"] for e in _state(state)[rt.LOOP_DOMAIN].values()) == [
        MX1_KEY, MX2_KEY]
    assert not [e for e in _state(state)[rt.LOOP_DOMAIN].values() if "prefix" in e]
    pending = _state(state)[rt.LOOP_DOMAIN]
    assert len(pending) == 2 and not set(pending) & set(tokens)  # the second run's own
    rt.wait_for_probes(lab, list(pending))
    run(lab, lab_dns, *loop(), "--state-file", state)  # collects those (and sends more)
    rt.wait_for_probes(lab, list(_state(state)[rt.LOOP_DOMAIN]))
    last = run(lab, lab_dns, *loop(), "-t", 20)  # sync: its cleanup leaves async's alone
    assert last.exitcode == 0
    for token in _state(state)[rt.LOOP_DOMAIN]:
        assert any(token.encode() in _maildir(lab).get_bytes(k) for k in _maildir(lab).iterkeys())
    # and the next asynchronous run takes them
    assert run(lab, lab_dns, *loop(), "--state-file", state).exitcode == 0
    rt.sweep_probes(lab, state, rt.LOOP_DOMAIN)
    assert _probes_left(lab, rt.LOOP_DOMAIN) == []


def test_a_third_asynchronous_run_finds_the_lost_probe(lab, lab_dns, bystander, tmp_path):
    state = tmp_path / "lossy.json"
    first = run(lab, lab_dns, *loop(rt.LOSSY_DOMAIN), "--state-file", state)
    assert first.exitcode == 0, first.output
    sent = _state(state)[rt.LOSSY_DOMAIN]
    via_mx1 = [t for t, e in sent.items() if e["label"].startswith("mx1.loop.test")]
    rt.wait_for_probes(lab, via_mx1)
    second = run(lab, lab_dns, *loop(rt.LOSSY_DOMAIN), "--state-file", state)
    assert second.exitcode == 0, second.output
    assert second.first_line.startswith(
        "MAIL_ROUNDTRIP OK - 1 of 2 probes back via 2 MX endpoints of lossy.test")
    # until every probe sent via drop is older than the -c 2 of the next run: lost
    dropped = max(entry["sent"] for entry in _state(state)[rt.LOSSY_DOMAIN].values()
                  if entry["label"].startswith("drop."))
    time.sleep(max(0.0, dropped + 2.1 - time.time()))
    third = run(lab, lab_dns, *loop(rt.LOSSY_DOMAIN), "--state-file", state, "-w", "1",
                "-c", "2")
    assert third.exitcode == 2, third.output
    assert third.first_line.startswith("MAIL_ROUNDTRIP CRITICAL - probe via "
                                       "drop.loop.test[127.0.25.15] lost: not back after ")
    pending = _state(state)[rt.LOSSY_DOMAIN]
    for token, entry in list(pending.items()):
        if entry["label"].startswith("drop."):
            del pending[token]
    state.write_text(json.dumps({rt.LOSSY_DOMAIN: pending}))
    rt.sweep_probes(lab, state, rt.LOSSY_DOMAIN)
    assert _probes_left(lab, rt.LOSSY_DOMAIN) == []


def test_a_probe_whose_header_lost_the_token_is_found_by_its_body(lab, lab_dns, bystander,
                                                                  tmp_path):
    # A forwarder rewrote every header field that held the token: IMAP's SEARCH TEXT
    # finds the message, and its body, fetched, shows the token before it counts and
    # is deleted (a search hit alone is not enough: tests/test_faults_roundtrip.py).
    sent = time.time() - 30
    token = probemail.new_token(sent)
    message = EmailMessage()
    message["From"] = f"check_smtp_posture <{rt.MONITOR_USER}>"
    message["Subject"] = "Fwd: a round-trip probe"
    message.set_content(f"Forwarded.\n\nprobe token: {token}\n")
    key = _plant(lab, message)
    state = tmp_path / "roundtrip.json"
    state.write_text(json.dumps({rt.LOOP_DOMAIN: {token: {
        "label": "mx1.loop.test[127.0.25.13]", "prefix": MX1_OLD_PREFIX, "sent": sent}}}))
    try:
        result = run(lab, lab_dns, *loop(), "--state-file", state, "-v")
        deleted = key not in _maildir(lab)
    finally:
        _maildir(lab).discard(key)
    assert result.exitcode == 0, result.output
    assert "mx1.loop.test[127.0.25.13]: back in " in result.output, result.output
    assert "(INBOX, found by the token in the text)" in result.output, result.output
    assert "deleted 1 probe(s) found" in result.output, result.output
    assert deleted
    rt.sweep_probes(lab, state, rt.LOOP_DOMAIN)
    assert _probes_left(lab, rt.LOOP_DOMAIN) == []


def test_the_selectors_a_probe_came_back_signed_with_are_kept_for_check_dkim(
        lab, lab_dns, bystander, tmp_path):
    # A forwarder that signs (the domain's outbound DKIM) adds DKIM-Signature fields; the
    # asynchronous run that collects the probe keeps their d= and s= in its state file,
    # where check_dkim --from-roundtrip-state finds them (tests/test_dkim.py).
    from check_smtp_posture.dkim import ROUNDTRIP_STATE_KEY

    sent = time.time() - 30
    token = probemail.new_token(sent)
    probe = probemail.build(token=token, domain=rt.LOOP_DOMAIN, mx_label=MX1_OLD_PREFIX,
                            sender=rt.MONITOR_USER, recipient=f"{rt.PROBE_LOCAL}@loop.test",
                            helo_name="monitor.posture.test", sent=sent)
    signatures = (b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=loop.test;\r\n"
                  b" s=fwd2026; h=From:To:Subject; bh=AAAA; b=BBBB\r\n"
                  b"DKIM-Signature: v=1; a=ed25519-sha256; d=Loop.Test; s=ed2026; b=CCCC\r\n")
    key = _plant(lab, signatures + probe)
    state = tmp_path / "roundtrip.json"
    state.write_text(json.dumps({rt.LOOP_DOMAIN: {token: {
        "label": "mx1.loop.test[127.0.25.13]", "prefix": MX1_OLD_PREFIX, "sent": sent}}}))
    try:
        result = run(lab, lab_dns, *loop(), "--state-file", state)
        deleted = key not in _maildir(lab)
    finally:
        _maildir(lab).discard(key)
    assert result.exitcode == 0, result.output
    assert deleted
    seen = _state(state)[ROUNDTRIP_STATE_KEY]
    assert list(seen) == ["loop.test"] and sorted(seen["loop.test"]) == ["ed2026", "fwd2026"]
    assert all(abs(t - time.time()) < 60 for t in seen["loop.test"].values())
    rt.sweep_probes(lab, state, rt.LOOP_DOMAIN)
    assert _probes_left(lab, rt.LOOP_DOMAIN) == []


def test_a_refused_login_is_critical_and_sends_nothing(lab, lab_dns, monkeypatch):
    monkeypatch.setenv("CHECK_MAILBOX_PASSWORD", "wrong")
    mark = lab.mark()
    result = run(lab, lab_dns, *loop())
    assert result.exitcode == 2
    assert result.first_line.startswith(
        "MAIL_ROUNDTRIP CRITICAL - mailbox imaps://monitor@monitor.test@mail.monitor.test:993/"
        "INBOX: login as monitor@monitor.test refused: ")
    assert "wrong" not in result.output
    time.sleep(0.3)
    assert not [c for c in lab.disconnects(mark) if c["endpoint"].startswith("loop")]


def test_a_missing_folder_is_critical_naming_it(lab, lab_dns):
    result = run(lab, lab_dns, *loop(), mailbox=f"imaps://{BOX}/Probes")
    assert result.exitcode == 2
    assert result.first_line == (
        "MAIL_ROUNDTRIP CRITICAL - mailbox imaps://monitor@monitor.test@mail.monitor.test:993/"
        "Probes: no folder 'Probes'")


def test_an_untrusted_mailbox_certificate_is_refused_before_the_password(lab, lab_dns):
    result = run_main(main, ["--dns-server", lab_dns.server_arg, *loop(), "--mailbox", IMAPS])
    assert result.exitcode == 2
    assert result.first_line.endswith("993/INBOX: 127.0.25.3 port 993: TLS failed: self-signed "
                                     "certificate in certificate chain")


def test_an_unreachable_mailbox_follows_unreachable_state(lab, lab_dns):
    url = f"imap://{USER}@127.0.25.12/INBOX"
    result = run(lab, lab_dns, *loop(), "--unreachable-state", "warning", mailbox=url)
    assert result.exitcode == 1
    assert result.first_line == ("MAIL_ROUNDTRIP WARNING - mailbox imap://monitor@monitor.test@"
                                 "127.0.25.12:143/INBOX: 127.0.25.12 port 143: Connection "
                                 "refused")


def test_a_refused_recipient_is_critical_naming_endpoint_phase_and_reply(lab, lab_dns):
    result = run(lab, lab_dns, "-D", rt.LOOP_DOMAIN, "--to", "nobody@loop.test", timeout=8)
    assert result.exitcode == 2
    assert re.match(r"MAIL_ROUNDTRIP CRITICAL - sending via mx[12]\.loop\.test\[127\.0\.25\.1[34]\]"
                    r" refused at rcpt: 550 5\.1\.1 <nobody@loop\.test>", result.first_line), \
        result.first_line


def test_through_a_submission_server_with_sasl(lab, lab_dns, bystander, tmp_path):
    secret = tmp_path / "sasl"
    secret.write_text(lab.sasl_password + "\n")
    result = run(lab, lab_dns, *loop(), "--submit", "submit.posture.test:587", "--sasl-user",
                 lab.sasl_user, "--sasl-password-file", secret, "--ca-file", lab.ca_file, "-v")
    assert result.exitcode == 0, result.output
    assert result.first_line.startswith("MAIL_ROUNDTRIP OK - probe back through "
                                        "submit.posture.test (submission: no per-MX split) in ")
    assert "roundtrip_time" in perf(result.first_line)
    assert lab.sasl_password not in result.output
    assert _probes_left(lab, rt.LOOP_DOMAIN) == []


def test_state_file_faults(lab, lab_dns, tmp_path):
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    result = run(lab, lab_dns, *loop(), "--state-file", corrupt)
    assert result.exitcode == 1
    assert result.first_line.startswith(f"MAIL_ROUNDTRIP WARNING - state file {corrupt} was "
                                        "corrupt and has been started afresh")
    unwritable = tmp_path / "missing-dir" / "state.json"
    result = run(lab, lab_dns, *loop(), "--state-file", unwritable)
    assert result.exitcode == 3
    assert result.first_line.startswith(f"MAIL_ROUNDTRIP UNKNOWN - state file {unwritable}: ")
    assert not unwritable.parent.exists()
    rt.sweep_probes(lab, corrupt, rt.LOOP_DOMAIN)  # the unwritable run sent nothing
    assert _probes_left(lab, rt.LOOP_DOMAIN) == []


@pytest.mark.parametrize("args, message", [
    (("-D", "loop.test", "--mailbox", IMAPS), "--to is required"),
    (("-D", "loop.test", "--to", "probe@loop.test", "--mailbox", "maildir:/tmp/x"),
     "--from is required when the mailbox user is no address"),
    (("-D", "loop.test", "--to", "probe@loop.test", "--mailbox", IMAPS, "--sasl-user", "u"),
     "--sasl-user needs --submit"),
    (("-D", "loop.test", "--to", "probe@loop.test", "--mailbox", f"pop3s://{BOX}",
      "--no-idle"), "--no-idle is for IMAP mailboxes"),
    (("-D", "loop.test", "--to", "probe@loop.test", "--mailbox", IMAPS, "-c", "10:"),
     "-c 10:: a roundtrip range needs an upper end"),
    (("-D", "loop.test", "--to", "probe@loop.test", "--mailbox", "imaps://u:pw@h/INBOX"),
     "no password in the URL"),
    (("-D", "loop.test", "--to", "probe@loop.test", "--mailbox", IMAPS, "--submit",
      "smtp.example.org:0"), "--submit 'smtp.example.org:0': the port is not a number"),
    (("-D", "loop.test", "--to", "probe@loop.test", "--mailbox", IMAPS, "--submit",
      "[2001:db8::1]:0"), "--submit '[2001:db8::1]:0': the port is not a number"),
    (("-D", "loop.test", "--to", "probe@loop.test", "--mailbox", IMAPS, "--submit",
      "bad_host!:587"), "--submit 'bad_host!:587': not HOST[:PORT]"),
])
def test_usage_errors_say_what_is_wrong(args, message):
    result = run_main(main, list(args))
    assert result.exitcode == 3
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_missing_mailbox_password_is_a_usage_error(monkeypatch):
    monkeypatch.delenv("CHECK_MAILBOX_PASSWORD")
    result = run_main(main, ["-D", "loop.test", "--to", "probe@loop.test", "--mailbox", IMAPS])
    assert result.exitcode == 3
    assert ("the mailbox needs a password: --mailbox-password-file FILE or "
            "$CHECK_MAILBOX_PASSWORD") in result.output
