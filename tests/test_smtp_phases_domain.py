"""check_smtp_phases -D: endpoints from DNS (IPv4 and IPv6), and DNS failures."""

from __future__ import annotations

import re
import time

import pytest

from check_smtp_posture.plugins.check_smtp_phases import main
from tests.conftest import run_main
from tests.lab.fakesmtp import FakeSmtpServer


@pytest.fixture(scope="module")
def endpoints():
    """One fake SMTP server on 127.0.27.1 and one on ::1, on the same port."""
    v4 = FakeSmtpServer("normal", hostname="v4.phases.test").start()
    v6 = FakeSmtpServer("normal", address="::1", port=v4.port,
                        hostname="v6.phases.test").start()
    yield v4, v6
    v4.stop()
    v6.stop()


@pytest.fixture(scope="module")
def dns(lab_dns):
    """The shared lab NSD; it serves phases.test (tests/lab/phaseslab.py)."""
    return lab_dns


def run(*argv):
    return run_main(main, [str(a) for a in argv])


def test_every_address_of_every_mx_is_probed(dns, endpoints):
    v4, v6 = endpoints
    result = run("-D", "phases.test", "--dns-server", dns.server_arg, "-p", v4.port)
    assert result.exitcode == 0, result.output
    assert result.first_line.startswith("SMTP_PHASES OK - 2 endpoints OK for MX of phases.test")
    assert "banner_time" in result.perfdata
    assert result.perfdata["endpoints"] == "2"
    assert result.perfdata["endpoints_ok"] == "2"
    assert v4.wait_ended() and v6.wait_ended()
    assert "EHLO" in v4.commands and "EHLO" in v6.commands


@pytest.mark.parametrize("family, key", [("-4", "v4_1"), ("-6", "v6_1")])
def test_address_family_options(dns, endpoints, family, key):
    result = run("-D", "phases.test", "--dns-server", dns.server_arg, "-p", endpoints[0].port,
                 family, "--perfdata-per-endpoint")
    assert result.exitcode == 0, result.output
    assert result.perfdata["endpoints"] == "1"
    assert list(k for k in result.perfdata if k.endswith("_banner_time")) == [
        f"mx_phases_test_{key}_banner_time"]


def test_implicit_mx_uses_the_domain_address(dns, endpoints):
    result = run("-D", "bare.phases.test", "--dns-server", dns.server_arg,
                 "-p", endpoints[0].port, "-v")
    assert result.exitcode == 1, result.output  # implicit MX: a WARNING, and probed
    assert "no MX, implicit MX from address records" in result.first_line
    assert "bare.phases.test[127.0.27.1] port" in result.output


def test_null_mx_is_ok_with_a_note(dns):
    result = run("-D", "null.phases.test", "--dns-server", dns.server_arg)
    assert result.exitcode == 0, result.output
    assert "null MX (RFC 7505)" in result.first_line


def test_nxdomain_and_dangling_mx_are_critical(dns):
    result = run("-D", "missing.phases.test", "--dns-server", dns.server_arg)
    assert result.exitcode == 2
    assert "missing.phases.test does not exist (NXDOMAIN)" in result.first_line
    result = run("-D", "dangling.phases.test", "--dns-server", dns.server_arg)
    assert result.exitcode == 2
    assert "nowhere.phases.test: NXDOMAIN" in result.first_line


@pytest.mark.slow
def test_refusing_dns_server_is_critical_within_the_deadline():
    # Nothing listens there: ICMP refusals make dnspython back off and retry,
    # sleeping past its own lifetime unless the DNS layer stops waiting.
    started = time.monotonic()
    result = run("-D", "phases.test", "--dns-server", "127.0.27.55:53", "-t", "2")
    elapsed = time.monotonic() - started
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith("SMTP_PHASES CRITICAL - MX lookup failed: TIMEOUT")
    assert elapsed < 2.3


def test_a_tarpit_endpoint_gets_its_share_and_the_others_keep_theirs(dns):
    # One wave at a time (--concurrency 1): the tarpit used to eat all of -t and
    # the next endpoint was never probed ("no time left").
    tarpit = FakeSmtpServer("no-banner").start()
    good = FakeSmtpServer("normal", address="::1", port=tarpit.port).start()
    try:
        started = time.monotonic()
        result = run("-D", "phases.test", "--dns-server", dns.server_arg, "-p", tarpit.port,
                     "--concurrency", "1", "-t", "2")
        elapsed = time.monotonic() - started
        assert good.wait_ended()
    finally:
        tarpit.stop()
        good.stop()
    assert result.exitcode == 2, result.output
    assert re.search(r"CRITICAL - mx\.phases\.test\[127\.0\.27\.1\] banner: no complete "
                     r"reply within 0\.9\ds", result.first_line), result.output
    # the tarpit has no total time: the run's is the other endpoint's
    assert "time" in result.perfdata
    assert result.perfdata["endpoints"] == "2"
    assert result.perfdata["endpoints_ok"] == "1"
    assert good.commands[-1] == "QUIT"
    assert elapsed < 2.5
