"""The shipped Nagios Core configuration executed by a real Nagios 4 daemon, not only parsed.

One `nagios4` (Debian's, private directory, as the nagios user, no network socket:
tests/lab/nagios.py) loads what `make install-nagios-core` installs, next to Debian's
stock objects and /etc/nagios-plugins/config, and a site made of the shipped examples
edited as their comments tell an operator to: the example domain's checks for the lab
domain posture.test (all but the round trip, which needs a forwarding loop) and
loop.test (the round trip, asynchronous), the NRPE services asking a real NRPE daemon
that runs the shipped nrpe.d snippet, and a few services of the lab's own for the
commands the examples leave out. Every check is forced once through the external
command file and read back from status.dat; each must have run the installed plugin
with the arguments a user would type (the command line Nagios expanded, from its
debug log), and give the state, first line and perfdata labels of that command run
by hand as the nagios user.
"""

from __future__ import annotations

import os
import shlex
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.icinga import (
    PLUGIN_BIN,
    REPO,
    parsed,
    perf_labels,
    private_dir,
    run_plugin_as_nagios,
    split_status_line,
    without_numbers,
)
from tests.lab.nagios import (
    NAGIOS4,
    STOCK_CFG_DIR,
    STOCK_OBJECT_FILES,
    Installed,
    Nagios,
    install_for_nagios_core,
    parse_objects,
    render_objects,
)
from tests.lab.nrpe import CHECK_NRPE, NRPE, LabNrpe

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(not all(Path(p).exists() for p in (NAGIOS4, NRPE, CHECK_NRPE)),
                                 reason="nagios4, nrpe or check_nrpe is not installed "
                                        "(run `make install`)")]

PASSWORD = "lab-probe-secret"  # tests/lab/postfix.py SASL_PASSWORD
MAILBOX = "imaps://monitor%40monitor.test@mail.monitor.test/INBOX"
NRPE_SNIPPET = REPO / "icinga2-conf" / "nrpe.d-check_smtp_posture.cfg"


def example(path: Path, values: dict, *, replace: dict, keep=None, host: dict = None,
            options: dict = None, variables: dict = None) -> str:
    """An installed example as an operator edits it: strings replaced, only the `keep`
    services, host custom variables set, options appended to a service's _OPTIONS
    (key "*": every service's), other service variables set."""
    text = path.read_text()
    for old, new in replace.items():
        text = text.replace(old, new)
    objects = []
    for obj in parse_objects(text):
        if obj.kind == "host":
            obj.attrs.update(host or {})
        if obj.kind == "service":
            description = obj.attrs["service_description"]
            if keep is not None and description not in keep:
                continue
            for key in ("*", description):
                extra = (options or {}).get(key)
                if extra:
                    obj.attrs["_OPTIONS"] = f"{obj.get('_OPTIONS')} {extra}".strip()
            obj.attrs.update((variables or {}).get(description, {}))
        objects.append(obj)
    return _fill(render_objects(objects), values)


def site(installed: Installed, values: dict) -> str:
    """The site: the two examples edited for the lab, and the lab's own services."""
    domain_example = installed.example("check_smtp_posture-example.cfg")
    posture = example(domain_example, values,
                      replace={"example.org": "posture.test",
                               "/var/lib/nagios4/check_dmarc.json": "{state_dir}/dmarc.json"},
                      keep={"smtp", "mx", "dnsbl", "spf", "open-relay", "dane", "mta-sts",
                            "dmarc"},
                      host={"_MAIL_DOMAIN_OPTIONS": "--dns-server {dns}"},
                      options={"smtp": "--ca-file {ca}",
                               "dane": "--dns-server {resolver} --secure-name dane.test "
                                       "--bogus-name badsig.dane.test"})
    loop = example(domain_example, values,
                   replace={"example.org": "loop.test", "monitor.example.net": "monitor.test"},
                   keep={"mail-roundtrip"},
                   host={"_MAIL_DOMAIN_OPTIONS": "--dns-server {dns}"},
                   options={"mail-roundtrip": "--mailbox-ca-file {ca} "
                                              "--helo-name monitor.posture.test"},
                   variables={"mail-roundtrip": {"_STATE_DIR": "{state_dir}"}})
    nrpe = example(installed.example("check_smtp_posture-nrpe-example.cfg"), values,
                   replace={"example.org": "posture.test", "192.0.2.80": "127.0.0.1"},
                   options={"*": "-p {nrpe_port}"})
    return "\n".join([posture, loop, nrpe, _fill(LAB_SERVICES, values)])


#: the commands the examples do not use, on hosts of the lab's own
LAB_SERVICES = """
define host {
    use                     generic-host
    host_name               mx1.lab
    address                 127.0.25.1
    max_check_attempts      1
    contact_groups          admins
}

define service {
    use                     smtp-posture-smtp,generic-service
    host_name               mx1.lab
    service_description     smtp-host
    check_command           check_smtp_phases
    _OPTIONS                --servername mx1.posture.test --ca-file {ca} -w 3 -c 5
}

define host {
    use                     generic-host
    host_name               submit.lab
    address                 127.0.25.3
    max_check_attempts      1
    contact_groups          admins
}

define service {
    use                     smtp-posture-submission,generic-service
    host_name               submit.lab
    service_description     submission
    _SASL_USER              probe@posture.test
    _OPTIONS                --servername submit.posture.test --ca-file {ca} -vvv
}

define host {
    use                     generic-host
    host_name               listed.lab
    address                 127.0.0.2
    max_check_attempts      1
    contact_groups          admins
}

define service {
    use                     smtp-posture-dnsbl,generic-service
    host_name               listed.lab
    service_description     dnsbl-host
    check_command           check_dnsbl_host
    _OPTIONS                --dns-server {dns} --no-default-zones --zone dnsbl.posture.test -v
}

define service {
    use                     smtp-posture-smtp,generic-service
    host_name               posture.test
    service_description     smtp-every-mx
}

define service {
    use                     smtp-posture-mail-roundtrip,generic-service
    host_name               loop.test
    service_description     mail-roundtrip-sync
    check_command           check_mail_roundtrip
    _ROUNDTRIP_TO           probe@loop.test
    _ROUNDTRIP_MAILBOX      imaps://monitor%40monitor.test@mail.monitor.test/INBOX
    _OPTIONS                --mailbox-ca-file {ca} --helo-name monitor.posture.test -t 30
}

define service {
    use                     smtp-posture-mail-roundtrip,generic-service
    host_name               loop.test
    service_description     mail-roundtrip-oauth2
    check_command           check_mail_roundtrip_oauth2
    _ROUNDTRIP_TO           probe@loop.test
    _ROUNDTRIP_MAILBOX      imaps://monitor%40monitor.test@mail.monitor.test/INBOX
    _STATE_DIR              {state_dir}
    _OPTIONS                {oauth2_options} --helo-name monitor.posture.test
}

define host {
    use                     generic-host
    host_name               dkim.lab
    address                 127.0.0.1
    max_check_attempts      1
    contact_groups          admins
    _MAIL_DOMAIN            dkim.test
    _MAIL_DOMAIN_OPTIONS    --dns-server {dns}
}

define service {
    use                     smtp-posture-dkim,generic-service
    host_name               dkim.lab
    service_description     dkim
    _STATE_DIR              {state_dir}
    _OPTIONS                --selector ed --selector rsa2048
}
"""


@dataclass(frozen=True)
class Check:
    """A check the site must make Nagios run, and the command a user would type."""

    host: str
    service: str | None  # None: the host check
    argv: tuple[str, ...]  # the plugin and its arguments; {dns}, {ca}... filled at run time
    state: int  # the plugin's exit status
    fragment: str  # in the first line of the output

    @property
    def name(self) -> str:
        return f"{self.host}!{self.service or '(host check)'}"

    @property
    def key(self) -> tuple[str, str | None]:
        return self.host, self.service


D = "--dns-server"
POSTURE = ("-D", "posture.test", D, "{dns}")
ROUNDTRIP = ("check_mail_roundtrip", "-D", "loop.test", "--to", "probe@loop.test",
             "--mailbox", MAILBOX, "--mailbox-password-file", "{mbpwfile}", "-t", "50",
             D, "{dns}", "--mailbox-ca-file", "{ca}", "--helo-name", "monitor.posture.test")
CHECKS = [
    # the example domain: the host check, then each service
    Check("posture.test", None, ("check_mx_sanity", *POSTURE),
          1, "MX_SANITY WARNING - posture.test: non-public address 127.0.25.1"),
    Check("posture.test", "smtp",
          ("check_smtp_phases", *POSTURE, "--require-starttls", "--cert-error-state",
           "critical", "--cert-days", "21,7", "--ca-file", "{ca}"),
          0, "SMTP_PHASES OK - 2 endpoints OK for MX of posture.test"),
    Check("posture.test", "mx", ("check_mx_sanity", *POSTURE, "--min-mx", "2"),
          1, "non-public address 127.0.25.1"),
    Check("posture.test", "dnsbl", ("check_dnsbl", *POSTURE, "-v"),
          0, "DNSBL OK - no usable zone"),
    Check("posture.test", "spf", ("check_spf", *POSTURE, "--check-mx"),
          0, "SPF OK - posture.test: policy -all"),
    Check("posture.test", "open-relay", ("check_open_relay", *POSTURE),
          0, "16 relay probes refused each"),
    Check("posture.test", "dane",
          ("check_dane", "-D", "posture.test", D, "{resolver}", "--secure-name", "dane.test",
           "--bogus-name", "badsig.dane.test"),
          0, "DANE OK - DANE not applicable"),
    Check("posture.test", "mta-sts", ("check_mta_sts", *POSTURE), 2, "no MTA-STS record"),
    # the lab NSD refuses _dmarc.test: the tree walk cannot prove there is no record
    Check("posture.test", "dmarc",
          ("check_dmarc", *POSTURE, "--probe-destinations", "--state-file",
           "{state_dir}/dmarc.json", "-w", "30"),
          2, "DMARC lookup of _dmarc.test failed: SERVFAIL (REFUSED)"),
    Check("loop.test", None, ("check_mx_sanity", "-D", "loop.test", D, "{dns}"),
          1, "MX_SANITY WARNING - loop.test: non-public address 127.0.25.13"),
    Check("loop.test", "mail-roundtrip", (*ROUNDTRIP, "--state-file", "{state}"),
          0, "MAIL_ROUNDTRIP OK - first run: 2 probes sent via 2 MX endpoints of loop.test"),
    # the NRPE example: through the real NRPE daemon, which runs the snippet's plugin
    *(Check("probe-outside", f"{check}-posture.test",
            ("check_nrpe", "-H", "127.0.0.1", "-c", command, "-t", "40", "-p", "{nrpe_port}"),
            state, fragment)
      for check, command, state, fragment in [
          ("smtp", "smtp_posture_smtp", 1, "certificate: untrusted"),
          ("mx", "smtp_posture_mx", 1, "non-public address 127.0.25.1 (loopback)"),
          ("dnsbl", "smtp_posture_dnsbl", 0, "DNSBL OK - no usable zone"),
          ("spf", "smtp_posture_spf", 0, "SPF OK - posture.test: policy -all"),
          ("open-relay", "smtp_posture_open_relay", 0, "16 relay probes refused each"),
          ("mta-sts", "smtp_posture_mta_sts", 2, "no MTA-STS record"),
          ("dmarc", "smtp_posture_dmarc", 2,
           "DMARC lookup of _dmarc.test failed: SERVFAIL (REFUSED)")]),
    # the lab's own: the other commands
    Check("posture.test", "smtp-every-mx", ("check_smtp_phases", *POSTURE),
          1, "certificate: untrusted"),
    Check("mx1.lab", "smtp-host",
          ("check_smtp_phases", "-H", "127.0.25.1", "--servername", "mx1.posture.test",
           "--ca-file", "{ca}", "-w", "3", "-c", "5"),
          0, "SMTP_PHASES OK - mx1.posture.test[127.0.25.1]"),
    Check("submit.lab", "submission",
          ("check_smtp_phases", "-H", "127.0.25.3", "-p", "587", "--require-starttls",
           "--sasl-user", "probe@posture.test", "--sasl-password-file", "{pwfile}",
           "--servername", "submit.posture.test", "--ca-file", "{ca}", "-vvv"),
          0, "AUTH PLAIN ok"),
    Check("listed.lab", "dnsbl-host",
          ("check_dnsbl", "-H", "127.0.0.2", D, "{dns}", "--no-default-zones", "--zone",
           "dnsbl.posture.test", "-v"),
          1, "127.0.0.2 listed on dnsbl.posture.test"),
    Check("loop.test", "mail-roundtrip-sync", (*ROUNDTRIP, "-t", "30"),
          0, "MAIL_ROUNDTRIP OK - 2 probes back via 2 MX endpoints of loop.test"),
    # the keys of two selectors of the lab's DKIM domain, remembered in _STATE_DIR
    Check("dkim.lab", "dkim",
          ("check_dkim", "-D", "dkim.test", "--state-file",
           "{state_dir}/check_dkim-dkim.lab-dkim.json", D, "{dns}", "--selector", "ed",
           "--selector", "rsa2048"),
          0, "DKIM OK - dkim.test: ed ed25519, rsa2048 rsa-2048"),
    # the mailbox by an OAuth access token from the lab IdP, which Dovecot checks
    Check("loop.test", "mail-roundtrip-oauth2",
          ("check_mail_roundtrip", "-D", "loop.test", "--to", "probe@loop.test",
           "--mailbox", MAILBOX, "--oauth2-client-secret-file", "{secretfile}",
           "--oauth2-token-cache", "{oauth_cache}", "-t", "50", "--state-file", "{oauth_state}",
           D, "{dns}", "--mailbox-auth", "oauth2", "--oauth2-token-url", "{idp_url}",
           "--oauth2-client-id", "lab-monitor-app", "--oauth2-ca-file", "{idp_ca}",
           "--mailbox-ca-file", "{ca}", "--helo-name", "monitor.posture.test"),
          0, "MAIL_ROUNDTRIP OK - first run: 2 probes sent via 2 MX endpoints of loop.test"),
]
BY_KEY = {check.key: check for check in CHECKS}
DOMAIN_HOSTS = ["posture.test", "loop.test"]
#: the asynchronous round trip's state file in _STATE_DIR: check_mail_roundtrip-HOST-SERVICE.json
STATE_FILE = "check_mail_roundtrip-loop.test-mail-roundtrip.json"
#: the OAuth round trip's state file and token cache in _STATE_DIR
OAUTH_STATE_FILE = "check_mail_roundtrip-loop.test-mail-roundtrip-oauth2.json"
OAUTH_CACHE_FILE = "check_mail_roundtrip-oauth2-loop.test-mail-roundtrip-oauth2.json"


def _state_values(directory: Path) -> dict:
    """{state}, {oauth_state} and {oauth_cache}: the asynchronous runs' files in `directory`."""
    return {"state": str(directory / STATE_FILE),
            "oauth_state": str(directory / OAUTH_STATE_FILE),
            "oauth_cache": str(directory / OAUTH_CACHE_FILE)}


def _fill(text: str, values: dict) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _nagios_file(path: Path, text: str, mode: int = 0o600) -> Path:
    """A file only the nagios user reads (a password), or everyone (`mode` 0o644)."""
    path.write_text(text)
    shutil.chown(path, "nagios", "nagios")
    path.chmod(mode)
    return path


@dataclass
class Lab:
    values: dict  # what fills {dns}, {ca}... in CHECKS
    hand_dir: Path  # where the asynchronous round trips run by hand keep their files
    hosts: dict  # host -> hoststatus
    services: dict  # (host, service) -> servicestatus
    executed: dict  # (host, service or None) -> the command line Nagios ran


@pytest.fixture(scope="module")
def nagios_lab(lab, lab_dns, lab_resolver):
    from tests.lab import idp as lab_idp
    from tests.lab.certs import LabCA
    from tests.lab.roundtriplab import MONITOR_PASSWORD, sweep_probes

    files = private_dir("nagios-lab-files-")
    # the asynchronous round trip's state: Nagios's (_STATE_DIR), the run by hand's
    state_dirs = [private_dir("nagios-lab-state-"), private_dir("nagios-lab-by-hand-")]
    nagios = idp = None
    try:
        # a token endpoint whose tokens the lab Dovecot accepts (tests/test_oauth.py)
        idp_ca = LabCA()
        idp = lab_idp.LabIdp(idp_ca, key=lab.idp_key).start()
        installed = install_for_nagios_core(files / "install")
        ca_file = _nagios_file(files / "ca.pem", Path(lab.ca_file).read_text(), 0o644)
        idp_ca_file = _nagios_file(files / "idp-ca.pem", idp_ca.cert_pem.decode(), 0o644)
        # Debian's nagios-nrpe-plugin puts check_nrpe into $USER1$, here a private one.
        os.symlink(CHECK_NRPE, installed.plugin_dir / "check_nrpe")
        values = {"dns": lab_dns.server_arg, "resolver": lab_resolver.server_arg,
                  "ca": str(ca_file),
                  "state_dir": str(state_dirs[0]), **_state_values(state_dirs[0]),
                  "idp_url": idp.url, "idp_ca": str(idp_ca_file),
                  "oauth2_options": f"--mailbox-auth oauth2 --oauth2-token-url {idp.url} "
                                    f"--oauth2-client-id {lab_idp.CLIENT_ID} --oauth2-ca-file "
                                    f"{idp_ca_file} --mailbox-ca-file {ca_file}",
                  "secretfile": str(_nagios_file(files / "oauth2-client.secret",
                                                 lab_idp.CLIENT_SECRET + "\n")),
                  "pwfile": str(_nagios_file(files / "smtp.pw", PASSWORD + "\n")),
                  "mbpwfile": str(_nagios_file(files / "mailbox.pw", MONITOR_PASSWORD + "\n"))}
        with LabNrpe(NRPE_SNIPPET, "posture.test", lab_dns.server_arg) as nrpe:
            values["nrpe_port"] = str(nrpe.port)
            nagios = Nagios(cfg_files=[*STOCK_OBJECT_FILES, *installed.cfg_files()],
                            cfg_dirs=[STOCK_CFG_DIR], objects=site(installed, values),
                            resources={"USER1": str(installed.plugin_dir),
                                       "USER11": values["pwfile"],
                                       "USER12": values["mbpwfile"],
                                       "USER13": values["secretfile"]})
            verified = nagios.validate()
            assert verified.returncode == 0, verified.stdout[-4000:]
            nagios.start()
            since = nagios.force_checks(hosts=sorted({c.host for c in CHECKS}),
                                        host_checks=DOMAIN_HOSTS)
            hosts, services = nagios.wait_checked(since, 90, hosts=DOMAIN_HOSTS)
            yield Lab(values, state_dirs[1], hosts, services, nagios.executed())
    finally:
        if nagios is not None:
            nagios.stop()
            shutil.rmtree(nagios.workdir, ignore_errors=True)
        if idp is not None:
            idp.stop()
        # the probes the asynchronous runs left on their way
        for directory in state_dirs:
            for name in (STATE_FILE, OAUTH_STATE_FILE):
                if (directory / name).exists():
                    sweep_probes(lab, directory / name, "loop.test")
            shutil.rmtree(directory, ignore_errors=True)
        shutil.rmtree(files, ignore_errors=True)


@pytest.fixture(scope="module")
def by_hand(nagios_lab):
    """Every check's command, typed by hand and run as the nagios user; the
    asynchronous round trip with a state file of its own (its first run too)."""
    values = {**nagios_lab.values, **_state_values(nagios_lab.hand_dir)}

    def run(check):
        program = CHECK_NRPE if check.argv[0] == "check_nrpe" else str(PLUGIN_BIN / check.argv[0])
        return check.key, run_plugin_as_nagios([program, *(_fill(a, values)
                                                           for a in check.argv[1:])])

    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(run, CHECKS))


def test_nagios_ran_exactly_the_expected_checks(nagios_lab):
    ran = set(nagios_lab.services) | {(host, None) for host in DOMAIN_HOSTS}
    assert sorted(ran, key=str) == sorted(BY_KEY, key=str)
    assert set(nagios_lab.executed) >= set(BY_KEY)


def test_every_shipped_command_ran(nagios_lab):
    shipped = {o.attrs["command_name"] for o in parse_objects(
        (REPO / "nagios-conf" / "check_smtp_posture.cfg").read_text())}
    status = [*nagios_lab.services.values(), *nagios_lab.hosts.values()]
    assert {attrs["check_command"] for attrs in status} >= shipped


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.name)
def test_nagios_runs_the_plugin_as_typed_by_hand(nagios_lab, by_hand, check):
    values = nagios_lab.values
    command = nagios_lab.executed[check.key]
    argv = shlex.split(command)
    # Nagios ran the installed plugin ($USER1$ links to the nagios user's virtualenv),
    # no macro was left unexpanded, no empty argument passed, no password on the line.
    program = CHECK_NRPE if check.argv[0] == "check_nrpe" else str(PLUGIN_BIN / check.argv[0])
    assert os.path.realpath(argv[0]) == program, command
    assert "$" not in command and "" not in argv and PASSWORD not in command, command
    want = [_fill(a, values) for a in check.argv[1:]]
    if check.argv[0] == "check_nrpe":
        assert argv[1:] == want
    else:
        assert parsed(check.argv[0], argv[1:]) == parsed(check.argv[0], want), command
    # What Nagios shows is what the user sees running the same command by hand.
    if check.service is None:
        status = nagios_lab.hosts[check.host]
        assert int(status["current_state"]) == (0 if check.state < 2 else 1)  # UP, DOWN
    else:
        status = nagios_lab.services[check.key]
        assert int(status["current_state"]) == check.state, status["plugin_output"]
    hand = by_hand[check.key]
    assert hand.returncode == check.state, hand.stdout[:600] + hand.stderr[-600:]
    output = status["plugin_output"]
    assert check.fragment in output, output
    hand_text, hand_perf = split_status_line(hand.stdout.splitlines()[0])
    # Nagios shows every ';' of the status line as ':' (its log and status formats
    # separate fields with ';': checks.c, replace_semicolons).
    assert without_numbers(output.strip()) == without_numbers(hand_text.replace(";", ":"))
    assert perf_labels(status["performance_data"]) == perf_labels(hand_perf)
    assert PASSWORD not in status["long_plugin_output"]


def test_the_submission_password_came_from_the_file_resource_cfg_names(nagios_lab):
    status = nagios_lab.services[("submit.lab", "submission")]
    assert "AUTH PLAIN ok" in status["plugin_output"]
    assert "AUTH PLAIN" in status["long_plugin_output"]  # -vvv: the transcript, masked
    assert f"--sasl-password-file {nagios_lab.values['pwfile']}" in \
        nagios_lab.executed[("submit.lab", "submission")].replace("'", "")


def test_the_asynchronous_round_trip_keeps_its_state_where_the_template_says(nagios_lab):
    state = Path(nagios_lab.values["state"])
    assert state.exists() and '"loop.test"' in state.read_text()

