"""check_open_relay pipelined (RFC 2920) gives the verdicts it gives in lock step.

Every lab relay case (the lab Postfix's closed, open, percent-hack and routing
relays, its endpoint without STARTTLS, a domain without postmaster) and every
fault-matrix row that runs check_open_relay (tests/test_faults_smtp.py,
tests/test_faults_dns.py: scripted servers, each offering PIPELINING) is run
twice, as it is and with --no-pipelining: the exit status and the first line
must be the same, but for the times in it.
"""

from __future__ import annotations

import re

import pytest

from tests import test_faults_dns as dns_faults
from tests import test_faults_smtp as smtp_faults
from tests.conftest import run_main
from tests.lab import roundtriplab, world

LOCKSTEP = "--no-pipelining"


def timeless(line: str) -> str:
    """The first line without what varies from run to run: the times, and which of
    several endpoints happened to be the slowest."""
    line = re.sub(r"\d+\.\d+s\b", "<t>s", line)
    return re.sub(r"slowest \S+ ", "slowest <endpoint> ", line)


def assert_same(pipelined, lockstep, where: str) -> None:
    assert (pipelined.exitcode, timeless(pipelined.first_line)) == \
        (lockstep.exitcode, timeless(lockstep.first_line)), \
        f"{where}\n--- pipelined:\n{pipelined.output}\n--- lock step:\n{lockstep.output}"


# -- the lab Postfix ---------------------------------------------------------------------

LAB = ("-D", world.LAB_DOMAIN, "--dns-server", world.DNS_SERVER_ARG,
       "--helo-name", "probe.posture.test")
LAB_CASES = {
    "closed-mx-set": LAB,
    "closed-in-clear": (*LAB, "-H", "127.0.25.1", "--no-starttls"),
    "no-starttls-offered": (*LAB, "-H", "notls.posture.test"),
    "open-relay": (*LAB, "-H", "openrelay.posture.test"),
    "open-relay-no-null-sender": (*LAB, "-H", "127.0.25.6", "--no-null-sender"),
    "percent-hack": (*LAB, "-H", "127.0.25.7"),
    "percent-hack-allowed": (*LAB, "-H", "127.0.25.7", "--allow-open-relay"),
    "routing-forms": (*LAB, "-H", "127.0.25.8", "--probe", "source-route", "--probe",
                      "bang-path", "--probe", "plain"),
    "rcpt-refused": (*LAB, "-H", "mx1.posture.test", "--rcpt", "probe@posture.test",
                     "--rcpt", "nobody@posture.test", "--probe", "quoted"),
    "no-postmaster": ("-D", roundtriplab.LOOP_DOMAIN, "-H", roundtriplab.MX1[1],
                      "--no-postmaster", "--helo-name", "probe.posture.test"),
}


@pytest.mark.lab
@pytest.mark.parametrize("argv", LAB_CASES.values(), ids=LAB_CASES)
def test_lab_relay_case(lab, argv):
    from check_smtp_posture.plugins.check_open_relay import main

    pipelined = run_main(main, [*argv, "-vvv"])
    lockstep = run_main(main, [*argv, "-vvv", LOCKSTEP])
    assert_same(pipelined, lockstep, " ".join(argv))
    # the lab Postfix offers PIPELINING: the probes really went in groups
    assert "===  pipelining " in pipelined.output, pipelined.output
    assert "===  pipelining " not in lockstep.output


# -- the fault matrix ----------------------------------------------------------------------

certs = smtp_faults.certs  # the fixture that makes the certificate rows' certificates

SMTP_ROWS = [pytest.param(case, id=case.row.id,
                          marks=[pytest.mark.lab] if case.lab else [])
             for case in smtp_faults.CASES if smtp_faults.R in case.row.plugins.split(", ")]


@pytest.mark.parametrize("case", SMTP_ROWS)
def test_smtp_fault_row(case, request):
    relay = smtp_faults.R
    with case.serve(smtp_faults.Env(request)) as target:
        argv = smtp_faults.argv(relay, target, case)
        if case.netns:  # a namespace of its own: addresses nothing answers
            pipelined, lockstep = (smtp_faults.run_in_netns([relay], {relay: args})[0]
                                   for args in (argv, [*argv, LOCKSTEP]))
        else:
            pipelined, lockstep = (smtp_faults.run_here(relay, args)
                                   for args in (argv, [*argv, LOCKSTEP]))
    assert_same(pipelined, lockstep, case.row.id)
    assert case.row.message in pipelined.first_line, pipelined.output


DNS_ROWS = [pytest.param(case, argv, id=f"{case.row.id}-{argv[2]}")
            for case in dns_faults.CASES for argv in case.runs
            if argv[0] == "check_open_relay"]


@pytest.fixture(scope="module")
def fake_dns():
    from tests.lab import fakedns

    with fakedns.FakeDns(fakedns.fault_world()) as server:
        yield server


@pytest.mark.parametrize("case, argv", DNS_ROWS)
def test_dns_fault_row(case, argv, fake_dns, fake_smtp):
    smtp = fake_smtp(dns_faults.RELAY_SCRIPT)
    pipelined, _ = dns_faults._run(argv, case, fake_dns.server_arg, smtp.port)
    lockstep, _ = dns_faults._run((*argv, LOCKSTEP), case, fake_dns.server_arg, smtp.port)
    assert_same(pipelined, lockstep, " ".join(argv))
    assert case.row.message in pipelined.first_line, pipelined.output
