"""What a run builds and does besides its work (issue 13), listed rather than timed.

Icinga starts a new process for every check, so start-up and exit are most of
a run's CPU. tests/test_family.py lists the modules a plain run may not import;
these list what a run may not build at import time, the idna codec a default
EHLO name used to pull in, and the interpreter's teardown, which the console
scripts skip once everything is written.

No dataclasses on the path of a plain run (the SMTP library, the SPF engine,
targets, the plugins' Options and facts): a dataclass costs a third of a
millisecond to build at import, the dataclasses module several ms to import.
Records there are named tuples (immutable, `_replace()` for a variant) or plain
classes with __slots__. This is the one place that says so.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.test_family import imported_modules

PHASES = "check_smtp_posture.plugins.check_smtp_phases"

#: runs main(argv) of a plugin module, then prints which modules of ours built a dataclass
_RECORD_DATACLASSES = """
import dataclasses, importlib, json, sys

built = []
_dataclass = dataclasses.dataclass


def dataclass(cls=None, /, **options):
    def build(c):
        built.append(c.__module__)
        return _dataclass(c, **options)
    return build if cls is None else build(cls)


dataclasses.dataclass = dataclass
plugin = importlib.import_module(sys.argv[1])
plugin.main(sys.argv[2:])
sys.stdout.flush()
print(json.dumps(sorted({m for m in built if m.startswith("check_smtp_posture")})),
      file=sys.stderr)
"""


def dataclasses_built(module: str, *args: str) -> tuple[str, set]:
    """The first line of the run's output, and our modules that built a dataclass in it."""
    proc = subprocess.run([sys.executable, "-c", _RECORD_DATACLASSES, module, *args],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr[-1000:]
    return proc.stdout.partition("\n")[0], set(json.loads(proc.stderr.splitlines()[-1]))


def test_a_plain_smtp_run_builds_no_dataclass(fake_smtp):
    server = fake_smtp()
    first, built = dataclasses_built(PHASES, "-H", server.host, "-p", str(server.port),
                                     "--no-starttls")
    assert first.startswith("SMTP_PHASES OK - "), first
    assert built == set()


def test_a_plain_smtp_run_does_not_import_dataclasses(fake_smtp):
    server = fake_smtp()
    _, bare = imported_modules("site")
    proc, modules = imported_modules(PHASES, "-H", server.host, "-p", str(server.port),
                                     "--no-starttls")
    assert proc.stdout.startswith("SMTP_PHASES OK - "), proc.stdout
    assert "dataclasses" not in modules - bare


#: modules of others that still build dataclasses on these paths (dnspython loads the
#: dataclasses module anyway, so each costs only its own build)
DNS_PATH_DATACLASSES = {"check_smtp_posture.dnslookup",
                        "check_smtp_posture.nagios.statefile", "check_smtp_posture.dnsbl"}


@pytest.mark.parametrize("script, args", [
    ("check_mx_sanity", ["-D", "posture.test", "--allow-private"]),
    ("check_spf", ["-D", "posture.test", "--ip", "127.0.25.1"]),
    ("check_dnsbl", ["--ip", "127.0.25.1", "--zone", "dnsbl.posture.test",
                     "--no-default-zones"]),
    ("check_dkim", ["-D", "dkim.test", "--selector", "rsa2048", "--selector", "ed"]),
])
def test_a_dns_only_run_builds_no_dataclass_of_its_own(lab_dns, script, args):
    first, built = dataclasses_built(f"check_smtp_posture.plugins.{script}", *args,
                                     "--dns-server", lab_dns.server_arg)
    assert first.startswith(script[6:].upper() + " "), first
    assert built - DNS_PATH_DATACLASSES == set()


def test_the_default_ehlo_name_does_not_load_the_idna_codec(fake_smtp):
    # socket.getfqdn() runs the host name through the idna codec (encodings.idna,
    # stringprep, unicodedata: ~2.5 ms) unless it is handed bytes.
    server = fake_smtp()
    _, bare = imported_modules("site")
    proc, modules = imported_modules(PHASES, "-H", server.host, "-p", str(server.port),
                                     "--no-starttls")
    assert proc.stdout.startswith("SMTP_PHASES OK - "), proc.stdout
    assert server.lines[0].startswith("EHLO ")
    assert "encodings.idna" not in modules - bare


@pytest.mark.parametrize("script, status, first", [
    ({}, 0, "SMTP_PHASES OK - "),
    ({"banner": "554 5.3.2 not now"}, 2, "SMTP_PHASES CRITICAL - "),
])
def test_the_console_script_skips_the_teardown_and_loses_no_output(fake_smtp, script,
                                                                     status, first):
    # os._exit() after the flush: no atexit handler runs, and the output, block-buffered
    # in a pipe, is all there with the run's exit status.
    server = fake_smtp(script)
    code = ("import atexit, sys\n"
            f"from {PHASES} import console_main\n"
            "atexit.register(print, 'TEARDOWN')\n"
            "sys.argv[0] = 'check_smtp_phases'\n"
            "console_main()\n")
    proc = subprocess.run([sys.executable, "-c", code, "-H", server.host,
                           "-p", str(server.port), "--no-starttls", "-vvv"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert proc.stdout.startswith(first)
    assert "TEARDOWN" not in proc.stdout
    assert proc.stdout.endswith("\n") and "QUIT" in proc.stdout  # the transcript, whole
    assert proc.stderr == ""


def test_a_starttls_run_accounts_for_its_time_in_phases(fake_smtp, tmp_path):
    # ssl is no longer loaded with the package: a plan that may use TLS loads it before
    # the session's clock starts, so that its import (7 ms) is in no phase and the
    # phases still add up to `time`. Only a fresh process shows it: in-process tests
    # find ssl loaded already.
    from tests.lab.certs import LabCA

    ca = LabCA("Import budget test CA")
    ca_file = ca.write(tmp_path)
    server = fake_smtp("normal", cert=ca.issue(["fake.posture.test"]).write(tmp_path, "fake"))
    gaps = []
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-m", PHASES, "-H", server.host,
                               "-p", str(server.port), "--servername", "fake.posture.test",
                               "--ca-file", str(ca_file)],
                              capture_output=True, text=True, timeout=30)
        assert proc.stdout.startswith("SMTP_PHASES OK - "), proc.stdout + proc.stderr
        _, _, perf = proc.stdout.partition("\n")[0].partition(" | ")
        times = {item.split("=")[0]: float(item.split("=")[1].split(";")[0].rstrip("s"))
                 for item in perf.split() if item.split("=")[0].endswith("time")}
        assert "tls_handshake_time" in times
        gaps.append(times.pop("time") - sum(times.values()))
    # the best of three, so that one scheduling hiccup does not decide it
    assert 0 <= min(gaps) < 0.002, gaps
