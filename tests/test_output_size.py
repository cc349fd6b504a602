"""Output that NRPE and Nagios Core take as it is, with 16 MX endpoints.

size.posture.test (tests/lab/world.py) has 16 MX, mx01 to mx16, on the lab Postfix's
mx1 and mx2. Every plugin of the family runs against it at default verbosity, -v and
-vv, as a service of the domain would (check_dkim, which asks no MX, against 16
selectors of dkim.test): the status line with its perfdata must stay
under 1 KiB (NRPE 2), the whole output under 8 KiB (Nagios Core). runner.render()
guarantees both by leaving perfdata items out and cutting the long output; the
status line must not need that: it must carry all of the run's perfdata.
"""

from __future__ import annotations

import importlib
import re

import pytest

from tests.conftest import run_main
from tests.lab import world
from tests.lab.dkimlab import DKIM_DOMAIN

pytestmark = pytest.mark.lab

D = "--dns-server"
SIZE = world.SIZE_DOMAIN
DKIM_SELECTORS = ("rsa512", "rsa1024", "rsa2048", "rsa4096", "ed", "revoked", "testing",
                  "strict", "sha1", "notmail", "badkey", "twice", "other", "provider",
                  "dangling", "missing")

#: plugin -> its arguments for the domain ({dns}: the lab NSD, {resolver}: the lab's
#: validating resolver, {maildir}: an empty Maildir)
PLUGINS = {
    "check_smtp_phases": ("-D", SIZE, D, "{dns}"),
    "check_mx_sanity": ("-D", SIZE, D, "{dns}", "--allow-private"),
    "check_dnsbl": ("-D", SIZE, D, "{dns}"),
    "check_spf": ("-D", SIZE, D, "{dns}", "--check-mx"),
    "check_open_relay": ("-D", SIZE, D, "{dns}"),
    "check_mail_roundtrip": ("-D", SIZE, D, "{dns}", "--to", f"probe@{SIZE}",
                             "--from", "monitor@posture.test", "--mailbox", "maildir:{maildir}",
                             "--helo-name", "monitor.posture.test", "-t", "5"),
    "check_dane": ("-D", SIZE, D, "{resolver}"),
    "check_mta_sts": ("-D", SIZE, D, "{dns}"),
    # asks no MX: 16 selectors of the lab's dkim.test instead, each a case of its own
    "check_dkim": ("-D", DKIM_DOMAIN, D, "{dns}",
                   *(arg for selector in DKIM_SELECTORS for arg in ("--selector", selector))),
}
VERBOSITIES = ("", "-v", "-vv")


@pytest.fixture(scope="module")
def runs(lab, lab_dns, lab_resolver, tmp_path_factory):
    """(plugin, verbosity) -> its PluginRun against size.posture.test."""
    lab_dns.reload()  # the shared NSD may come from a tree without size.posture.test
    maildir = tmp_path_factory.mktemp("maildir")
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir()
    values = {"{dns}": lab_dns.server_arg, "{resolver}": lab_resolver.server_arg,
              "{maildir}": str(maildir)}

    def fill(arg: str) -> str:
        for key, value in values.items():
            arg = arg.replace(key, value)
        return arg

    done = {}
    for plugin, args in PLUGINS.items():
        main = importlib.import_module(f"check_smtp_posture.plugins.{plugin}").main
        argv = [fill(a) for a in args]
        for verbose in VERBOSITIES:
            done[plugin, verbose] = run_main(main, argv + ([verbose] if verbose else []))
    return done


CASES = [pytest.param(plugin, verbose, id=f"{plugin}{verbose or '-default'}")
         for plugin in PLUGINS for verbose in VERBOSITIES]


@pytest.mark.parametrize("plugin, verbose", CASES)
def test_the_status_line_with_perfdata_stays_under_1_kib(runs, plugin, verbose):
    run = runs[plugin, verbose]
    name = plugin.removeprefix("check_").upper()
    assert run.first_line.startswith(f"{name} "), run.output[:500]
    assert run.exitcode in (0, 1, 2), run.output[:500]
    assert len(run.first_line.encode()) < 1024


@pytest.mark.parametrize("plugin, verbose", CASES)
def test_the_whole_output_stays_under_8_kib(runs, plugin, verbose):
    run = runs[plugin, verbose]
    assert run.errors == ""
    assert len(run.output.encode()) < 8192
    if len(run.output.encode()) > 8192 - 200:  # near the bound: it was cut, at a line
        assert run.output.splitlines()[-1].endswith(" more lines")


@pytest.mark.parametrize("plugin", PLUGINS)
def test_the_status_line_carries_all_of_the_perfdata(runs, plugin):
    """No "perfdata: N of M items left out": 16 endpoints fit as aggregates."""
    for verbose in VERBOSITIES:
        run = runs[plugin, verbose]
        assert not [line for line in run.output.splitlines() if line.startswith("perfdata: ")], \
            run.output[:1500]


@pytest.mark.parametrize("plugin", PLUGINS)
def test_every_label_is_lower_case_letters_digits_and_underscores(runs, plugin):
    """What Graphite and InfluxDB keep as it is: no dot, colon, space or quote."""
    for verbose in VERBOSITIES:
        run = runs[plugin, verbose]
        bad = [label for label in run.perfdata if not re.fullmatch(r"[a-z0-9_]+", label)]
        assert bad == [], run.first_line
