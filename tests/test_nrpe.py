"""The shipped NRPE snippet in a real NRPE daemon, asked by check_nrpe and by Icinga 2.

NRPE runs as the nagios user, as Debian's nagios-nrpe-server does, on 127.0.0.1
and a free port, with the snippet icinga2-conf/nrpe.d-check_smtp_posture.cfg
edited as its comment says (tests/lab/nrpe.py). Every command of the snippet is
asked through check_nrpe by hand and through the ITL's `nrpe` CheckCommand in a
real Icinga 2 daemon (the shipped apply rule of check_smtp_posture-nrpe.conf),
and must give the state and first line of the plugin run by hand.
"""

from __future__ import annotations

import shlex
import shutil
import time
from pathlib import Path

import pytest

from tests.lab.icinga import (
    ICINGA2,
    IcingaNode,
    Pki,
    install_for_nagios,
    perf_labels,
    private_dir,
    run_as_user,
    run_plugin_as_nagios,
    site_includes,
    split_status_line,
    without_numbers,
)
from tests.lab.nrpe import CHECK_NRPE, NRPE, LabNrpe, check_nrpe

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(not all(Path(p).exists() for p in (ICINGA2, NRPE, CHECK_NRPE)),
                                 reason="icinga2, nrpe or check_nrpe is not installed "
                                        "(run `make install`)")]

#: the state each command of the shipped snippet gives on the lab domain, and why
EXPECTED = {
    "smtp_posture_smtp": (1, "certificate: untrusted"),  # the lab CA is no public one
    "smtp_posture_mx": (1, "non-public address 127.0.25.1 (loopback)"),
    "smtp_posture_dnsbl": (0, "DNSBL OK - no usable zone"),  # the public lists are not in the lab
    "smtp_posture_spf": (0, "SPF OK - posture.test: policy -all"),
    "smtp_posture_open_relay": (0, "16 relay probes refused each"),
    "smtp_posture_mta_sts": (2, "no MTA-STS record"),
    # the lab NSD refuses _dmarc.test: the tree walk cannot prove there is no record
    "smtp_posture_dmarc": (2, "DMARC lookup of _dmarc.test failed: SERVFAIL (REFUSED)"),
}

SITE = """
object Host "nrpe.lab" {{
  import "smtp-posture-host"
  address = "127.0.0.1"
  vars.nrpe_port = {port}
  vars.smtp_posture_nrpe_commands = {commands}
}}
"""


@pytest.fixture(scope="module")
def installed():
    root = private_dir("nrpe-conf-")
    yield install_for_nagios(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def nrpe(lab, lab_dns, installed):
    with LabNrpe(installed.nrpe_snippet, "posture.test", lab_dns.server_arg) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def icinga(nrpe, installed):
    started = time.monotonic()
    commands = "[ " + ", ".join(f'"{name}"' for name in EXPECTED) + " ]"
    pki = Pki(private_dir("icinga-pki-"))
    node = IcingaNode("lab-nrpe-master", pki, includes=site_includes(installed),
                      objects=SITE.format(port=nrpe.port, commands=commands))
    try:
        node.start()
        forced_at = time.time()
        node.api("POST", "/v1/actions/reschedule-check",
                 {"type": "Service", "filter": "true", "force": True})
        end = time.monotonic() + 90
        while time.monotonic() < end:
            services = node.services()
            if services and all(a["last_check_result"]
                                and a["last_check_result"]["schedule_start"] >= forced_at - 1
                                for a in services.values()):
                break
            time.sleep(0.25)
        else:
            raise AssertionError("Icinga did not check every NRPE service:\n" + node.log()[-4000:])
        yield services, time.monotonic() - started
    finally:
        node.stop()
        shutil.rmtree(node.workdir, ignore_errors=True)
        shutil.rmtree(pki.workdir, ignore_errors=True)


def test_the_snippet_names_every_plugin_that_needs_only_the_domain(nrpe):
    # check_dane, check_mail_roundtrip and check_dkim need more than the domain (a
    # validating resolver, a mailbox, selectors): the snippet's comment says so.
    assert set(nrpe.commands) == set(EXPECTED)
    scripts = {Path(shlex.split(line)[0]).name for line in nrpe.commands.values()}
    assert scripts == {"check_smtp_phases", "check_mx_sanity", "check_dnsbl", "check_spf",
                       "check_open_relay", "check_mta_sts", "check_dmarc"}


def test_nrpe_runs_as_the_nagios_user(nrpe):
    assert nrpe.uid() == run_as_user().pw_uid


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_check_nrpe_gives_what_the_plugin_gives_by_hand(nrpe, command):
    state, fragment = EXPECTED[command]
    remote = check_nrpe("-H", "127.0.0.1", "-p", str(nrpe.port), "-c", command, "-t", "40")
    local = run_plugin_as_nagios(shlex.split(nrpe.commands[command]))
    assert (remote.returncode, local.returncode) == (state, state), remote.stdout + remote.stderr
    remote_first, local_first = remote.stdout.splitlines()[0], local.stdout.splitlines()[0]
    assert fragment in remote_first
    remote_text, remote_perf = split_status_line(remote_first)
    local_text, local_perf = split_status_line(local_first)
    assert without_numbers(remote_text) == without_numbers(local_text)
    assert perf_labels(remote_perf) == perf_labels(local_perf)


def test_a_command_not_in_the_snippet_is_unknown(nrpe):
    remote = check_nrpe("-H", "127.0.0.1", "-p", str(nrpe.port), "-c", "check_users")
    assert remote.returncode == 3
    assert remote.stdout.startswith("NRPE: Command 'check_users' not defined")


@pytest.mark.parametrize("command", sorted(EXPECTED))
def test_icinga_nrpe_command_gives_what_check_nrpe_gives(nrpe, icinga, command):
    services, _ = icinga
    state, fragment = EXPECTED[command]
    result = services[f"nrpe.lab!nrpe-{command}"]["last_check_result"]
    assert result["command"][0] == CHECK_NRPE
    args = result["command"][1:]
    assert dict(zip(args[::2], args[1::2])) == {"-H": "127.0.0.1", "-p": str(nrpe.port),
                                                "-c": command, "-t": "40"}, args
    assert result["state"] == state, result["output"]
    first = result["output"].splitlines()[0]
    assert fragment in first
    by_hand = check_nrpe(*result["command"][1:])
    hand_text, hand_perf = split_status_line(by_hand.stdout.splitlines()[0])
    assert without_numbers(first.strip()) == without_numbers(hand_text)
    assert perf_labels(result["performance_data"] or []) == perf_labels(hand_perf)
