"""check_open_relay against the lab's real Postfix (closed, open, percent-hack and routing
relays) and scripted servers (greylisting, refused null sender, drop after three refusals,
tarpit). Every test also proves, from the server's own record, that no DATA or BDAT
arrived and that each connection the plugin could end, it ended with QUIT."""

from __future__ import annotations

import re
import time

import pytest

from check_smtp_posture.plugins.check_open_relay import main
from tests.conftest import run_main
from tests.lab import roundtriplab, world
from tests.lab.fakesmtp import FakeSmtpServer, close_after

RELAY_PROBES = 16


def run(*argv):
    started = time.monotonic()
    result = run_main(main, argv)
    result.elapsed = time.monotonic() - started
    return result


def lab_run(lab, *argv):
    """A run against the lab Postfix; returns it with smtpd's per-connection counts."""
    mark = lab.mark()
    result = run("-D", world.LAB_DOMAIN, "--dns-server", world.DNS_SERVER_ARG, "-v", *argv)
    return result, mark


def assert_probe_only_in_maillog(lab, mark, connections: int, endpoints=("mx1",)):
    """smtpd's disconnect lines of `endpoints` (names of tests/lab/postfix.ENDPOINTS: other
    sessions use the others meanwhile): no DATA or BDAT, QUIT at the end of each connection."""
    def ours():
        return [c for c in lab.disconnects(since=mark) if c["endpoint"] in endpoints]

    deadline = time.monotonic() + 5
    while len(ours()) < connections and time.monotonic() < deadline:
        time.sleep(0.05)
    counts = ours()
    assert len(counts) == connections, counts
    for count in counts:
        assert lab.probe_only(count), count


def assert_probe_only_in_record(server: FakeSmtpServer, *, dropped: int = 0):
    """The fake server's record: no DATA or BDAT; QUIT ends every connection it did not drop."""
    assert server.wait_ended()  # the client may exit before the server has noted the end
    sessions = server.sessions
    assert sessions
    assert not any(s.data_sent for s in sessions)
    assert sum(not s.ended_with_quit for s in sessions) == dropped, \
        [s.commands for s in sessions]


# -- the lab Postfix ------------------------------------------------------------------


@pytest.mark.lab
def test_closed_mx_set_is_ok_over_every_endpoint(lab):
    result, mark = lab_run(lab)
    assert result.exitcode == 0, result.output
    assert result.first_line.startswith(
        "OPEN_RELAY OK - 2 endpoints of MX of posture.test: 16 relay probes refused each, "
        "<> to postmaster accepted, slowest ")
    # the run's worst of each count, never an MX name or address in a label
    assert sorted(result.perfdata) == ["endpoints", "endpoints_ok", "probes", "relay_accepted",
                                       "relay_inconclusive", "relay_refused", "time"]
    assert result.perfdata["relay_refused"] == "16"
    assert result.perfdata["relay_accepted"] == "0"
    assert result.perfdata["probes"] == "17"
    assert result.perfdata["endpoints"] == result.perfdata["endpoints_ok"] == "2"
    assert_probe_only_in_maillog(lab, mark, connections=2, endpoints=("mx1", "mx2"))


@pytest.mark.lab
def test_perfdata_per_endpoint_labels_each_mx_by_its_key(lab):
    result, _ = lab_run(lab, "--perfdata-per-endpoint")
    assert result.exitcode == 0, result.output
    for key in ("mx1_posture_test_v4_1_", "mx2_posture_test_v4_1_"):
        assert result.perfdata[key + "relay_refused"] == "16"
        assert result.perfdata[key + "relay_accepted"] == "0"
        assert result.perfdata[key + "probes"] == "17"
        assert key + "time" in result.perfdata
    assert result.perfdata["relay_refused"] == "16"
    assert all(re.fullmatch(r"[a-z0-9_]+", label) for label in result.perfdata)


@pytest.mark.lab
def test_open_relay_is_critical_naming_probe_and_endpoint(lab):
    result, mark = lab_run(lab, "-H", "openrelay.posture.test")
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith(
        "OPEN_RELAY CRITICAL - openrelay.posture.test[127.0.25.6] open relay: 6 of 16 relay "
        "probes accepted: plain, source-route, ip-literal (+3 more); "
        "RCPT TO:<relay-probe@example.net>: 250 2.1.5 Ok")
    assert result.perfdata["relay_accepted"] == "6"
    assert re.search(r"^  accepted +percent-hack", result.output, re.M) is None
    assert re.search(r"^  accepted +plain/null +MAIL FROM:<> RCPT TO:<relay-probe@example"
                     r"\.net>: 250 2\.1\.5 Ok$", result.output, re.M)
    assert_probe_only_in_maillog(lab, mark, connections=1, endpoints=("openrelay",))


@pytest.mark.lab
def test_percent_hack_relay_is_critical_naming_that_probe(lab):
    result, mark = lab_run(lab, "-H", "127.0.25.7")
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith(
        "OPEN_RELAY CRITICAL - 127.0.25.7 open relay: 2 of 16 relay probes accepted: "
        "percent-hack, percent-hack/null; "
        "RCPT TO:<relay-probe%example.net@posture.test>: 250 2.1.5 Ok")
    assert re.search(r"^  refused +plain +MAIL FROM:<relay-probe@example\.org> "
                     r"RCPT TO:<relay-probe@example\.net>: 554 5\.7\.1 ", result.output, re.M)
    assert_probe_only_in_maillog(lab, mark, connections=1, endpoints=("percentrelay",))


@pytest.mark.lab
def test_source_route_and_bang_path_relay_each_named(lab):
    result, mark = lab_run(lab, "-H", "127.0.25.8", "--probe", "source-route",
                           "--probe", "bang-path", "--probe", "plain")
    assert result.exitcode == 2, result.output
    assert "2 of 3 relay probes accepted: source-route, bang-path;" in result.first_line
    assert result.perfdata["probes"] == "4"  # and postmaster
    assert_probe_only_in_maillog(lab, mark, connections=1, endpoints=("routerelay",))


@pytest.mark.lab
def test_allow_open_relay_is_ok_with_a_note(lab):
    result, mark = lab_run(lab, "-H", "127.0.25.7", "--allow-open-relay")
    assert result.exitcode == 0, result.output
    assert result.first_line.startswith(
        "OPEN_RELAY OK - 127.0.25.7: 14 of 16 relay probes refused, <> to postmaster "
        "accepted, ")
    assert ("127.0.25.7 relays (percent-hack, percent-hack/null): allowed by "
            "--allow-open-relay |") in result.first_line
    assert_probe_only_in_maillog(lab, mark, connections=1, endpoints=("percentrelay",))


@pytest.mark.lab
def test_no_postmaster_without_rcpt_asks_the_null_sender_alone(lab):
    # loop.test, a virtual alias domain of the lab Postfix, has no postmaster (550 5.1.1
    # at RCPT). With --no-postmaster and no --rcpt the null sender is tried alone: MAIL
    # FROM:<> and its reply, no recipient that would speak for another question.
    mx = roundtriplab.MX1[1]
    mark = lab.mark()
    result = run("-D", roundtriplab.LOOP_DOMAIN, "-H", mx, "--no-postmaster", "-v")
    assert result.exitcode == 0, result.output
    assert result.first_line.startswith(
        f"OPEN_RELAY OK - {mx}: 16 relay probes refused, <> accepted, "), result.output
    assert re.search(r"^  accepted +null-sender +MAIL FROM:<>: 250 2\.1\.0 Ok$",
                     result.output, re.M), result.output
    assert "postmaster" not in result.output
    assert_probe_only_in_maillog(lab, mark, connections=1, endpoints=("loopmx1",))


@pytest.mark.lab
def test_rcpt_must_be_accepted_and_transcript_shows_every_path(lab):
    result, mark = lab_run(lab, "-H", "mx1.posture.test", "--rcpt", "probe@posture.test",
                           "--rcpt", "nobody@posture.test", "--probe", "quoted", "-vvv")
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith(
        "OPEN_RELAY CRITICAL - mx1.posture.test[127.0.25.1] refuses "
        "<relay-probe@example.org> to <nobody@posture.test>: 550 5.1.1 ")
    sent = re.findall(r"\] +~>  (.*)$", result.output, re.M)
    assert 'RCPT TO:<"relay-probe@example.net"@posture.test>' in sent
    assert "RCPT TO:<probe@posture.test>" in sent
    assert "DATA" not in sent and sent[-1] == "QUIT"
    assert_probe_only_in_maillog(lab, mark, connections=1)


def _seconds(result) -> float:
    return float(result.perfdata["time"].rstrip("s"))


def _timeless(line: str) -> str:
    return re.sub(r"\d+\.\d+s\b", "<time>s", line)


@pytest.mark.lab
def test_pipelining_server_gets_the_probes_in_one_round_trip(lab_postfix):
    # a path with 10 ms each way in front of mx1: in lock step the 17 probes cost three
    # round trips each (MAIL, RCPT, RSET), pipelined (RFC 2920) one for them all
    from tests.lab.pathdelay import DelayedPath

    one_way = 0.01
    mark = lab_postfix.mark()
    with DelayedPath(one_way, tcp=[(("127.0.27.61", 0), ("127.0.25.1", 25))]) as path:
        argv = ("-H", "127.0.27.61", "-p", path.ports[0], "-D", world.LAB_DOMAIN,
                "--helo-name", "probe.posture.test", "-vvv")
        pipelined = run(*argv)
        lockstep = run(*argv, "--no-pipelining")
    for result in (pipelined, lockstep):
        assert result.exitcode == 0, result.output
    assert pipelined.first_line.startswith(
        "OPEN_RELAY OK - 127.0.27.61: 16 relay probes refused, <> to postmaster accepted, ")
    assert _timeless(pipelined.first_line) == _timeless(lockstep.first_line)
    # the probes' 52 commands (and QUIT) in one group, each reply read in turn
    assert re.findall(r"===  pipelining (\d+) commands", pipelined.output) == ["52"]
    assert "pipelining" not in lockstep.output
    sent = re.findall(r"\] +~>  (.*)$", pipelined.output, re.M)
    assert sent[sent.index("MAIL FROM:<>"):] == [
        line for line in re.findall(r"\] +~>  (.*)$", lockstep.output, re.M)
        if line.startswith(("MAIL", "RCPT", "RSET", "QUIT"))]
    round_trip = 2 * one_way
    assert _seconds(lockstep) > 17 * 3 * round_trip  # every command waited for its reply
    assert _seconds(pipelined) < _seconds(lockstep) / 4, (pipelined.output, lockstep.output)
    assert_probe_only_in_maillog(lab_postfix, mark, connections=2)


@pytest.mark.lab
def test_stock_postfix_error_limits_slow_the_probes_down_and_change_no_verdict(lab_postfix):
    # Postfix as shipped (and as Debian leaves it), unlike the lab's relaxed instance: after
    # 10 errors in a session smtpd sleeps 1 s before every reply. Ten refused relay probes
    # reach the limit at the last RCPT; the RSET after it and QUIT then come a second late
    # each, pipelined or not: the server sleeps per reply. (All 16 relay probes: the 20
    # replies after the tenth refusal, 20 s; check_open_relay(1) says what to expect.)
    endpoint = lab_postfix.endpoint("stocklimits")
    mark = lab_postfix.mark()
    runs = [run("-H", endpoint.address, "-D", world.LAB_DOMAIN, "--helo-name", "probe.posture.test",
                "--probe", "*/null", "--probe", "plain", "--probe", "percent-hack", "-v", *extra)
            for extra in ((), ("--no-pipelining",))]
    for result in runs:
        assert result.exitcode == 0, result.output
        assert result.first_line.startswith(
            "OPEN_RELAY OK - 127.0.25.17: 10 relay probes refused, <> to postmaster accepted, "
        ), result.output
        assert "1 connection(s)" in result.output
        assert _seconds(result) >= 2.0, result.first_line  # smtpd's error sleeps, waited out
    assert _timeless(runs[0].first_line) == _timeless(runs[1].first_line)
    assert_probe_only_in_maillog(lab_postfix, mark, connections=2, endpoints=("stocklimits",))


# -- scripted servers --------------------------------------------------------------------


def fake_run(server, *argv):
    return run("-D", "posture.test", "-H", server.host, "-p", server.port, "-t", "5", *argv)


def test_greylisting_is_a_warning(fake_smtp):
    server = fake_smtp("greylist")
    result = fake_run(server)
    assert result.exitcode == 1, result.output
    assert result.first_line.startswith(
        f"OPEN_RELAY WARNING - {server.host} 16 relay probes inconclusive (plain: "
        "450 4.7.1 ")
    assert f"{server.host} refuses the null sender to <postmaster@posture.test>: 450" \
        in result.first_line
    assert result.perfdata["relay_inconclusive"] == "16"
    assert fake_run(server, "--transient-state", "critical").exitcode == 2
    assert_probe_only_in_record(server)


def test_refused_null_sender_is_critical(fake_smtp):
    server = fake_smtp("null-sender-refused")  # and accepts any other sender's RCPT
    result = fake_run(server, "--probe", "*/null")
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith(
        f"OPEN_RELAY CRITICAL - {server.host} refuses the null sender: 550 5.7.1 ")
    assert result.perfdata["relay_refused"] == "8"  # refused at MAIL: no relay
    skipped = fake_run(server, "--probe", "*/null", "--no-null-sender")
    assert skipped.exitcode == 0, skipped.output  # postmaster from the external sender
    assert_probe_only_in_record(server)


def test_server_that_accepts_every_rcpt_is_an_open_relay_and_gets_no_data(fake_smtp):
    server = fake_smtp("accept-rcpt-reject-data")
    result = fake_run(server)
    assert result.exitcode == 2, result.output
    assert "open relay: 16 of 16 relay probes accepted" in result.first_line
    assert_probe_only_in_record(server)


def test_dropped_connection_is_reconnected_and_said(fake_smtp):
    server = fake_smtp("drop-after-3")
    result = fake_run(server, "--no-postmaster", "--no-null-sender", "-v")
    assert result.exitcode == 0, result.output
    assert result.perfdata["relay_refused"] == "16"
    # 16 refusals, three per connection: six connections, the last one ended by QUIT
    assert len(server.sessions) == 6
    assert "6 connection(s)" in result.output
    assert "the server closed connection 1 (421 4.7.0 " in result.output
    assert_probe_only_in_record(server, dropped=5)


#: a closed MX: postmaster accepted, every relay probe refused
CLOSED_MX = {"RCPT TO:<postmaster@posture.test>": "250 2.1.5 Ok",
             "RCPT": "554 5.7.1 Relay access denied"}


@pytest.mark.parametrize("script", [
    # after every third RSET's reply an unsolicited 421: read as the next probe's MAIL reply
    {"RSET": close_after(3, "250 2.0.0 Ok")},
    # after every fourth MAIL's reply an unsolicited 421: read as that probe's RCPT reply
    {"MAIL": close_after(4, "250 2.1.0 Ok")},
], ids=["before-mail", "before-rcpt"])
def test_a_421_where_a_probe_reply_was_due_is_asked_again(fake_smtp, script):
    # the 421 is the server closing the channel, not its verdict on that probe: the probe
    # goes first on the next connection, as for any probe the server left unanswered
    server = fake_smtp({**CLOSED_MX, **script})
    result = fake_run(server, "-v")
    assert result.exitcode == 0, result.output
    assert result.first_line.startswith(
        f"OPEN_RELAY OK - {server.host}: 16 relay probes refused, <> to postmaster "
        "accepted, "), result.output
    assert result.perfdata["relay_inconclusive"] == "0"
    assert "the server closed connection 1 (421 4.7.0 " in result.output
    assert_probe_only_in_record(server, dropped=len(server.sessions) - 1)


def test_allow_open_relay_still_warns_of_a_4xx_and_counts_what_was_refused(fake_smtp):
    server = fake_smtp({**CLOSED_MX, "RCPT TO:<relay-probe@example.net>": "250 2.1.5 Ok",
                        "RCPT TO:<relay-probe%": "450 4.7.1 Greylisted, try again later"})
    result = fake_run(server, "--allow-open-relay")
    assert result.exitcode == 1, result.output
    assert result.first_line.startswith(
        f"OPEN_RELAY WARNING - {server.host} 2 relay probes inconclusive (percent-hack: "
        "450 4.7.1 Greylisted"), result.output
    # a 4xx judged OK is not counted as refused either
    ok = fake_run(server, "--allow-open-relay", "--transient-state", "ok")
    assert ok.exitcode == 0, ok.output
    assert ok.first_line.startswith(
        f"OPEN_RELAY OK - {server.host}: 12 of 16 relay probes refused, <> to postmaster "
        "accepted, "), ok.output
    assert f"{server.host} relays (plain, plain/null): allowed by --allow-open-relay" \
        in ok.first_line
    assert_probe_only_in_record(server)


def test_tarpit_endpoint_does_not_starve_the_others(lab_dns):
    tarpit = FakeSmtpServer("tarpit").start()
    good = FakeSmtpServer("normal", address="::1", port=tarpit.port).start()
    try:
        result = run("-D", "phases.test", "--dns-server", world.DNS_SERVER_ARG,
                     "-p", tarpit.port, "--concurrency", "1", "-t", "3",
                     "--no-postmaster", "--no-null-sender")
        assert good.wait_ended()
    finally:
        tarpit.stop()
        good.stop()
    assert result.exitcode == 2, result.output
    assert re.search(r"CRITICAL - mx\.phases\.test\[127\.0\.27\.1\] rcpt: no complete reply "
                     r"within 1\.4\ds \(16 probes untested\)", result.first_line), result.output
    assert "open relay: 16 of 16 relay probes accepted" in result.first_line  # the good one
    assert result.elapsed < 3.5
    assert_probe_only_in_record(good)
    assert not any(s.data_sent for s in tarpit.sessions)


@pytest.mark.parametrize("argv, message", [
    (["-H", "127.0.25.1"], "-D/--domain is required (with -H, the domain the probes address)"),
    (["-D", "posture.test", "--probe", "percent"], "--probe 'percent' matches no probe; "
     "probes: plain, percent-hack, source-route, bang-path, quoted, double-at, ip-literal, "
     "unqualified (each also as NAME/null)"),
    (["-D", "posture.test", "--external-rcpt", "postmaster"],
     "--external-rcpt needs a domain: local@domain"),
    (["-D", "posture.test", "--rcpt", "<>"],
     "argument --rcpt: the null address <> cannot be a recipient"),
])
def test_usage_errors_say_what_is_wrong(argv, message):
    result = run(*argv)
    assert result.exitcode == 3, result.output
    assert f"check_open_relay: error: {message}\n" in result.output
