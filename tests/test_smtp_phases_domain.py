"""check_smtp_phases -D: endpoints from DNS (IPv4 and IPv6), and DNS failures."""

from __future__ import annotations

import socket
import time

import pytest

from check_smtp_posture.plugins.check_smtp_phases import main
from tests.conftest import run_main
from tests.lab.authdns import LabDns
from tests.lab.fakesmtp import FakeSmtpServer

DNS_ADDRESS = "127.0.27.53"


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
def dns():
    server = LabDns(DNS_ADDRESS, 53)
    server.add_zone("phases.test", """
        @        MX 10 mx
        mx       A     127.0.27.1
        mx       AAAA  ::1
        null     MX 0 .
        bare     A     127.0.27.1
        dangling MX 10 nowhere
        """)
    server.start()
    yield server
    server.stop()


def run(*argv):
    return run_main(main, [str(a) for a in argv])


def test_every_address_of_every_mx_is_probed(dns, endpoints):
    v4, v6 = endpoints
    result = run("-D", "phases.test", "--dns-server", dns.server_arg, "-p", v4.port)
    assert result.exitcode == 0, result.output
    assert result.first_line.startswith("SMTP_PHASES OK - 2 endpoints OK for MX of phases.test")
    assert "mx.phases.test_127.0.27.1_banner_time" in result.perfdata
    assert "mx.phases.test_::1_banner_time" in result.perfdata
    assert v4.wait_ended() and v6.wait_ended()
    assert "EHLO" in v4.commands and "EHLO" in v6.commands


@pytest.mark.parametrize("family, label", [("-4", "127.0.27.1"), ("-6", "::1")])
def test_address_family_options(dns, endpoints, family, label):
    result = run("-D", "phases.test", "--dns-server", dns.server_arg, "-p", endpoints[0].port,
                 family)
    assert result.exitcode == 0, result.output
    assert list(k for k in result.perfdata if k.endswith("_banner_time")) == [
        f"mx.phases.test_{label}_banner_time"]


def test_implicit_mx_uses_the_domain_address(dns, endpoints):
    result = run("-D", "bare.phases.test", "--dns-server", dns.server_arg,
                 "-p", endpoints[0].port, "-v")
    assert result.exitcode == 0, result.output
    assert "bare.phases.test has no MX; using its address records" in result.output


def test_null_mx_is_ok_with_a_note(dns):
    result = run("-D", "null.phases.test", "--dns-server", dns.server_arg)
    assert result.exitcode == 0, result.output
    assert "null MX (RFC 7505)" in result.first_line


def test_nxdomain_and_dangling_mx_are_critical(dns):
    result = run("-D", "missing.phases.test", "--dns-server", dns.server_arg)
    assert result.exitcode == 2
    assert "missing.phases.test: NXDOMAIN" in result.first_line
    result = run("-D", "dangling.phases.test", "--dns-server", dns.server_arg)
    assert result.exitcode == 2
    assert "nowhere.phases.test has no address" in result.first_line


def test_silent_dns_server_is_critical_within_the_deadline():
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.27.54", 0))  # receives queries, never answers
    try:
        started = time.monotonic()
        result = run("-D", "phases.test", "--dns-server",
                     f"127.0.27.54:{silent.getsockname()[1]}", "-t", "1.5")
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith("SMTP_PHASES CRITICAL - phases.test MX: TIMEOUT")
    assert elapsed < 2.0


def test_refusing_dns_server_is_critical_within_the_deadline():
    # Nothing listens there: ICMP refusals make dnspython back off and retry,
    # sleeping past its own lifetime unless the DNS layer stops waiting.
    started = time.monotonic()
    result = run("-D", "phases.test", "--dns-server", "127.0.27.55:53", "-t", "5")
    elapsed = time.monotonic() - started
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith("SMTP_PHASES CRITICAL - phases.test MX: TIMEOUT")
    assert elapsed < 5.3
