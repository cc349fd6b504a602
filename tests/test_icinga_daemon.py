"""The shipped Icinga 2 configuration executed by real daemons, not only parsed.

One master and one agent (`icinga2 daemon`, private directories, API on 127.0.0.1,
running as the nagios user as on Debian) load icinga2-conf/ as an operator does.
The master has the hosts below, written as a site writes them: hosts importing
the shipped host template, with mail domains in `vars.mail_domains`, from which
the shipped apply rules make the services, and a few host-mode services made from
the shipped service templates. Every check is forced through the API and read
back (`/v1/objects/services`: state, output, perfdata, the executed command);
each must have run the plugin installed for the nagios user with the arguments
the variables say, and agree with the same command run by hand as that user.
The domains whose `command_endpoint` is the agent are checked there and their
results reach the master.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.lab.icinga import (
    ICINGA2,
    PLUGIN_BIN,
    IcingaNode,
    Pki,
    console_scripts,
    free_port,
    install_for_nagios,
    parsed,
    perf_labels,
    private_dir,
    run_plugin_as_nagios,
    site_includes,
    split_status_line,
    without_numbers,
)

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(not Path(ICINGA2).exists(),
                                 reason="icinga2 is not installed (run `make install`)")]

PASSWORD = "lab-probe-secret"  # tests/lab/postfix.py SASL_PASSWORD
AGENT = "lab-agent"
MASTER = "lab-master"

# What the site writes: its hosts. {dns} is the lab DNS server, {resolver} the lab's
# validating resolver, {sts_ca} the lab CA and the nginx lab CA in one file, {ca} a copy of the
# lab CA, {pwfile} a password file the nagios user can read.
SITE = """
object Host "defaults.lab" {
  import "smtp-posture-host"
  address = "127.0.25.1"
  vars.mail_domains["posture.test"] = { dns_server = "{dns}" }
  vars.mail_posture_notify.users = [ "icingaadmin" ]
}

object Host "tuned.lab" {
  import "smtp-posture-host"
  address = "127.0.25.1"
  vars.mail_domains["posture.test"] = {
    no_dmarc_check = true
    no_dane_check = true
    no_mta_sts_check = true
    dns_server = [ "{dns}", "{dns}" ]
    roundtrip_address = "roundtrip@posture.test"
    smtp_phases_ca_file = "{ca}"
    smtp_phases_require_starttls = true
    smtp_phases_warning = 3
    smtp_phases_critical = 5
    smtp_phases_phase_threshold = [ "banner=2,5", "ehlo=2,5" ]
    smtp_phases_verbose = 3
    mx_sanity_allow_private = true
    mx_sanity_expect_mx = [ "mx1.posture.test", "mx2.posture.test" ]
    mx_sanity_min_mx = 2
    mx_sanity_timeout = 8
    mx_sanity_verbose = 2
    dnsbl_no_default_zones = true
    dnsbl_zone = [ "dnsbl.posture.test", "txt.bl.lab.test" ]
    dnsbl_ip = "127.0.0.2"
    dnsbl_critical = 3
    dnsbl_verbose = false
    spf_check_mx = true
    spf_ip = [ "127.0.25.9", "192.0.2.1" ]
    spf_expect = "pass,fail"
    spf_verbose = true
    open_relay_probe = [ "percent-hack", "*/null" ]
    open_relay_rcpt = "roundtrip@posture.test"
    open_relay_timeout = 20
    open_relay_verbose = 1
  }
}

object Host "switches.lab" {
  import "smtp-posture-host"
  vars.mail_domains["posture.test"] = {
    no_dmarc_check = true
    no_dane_check = true
    no_mta_sts_check = true
    dns_server = "{dns}"
    no_smtp_check = true
    no_mx_check = true
    no_dnsbl_check = true
    no_spf_check = true
    open_relay_intended = true
    open_relay_hostname = "openrelay.posture.test"
  }
  vars.mail_domains["good.mx.lab.test"] = {
    no_dmarc_check = true
    no_dane_check = true
    no_mta_sts_check = true
    dns_server = "{dns}"
    no_smtp_check = true
    no_dnsbl_check = true
    no_open_relay_check = true
    no_spf_record = true
    mx_sanity_allow_private = true
    mx_sanity_require_ipv6 = true
  }
  vars.mail_domains["nullmx.mx.lab.test"] = {
    no_dmarc_check = true
    no_dane_check = true
    no_mta_sts_check = true
    dns_server = "{dns}"
    no_smtp_check = true
    no_dnsbl_check = true
    no_spf_check = true
    no_open_relay_check = true
    mx_sanity_expect_mail = true
  }
  vars.mail_domains["at8.spf.test"] = {
    no_dmarc_check = true
    no_dane_check = true
    no_mta_sts_check = true
    dns_server = "{dns}"
    no_smtp_check = true
    no_mx_check = true
    no_dnsbl_check = true
    no_open_relay_check = true
    spf_warning = 7
    spf_critical = 9
  }
  vars.mail_domains["dnsbl-target.lab.test"] = {
    no_dmarc_check = true
    no_dane_check = true
    no_mta_sts_check = true
    dns_server = "{dns}"
    no_smtp_check = true
    no_mx_check = true
    no_spf_check = true
    no_open_relay_check = true
    dnsbl_no_default_zones = true
    dnsbl_zone = [ "txt.bl.lab.test", "second.bl.lab.test" ]
    dnsbl_domain_zone = "dbl.lab.test"
    dnsbl_warning = 1
    dnsbl_critical = 3
    dnsbl_strict = true
  }
}

object Host "relay.lab" {
  import "smtp-posture-host"
  vars.mail_domains["posture.test"] = {
    no_dmarc_check = true
    no_dane_check = true
    no_mta_sts_check = true
    dns_server = "{dns}"
    no_smtp_check = true
    no_dnsbl_check = true
    no_spf_check = true
    open_relay_hostname = "percentrelay.posture.test"
    open_relay_probe = "percent*"
    mx_sanity_allow_private = true
    mx_sanity_min_mx = 3
    mx_sanity_expect_mx = "mx1.posture.test"
  }
}

/* Host mode: the host's own address, from the shipped SMTP template. */
object Host "dane.lab" {
  import "smtp-posture-host"
  vars.mail_domains["ee.dane.test"] = {
    no_dmarc_check = true
    dns_server = "{dns}"
    validating_dns_server = "{resolver}"
    no_smtp_check = true
    no_mx_check = true
    no_dnsbl_check = true
    no_spf_check = true
    no_open_relay_check = true
    no_mta_sts_check = true
    dane_secure_name = "dane.test"
    dane_bogus_name = "badsig.dane.test"
    dane_helo_name = "monitor.posture.test"
    dane_verbose = 1
  }
  vars.mail_domains["dual.dane.test"] = {
    no_dmarc_check = true
    no_smtp_check = true
    no_mx_check = true
    no_dnsbl_check = true
    no_spf_check = true
    no_open_relay_check = true
    no_mta_sts_check = true
    dane_dns_server = [ "{resolver}" ]
    dane_secure_name = "dane.test"
    dane_bogus_name = "badsig.dane.test"
    dane_warning = "40:"
    dane_critical = "2:"
    dane_timeout = 20
  }
}

object Host "sts.lab" {
  import "smtp-posture-host"
  vars.mail_domains["good.sts.test"] = {
    no_dmarc_check = true
    dns_server = "{dns}"
    no_smtp_check = true
    no_mx_check = true
    no_dnsbl_check = true
    no_spf_check = true
    no_open_relay_check = true
    no_dane_check = true
    mta_sts_ca_file = "{sts_ca}"
    mta_sts_helo_name = "monitor.posture.test"
    mta_sts_verbose = 1
  }
  vars.mail_domains["posture.test"] = {
    no_dmarc_check = true
    dns_server = "{dns}"
    no_smtp_check = true
    no_mx_check = true
    no_dnsbl_check = true
    no_spf_check = true
    no_open_relay_check = true
    no_dane_check = true
    no_mta_sts_policy = true
  }
}

/* The mail round trip, synchronous (an empty state file path): through both loop MX
 * to the monitor mailbox over IMAPS. */
object Host "roundtrip.lab" {
  import "smtp-posture-host"
  vars.mail_domains["loop.test"] = {
    no_dmarc_check = true
    dns_server = "{dns}"
    no_smtp_check = true
    no_mx_check = true
    no_dnsbl_check = true
    no_spf_check = true
    no_open_relay_check = true
    no_dane_check = true
    no_mta_sts_check = true
    mail_roundtrip_to = "probe@loop.test"
    mail_roundtrip_mailbox = "imaps://monitor%40monitor.test@mail.monitor.test/INBOX"
    mail_roundtrip_mailbox_ca_file = "{ca}"
    mail_roundtrip_mailbox_password_file = "{mbpwfile}"
    mail_roundtrip_helo_name = "monitor.posture.test"
    mail_roundtrip_state_file = ""
    mail_roundtrip_timeout = 30
  }
}

object Host "submit.lab" {
  import "smtp-posture-host"
  address = "127.0.25.3"
}

template Service "lab-submission" {
  import "smtp-posture-smtp"
  vars.smtp_phases_servername = "submit.posture.test"
  vars.smtp_phases_ca_file = "{ca}"
  vars.smtp_phases_sasl_user = "probe@posture.test"
}

object Service "submission-password" {
  host_name = "submit.lab"
  import "lab-submission"
  vars.smtp_phases_port = 587
  vars.smtp_phases_require_starttls = true
  vars.smtp_phases_sasl_password = "{password}"
  vars.smtp_phases_verbose = 3
}

object Service "submission-no-password" {
  host_name = "submit.lab"
  import "lab-submission"
  vars.smtp_phases_port = 587
}

object Service "smtps-password-file" {
  host_name = "submit.lab"
  import "lab-submission"
  vars.smtp_phases_tls = true
  vars.smtp_phases_port = 465
  vars.smtp_phases_sasl_mechanism = "LOGIN"
  vars.smtp_phases_sasl_password_file = "{pwfile}"
}

/* Checked from the agent. A host in the master's zone, as zones.d/master/ makes it. */
object Host "dmarc.lab" {
  import "smtp-posture-host"
  vars.mail_domains["good.dmarclab"] = {
    dns_server = "{dns}"
    no_smtp_check = true
    no_mx_check = true
    no_dnsbl_check = true
    no_spf_check = true
    no_open_relay_check = true
    no_dane_check = true
    no_mta_sts_check = true
    dmarc_probe_destinations = true
    dmarc_helo_name = "monitor.posture.test"
    dmarc_verbose = 1
  }
  vars.mail_domains["none.dmarclab"] = {
    dns_server = "{dns}"
    no_smtp_check = true
    no_mx_check = true
    no_dnsbl_check = true
    no_spf_check = true
    no_open_relay_check = true
    no_dane_check = true
    no_mta_sts_check = true
    dmarc_accept_none = true
  }
}

object Host "agent.lab" {
  import "smtp-posture-host"
  zone = "master"
  vars.mail_domains["posture.test"] = {
    no_dmarc_check = true
    no_dane_check = true
    no_mta_sts_check = true
    dns_server = "{dns}"
    command_endpoint = "lab-agent"
    no_smtp_check = true
    no_open_relay_check = true
    mx_sanity_allow_private = true
    dnsbl_no_default_zones = true
    dnsbl_zone = "dnsbl.posture.test"
    dnsbl_ip = "127.0.0.2"
  }
}

/* DKIM: created only for a domain that lists its selectors (no state file here). */
object Host "dkim.lab" {
  import "smtp-posture-host"
  vars.mail_domains["dkim.test"] = {
    dns_server = "{dns}"
    no_smtp_check = true
    no_mx_check = true
    no_dnsbl_check = true
    no_spf_check = true
    no_open_relay_check = true
    no_dane_check = true
    no_mta_sts_check = true
    no_dmarc_check = true
    dkim_selectors = [ "ed", "rsa2048" ]
    dkim_state_file = ""
  }
}
"""

#: the cluster: the same text on both nodes
ZONES = """
object Endpoint "lab-master" { }
object Zone "master" { endpoints = [ "lab-master" ] }
object Endpoint "lab-agent" { host = "127.0.0.1"; port = {agent_port} }
object Zone "lab-agent" { endpoints = [ "lab-agent" ]; parent = "master" }
"""


@dataclass(frozen=True)
class Variant:
    """A service the configuration must produce, and the command a user would type."""

    host: str
    service: str
    argv: tuple[str, ...]  # the plugin's arguments, {dns}/{ca}/{pwfile} filled in at run time
    state: int
    fragment: str  # in the first line of the output
    env: dict = field(default_factory=dict)  # what the daemon exports, for the run by hand
    endpoint: str = MASTER

    @property
    def name(self) -> str:
        return f"{self.host}!{self.service}"

    @property
    def script(self) -> str:
        return self.argv[0]


D = "--dns-server"
VARIANTS = [
    # defaults: only the domain and the DNS server set; every optional variable unset
    Variant("defaults.lab", "smtp-posture.test",
            ("check_smtp_phases", "-D", "posture.test", D, "{dns}"),
            1, "certificate: untrusted"),
    Variant("defaults.lab", "mx-posture.test",
            ("check_mx_sanity", "-D", "posture.test", D, "{dns}", "-t", "10"),
            1, "non-public address 127.0.25.1"),
    Variant("defaults.lab", "dnsbl-posture.test",
            ("check_dnsbl", "-D", "posture.test", D, "{dns}", "-t", "10", "-v"),
            0, "DNSBL OK - no usable zone"),
    Variant("defaults.lab", "spf-posture.test",
            ("check_spf", "-D", "posture.test", D, "{dns}"),
            0, "SPF OK - posture.test: policy -all"),
    Variant("defaults.lab", "open-relay-posture.test",
            ("check_open_relay", "-D", "posture.test", D, "{dns}"),
            0, "16 relay probes refused each"),
    # tuned: repeated options as arrays and strings, flags, thresholds, verbosity levels
    Variant("tuned.lab", "smtp-posture.test",
            ("check_smtp_phases", "-D", "posture.test", D, "{dns}", D, "{dns}",
             "--to", "roundtrip@posture.test", "--ca-file", "{ca}", "--require-starttls",
             "-w", "3", "-c", "5", "--phase-threshold", "banner=2,5",
             "--phase-threshold", "ehlo=2,5", "-vvv"),
            0, "SMTP_PHASES OK - 2 endpoints OK for MX of posture.test"),
    Variant("tuned.lab", "mx-posture.test",
            ("check_mx_sanity", "-D", "posture.test", D, "{dns}", D, "{dns}", "-t", "8",
             "--allow-private", "--expect-mx", "mx1.posture.test,mx2.posture.test",
             "--min-mx", "2", "-vv"),
            0, "MX_SANITY OK - posture.test: 2 MX, 2 addresses"),
    Variant("tuned.lab", "dnsbl-posture.test",
            ("check_dnsbl", "-D", "posture.test", D, "{dns}", D, "{dns}", "-t", "10",
             "--no-default-zones", "--zone", "dnsbl.posture.test", "--zone", "txt.bl.lab.test",
             "--ip", "127.0.0.2", "-c", "3"),
            1, "127.0.0.2 listed on dnsbl.posture.test"),
    Variant("tuned.lab", "spf-posture.test",
            ("check_spf", "-D", "posture.test", D, "{dns}", D, "{dns}", "--check-mx",
             "--ip", "127.0.25.9", "--ip", "192.0.2.1", "--expect", "pass,fail", "-v"),
            0, "check_host(192.0.2.1) = fail"),
    Variant("tuned.lab", "open-relay-posture.test",
            ("check_open_relay", "-D", "posture.test", D, "{dns}", D, "{dns}",
             "--probe", "percent-hack", "--probe", "*/null", "--rcpt", "roundtrip@posture.test",
             "-t", "20", "-v"),
            0, "roundtrip@posture.test accepted"),
    # per-domain switches: skipped checks, an intended relay, no SPF record on purpose
    Variant("switches.lab", "open-relay-posture.test",
            ("check_open_relay", "-D", "posture.test", "-H", "openrelay.posture.test",
             D, "{dns}", "--allow-open-relay"),
            0, "allowed by --allow-open-relay"),
    Variant("switches.lab", "mx-good.mx.lab.test",
            ("check_mx_sanity", "-D", "good.mx.lab.test", D, "{dns}", "-t", "10",
             "--allow-private", "--require-ipv6"),
            0, "2 MX, 3 addresses (1 IPv6)"),
    Variant("switches.lab", "spf-good.mx.lab.test",
            ("check_spf", "-D", "good.mx.lab.test", D, "{dns}", "--missing", "ok"),
            0, "no SPF record at good.mx.lab.test"),
    Variant("switches.lab", "mx-nullmx.mx.lab.test",
            ("check_mx_sanity", "-D", "nullmx.mx.lab.test", D, "{dns}", "-t", "10",
             "--expect-mail"),
            2, "null MX (RFC 7505): nullmx.mx.lab.test accepts no mail"),
    Variant("switches.lab", "spf-at8.spf.test",
            ("check_spf", "-D", "at8.spf.test", D, "{dns}", "-w", "7", "-c", "9"),
            1, "8 DNS-querying terms"),
    Variant("switches.lab", "dnsbl-dnsbl-target.lab.test",
            ("check_dnsbl", "-D", "dnsbl-target.lab.test", D, "{dns}", "-t", "10", "-v",
             "--no-default-zones", "--zone", "txt.bl.lab.test", "--zone", "second.bl.lab.test",
             "--domain-zone", "dbl.lab.test", "-w", "1", "-c", "3", "--strict"),
            2, "127.0.28.21 listed on txt.bl.lab.test"),
    # DANE: through the lab's validating resolver; without one (the defaults' NSD) the
    # resolver check fails
    Variant("defaults.lab", "dane-posture.test",
            ("check_dane", "-D", "posture.test", D, "{dns}"),
            2, "resolver check: lookup of . failed: SERVFAIL (REFUSED"),
    Variant("dane.lab", "dane-ee.dane.test",
            ("check_dane", "-D", "ee.dane.test", D, "{resolver}", "--secure-name", "dane.test",
             "--bogus-name", "badsig.dane.test", "--helo-name", "monitor.posture.test", "-v"),
            0, "DANE authenticated (RSA; 3 1 1), rollover ready"),
    Variant("dane.lab", "dane-dual.dane.test",
            ("check_dane", "-D", "dual.dane.test", D, "{resolver}", "--secure-name",
             "dane.test", "--bogus-name", "badsig.dane.test", "-w", "40:", "-c", "2:",
             "-t", "20"),
            2, "RSA certificate matches none of 1 usable TLSA record"),
    # MTA-STS: the policy from the lab nginx, the MX of the lab Postfix; the defaults
    # domain publishes none (CRITICAL), the switch says that is fine (OK)
    Variant("defaults.lab", "mta-sts-posture.test",
            ("check_mta_sts", "-D", "posture.test", D, "{dns}"),
            2, "no MTA-STS record"),
    Variant("sts.lab", "mta-sts-good.sts.test",
            ("check_mta_sts", "-D", "good.sts.test", D, "{dns}", "--ca-file", "{sts_ca}",
             "--helo-name", "monitor.posture.test", "-v"),
            0, "policy id 20261121T1 mode enforce, 2 of 2 MX covered"),
    Variant("sts.lab", "mta-sts-posture.test",
            ("check_mta_sts", "-D", "posture.test", D, "{dns}", "--missing", "ok"),
            0, "no MTA-STS record"),
    Variant("relay.lab", "open-relay-posture.test",
            ("check_open_relay", "-D", "posture.test", "-H", "percentrelay.posture.test",
             D, "{dns}", "--probe", "percent*"),
            2, "open relay: 2 of 2 relay probes accepted"),
    # DMARC: the defaults' domain is under a top-level name the lab NSD refuses, so the
    # tree walk cannot prove there is no record; the DMARC lab domains (dmarclab)
    Variant("defaults.lab", "dmarc-posture.test",
            ("check_dmarc", "-D", "posture.test", D, "{dns}"),
            2, "DMARC lookup of _dmarc.test failed: SERVFAIL (REFUSED)"),
    Variant("dmarc.lab", "dmarc-good.dmarclab",
            ("check_dmarc", "-D", "good.dmarclab", D, "{dns}", "--probe-destinations",
             "--helo-name", "monitor.posture.test", "-v"),
            0, "good.dmarclab: policy reject, non-existent subdomains reject"),
    Variant("dmarc.lab", "dmarc-none.dmarclab",
            ("check_dmarc", "-D", "none.dmarclab", D, "{dns}", "--accept-none"),
            0, "none.dmarclab: policy none"),
    Variant("relay.lab", "mx-posture.test",
            ("check_mx_sanity", "-D", "posture.test", D, "{dns}", "-t", "10",
             "--allow-private", "--min-mx", "3", "--expect-mx", "mx1.posture.test"),
            1, "2 MX, fewer than 3"),
    Variant("roundtrip.lab", "mail-roundtrip-loop.test",
            ("check_mail_roundtrip", "-D", "loop.test", D, "{dns}", "--to", "probe@loop.test",
             "--mailbox", "imaps://monitor%40monitor.test@mail.monitor.test/INBOX",
             "--mailbox-ca-file", "{ca}", "--mailbox-password-file", "{mbpwfile}",
             "--helo-name", "monitor.posture.test", "-t", "30"),
            0, "2 probes back via 2 MX endpoints of loop.test"),
    # host mode (check_address), and the password: the variable, none, a file
    Variant("submit.lab", "submission-password",
            ("check_smtp_phases", "-H", "127.0.25.3", "-p", "587",
             "--servername", "submit.posture.test", "--ca-file", "{ca}",
             "--sasl-user", "probe@posture.test", "--require-starttls", "-vvv"),
            0, "AUTH PLAIN ok", env={"CHECK_SMTP_PASSWORD": PASSWORD}),
    Variant("submit.lab", "submission-no-password",
            ("check_smtp_phases", "-H", "127.0.25.3", "-p", "587",
             "--servername", "submit.posture.test", "--ca-file", "{ca}",
             "--sasl-user", "probe@posture.test"),
            3, "usage: check_smtp_phases", env={"CHECK_SMTP_PASSWORD": ""}),
    Variant("submit.lab", "smtps-password-file",
            ("check_smtp_phases", "-H", "127.0.25.3", "-p", "465", "--tls",
             "--servername", "submit.posture.test", "--ca-file", "{ca}",
             "--sasl-user", "probe@posture.test", "--sasl-mechanism", "LOGIN",
             "--sasl-password-file", "{pwfile}"),
            0, "AUTH LOGIN ok", env={"CHECK_SMTP_PASSWORD": ""}),
    # on the agent
    Variant("agent.lab", "mx-posture.test",
            ("check_mx_sanity", "-D", "posture.test", D, "{dns}", "-t", "10",
             "--allow-private"),
            0, "MX_SANITY OK - posture.test: 2 MX", endpoint=AGENT),
    Variant("agent.lab", "spf-posture.test",
            ("check_spf", "-D", "posture.test", D, "{dns}"),
            0, "SPF OK - posture.test: policy -all", endpoint=AGENT),
    Variant("agent.lab", "dnsbl-posture.test",
            ("check_dnsbl", "-D", "posture.test", D, "{dns}", "-t", "10", "-v",
             "--no-default-zones", "--zone", "dnsbl.posture.test", "--ip", "127.0.0.2"),
            1, "127.0.0.2 listed on dnsbl.posture.test", endpoint=AGENT),
    Variant("dkim.lab", "dkim-dkim.test",
            ("check_dkim", "-D", "dkim.test", "--selector", "ed", "--selector", "rsa2048",
             D, "{dns}"),
            0, "DKIM OK - dkim.test: ed ed25519, rsa2048 rsa-2048"),
]
BY_NAME = {v.name: v for v in VARIANTS}


@dataclass
class Lab:
    master: IcingaNode
    agent: IcingaNode
    values: dict
    results: dict  # host!service -> attrs from the API


def _fill(text: str, values: dict) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _wait_for(predicate, timeout: float, what: str, node: IcingaNode):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what} within {timeout}s; daemon log:\n" + node.log()[-5000:])


@pytest.fixture(scope="module")
def icinga(lab, lab_dns, lab_resolver, lab_nginx):
    files = private_dir("icinga-lab-files-")
    nodes: list[IcingaNode] = []
    pki = None
    try:
        installed = install_for_nagios(files / "etc")
        shutil.copy(lab.ca_file, files / "ca.pem")
        (files / "ca.pem").chmod(0o644)
        from tests.lab.nginx import ca_bundle

        ca_bundle(files / "sts-ca.pem", lab.ca_file, lab_nginx.ca_file).chmod(0o644)
        pwfile = files / "smtp.pw"
        pwfile.write_text(PASSWORD + "\n")
        shutil.chown(pwfile, "nagios", "nagios")
        pwfile.chmod(0o600)
        from tests.lab.roundtriplab import MONITOR_PASSWORD

        mbpwfile = files / "mailbox.pw"
        mbpwfile.write_text(MONITOR_PASSWORD + "\n")
        shutil.chown(mbpwfile, "nagios", "nagios")
        mbpwfile.chmod(0o600)
        values = {"dns": lab_dns.server_arg, "resolver": lab_resolver.server_arg,
                  "mbpwfile": str(mbpwfile),
                  "ca": str(files / "ca.pem"), "sts_ca": str(files / "sts-ca.pem"),
                  "pwfile": str(pwfile), "password": PASSWORD}
        pki = Pki(private_dir("icinga-pki-"))
        agent_port = free_port()
        zones = ZONES.replace("{agent_port}", str(agent_port))
        # The agent has the constants and the CheckCommands, nothing else: it runs
        # what the master tells it (check_smtp_posture-agent.conf, step 2).
        agent = IcingaNode(AGENT, pki, zone=AGENT, port=agent_port, zone_objects=zones,
                           includes=installed.command_files(), accept_commands=True)
        master = IcingaNode(MASTER, pki, zone="master", zone_objects=zones,
                            includes=site_includes(installed), objects=_fill(SITE, values))
        nodes += [master, agent]
        agent.start()
        master.start()
        _wait_for(lambda: master.api("GET", f"/v1/objects/endpoints/{AGENT}")
                  ["results"][0]["attrs"]["connected"], 30, "the agent connected", master)
        forced_at = time.time()
        master.api("POST", "/v1/actions/reschedule-check",
                   {"type": "Service", "filter": "true", "force": True})

        def all_checked():
            services = master.services(attrs=("last_check_result", "command_endpoint"))
            done = [attrs for attrs in services.values()
                    if attrs["last_check_result"]
                    and attrs["last_check_result"]["schedule_start"] >= forced_at - 1]
            return services if len(done) == len(services) else None

        results = _wait_for(all_checked, 90, "every service checked", master)
        yield Lab(master, agent, values, results)
    finally:
        for node in nodes:
            node.stop()
            shutil.rmtree(node.workdir, ignore_errors=True)
        if pki is not None:
            shutil.rmtree(pki.workdir, ignore_errors=True)
        shutil.rmtree(files, ignore_errors=True)


@pytest.fixture(scope="module")
def by_hand(icinga):
    """Every variant's command, typed by hand and run as the nagios user."""

    def run(variant):
        argv = [str(PLUGIN_BIN / variant.script),
                *(_fill(a, icinga.values) for a in variant.argv[1:])]
        return variant.name, run_plugin_as_nagios(argv, variant.env)

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(run, VARIANTS))


def test_the_apply_rules_make_exactly_the_expected_services(icinga):
    """Skip switches skip, every domain gets the rest, nothing else is created."""
    assert sorted(icinga.results) == sorted(BY_NAME)


def test_every_plugin_of_the_family_ran_in_the_daemon(icinga):
    ran = {Path(attrs["last_check_result"]["command"][0]).name
           for attrs in icinga.results.values()}
    assert ran == set(console_scripts())


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: v.name)
def test_service_runs_the_plugin_as_typed_by_hand(icinga, by_hand, variant):
    attrs = icinga.results[variant.name]
    result = attrs["last_check_result"]
    command = result["command"]
    # The daemon ran the plugin installed for the nagios user, with the arguments
    # the variables say, and no empty argument (an unset variable passes nothing).
    assert command[0] == str(PLUGIN_BIN / variant.script)
    assert "" not in command, command
    want = [_fill(a, icinga.values) for a in variant.argv[1:]]
    assert parsed(variant.script, command[1:]) == parsed(variant.script, want), command
    assert result["check_source"] == variant.endpoint
    # What Icinga shows is what the user sees running the same command by hand.
    hand = by_hand[variant.name]
    hand_first = hand.stdout.splitlines()[0] if hand.stdout else ""
    icinga_first = result["output"].splitlines()[0] if result["output"] else ""
    assert (result["state"], hand.returncode) == (variant.state, variant.state), \
        f"icinga: {result['output'][:600]}\nby hand: {hand.stdout[:600]}{hand.stderr[-600:]}"
    assert variant.fragment in icinga_first, result["output"][:600]
    hand_text, hand_perf = split_status_line(hand_first)
    assert without_numbers(icinga_first.strip()) == without_numbers(hand_text)
    assert perf_labels(result["performance_data"] or []) == perf_labels(hand_perf)
    assert PASSWORD not in result["output"]


def test_the_password_reaches_the_plugin_only_through_the_environment(icinga):
    """With the variable set the login succeeds, never is it in the command; unset is UNKNOWN."""
    with_password = icinga.results["submit.lab!submission-password"]["last_check_result"]
    assert PASSWORD not in " ".join(with_password["command"])
    assert "AUTH PLAIN ok" in with_password["output"]
    # -vvv: the transcript is there, the password masked in it
    assert "AUTH PLAIN" in with_password["output"].split("\n", 1)[1]
    without = icinga.results["submit.lab!submission-no-password"]["last_check_result"]
    assert without["state"] == 3
    assert "SASL needs a password" in without["output"]


def test_agent_checks_reach_the_master(icinga):
    agent_services = {name: attrs for name, attrs in icinga.results.items()
                      if attrs["command_endpoint"] == AGENT}
    assert sorted(agent_services) == sorted(v.name for v in VARIANTS if v.endpoint == AGENT)
    assert len(agent_services) >= 2
    for attrs in agent_services.values():
        assert attrs["last_check_result"]["check_source"] == AGENT


def test_the_notification_rule_plugs_into_the_mail_notification(icinga):
    answer = icinga.master.api("GET", "/v1/objects/notifications",
                               {"attrs": ["host_name", "service_name", "command", "users"]})
    mine = {(n["attrs"]["host_name"], n["attrs"]["service_name"]): n["attrs"]
            for n in answer["results"] if n["name"].endswith("!smtp-posture-mail")}
    assert sorted(mine) == sorted((v.host, v.service) for v in VARIANTS
                                  if v.host == "defaults.lab")
    for attrs in mine.values():
        assert attrs["command"] == "mail-service-notification"
        assert attrs["users"] == ["icingaadmin"]


def test_no_argument_or_macro_trouble_in_the_daemon_logs(icinga):
    """A lambda that throws or a set_if that is no boolean is only a warning in the log."""
    for node in (icinga.master, icinga.agent):
        trouble = [line for line in node.log().splitlines()
                   if line.startswith("[") and ("/PluginUtility" in line or "/Macro" in line
                                                or "critical/" in line)]
        assert trouble == [], node.name
