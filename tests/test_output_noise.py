"""Nothing but the plugin's own output: no Python warning, no library log line (issue 21).

Icinga 2 joins a plugin's stdout and stderr and shows the first line as the
service's output; a library's warning printed at import takes that place. Each
console script runs here as a user's shell or Icinga runs it, in a subprocess,
with the environments users really have (PYTHONWARNINGS=always, and
PYTHONWARNINGS=error::DeprecationWarning, which turns a deprecation into a
traceback unless the plugin's policy overrides it), stderr read together with
stdout.

The warnings are real: a `sitecustomize` put on PYTHONPATH makes the libraries
every plugin imports (nagiosplugin, and dnspython or cryptography where the run
loads them) emit a DeprecationWarning, a UserWarning and a log record at
WARNING, as a library's new release would. check_dane against the signed lab
zone is the run where cryptography 51's DSA deprecation reached Icinga.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.lab import danelab
from tests.test_family import MX_ARGS, NAMES, STATUS

BIN = Path(sys.executable).parent

#: makes nagiosplugin, dnspython and cryptography noisy at import, as a new release might
NOISY_LIBRARIES = textwrap.dedent('''
    import importlib.abc, logging, sys, warnings

    NOISY = {"nagiosplugin", "dns.resolver", "cryptography.x509"}

    class Noisy(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name in NOISY:
                NOISY.discard(name)
                warnings.warn(f"lab: {name} deprecates something", DeprecationWarning)
                warnings.warn(f"lab: {name} has a user warning")
                logging.getLogger(name).warning("lab: %s logs a warning", name)
            return None

    sys.meta_path.insert(0, Noisy())
''')

ENVIRONMENTS = {"always": "always", "error-deprecation": "error::DeprecationWarning"}


@pytest.fixture(scope="module")
def noisy_path(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("noisy")
    (folder / "sitecustomize.py").write_text(NOISY_LIBRARIES)
    return str(folder)


def run_script(script: str, argv, pythonwarnings: str, noisy_path: str | None = None):
    """(exit status, stdout and stderr as one text) of the console script as a user runs it."""
    env = dict(os.environ, PYTHONWARNINGS=pythonwarnings)
    if noisy_path:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (noisy_path, env.get("PYTHONPATH", "")) if p)
    done = subprocess.run([str(BIN / script), *argv], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, env=env, timeout=60)
    return done.returncode, done.stdout.decode("utf-8", "replace")


def assert_only_the_plugin_speaks(script: str, output: str) -> list[str]:
    lines = output.splitlines()
    assert lines and lines[0].startswith(f"{STATUS[script]} "), output
    assert "Warning" not in output and "python warning" not in output, output
    assert "Traceback" not in output, output
    return lines


def test_the_noisy_libraries_are_noisy_without_the_policy(noisy_path):
    """The test's warnings really print when no policy is in the way: this test can fail."""
    code = "import nagiosplugin, dns.resolver; print('done')"
    env = dict(os.environ, PYTHONWARNINGS="always", PYTHONPATH=noisy_path)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60)
    assert "DeprecationWarning: lab: nagiosplugin deprecates something" in done.stderr
    assert "lab: dns.resolver logs a warning" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("environment", sorted(ENVIRONMENTS))
@pytest.mark.parametrize("script", NAMES)
def test_a_run_prints_no_library_warning(script, environment, noisy_path):
    """A run that loads dnspython (a DNS question nobody answers) keeps every library
    warning and log record out of the output."""
    code, output = run_script(script, ["-D", "posture.test", "--dns-server", "127.0.29.99:9",
                                       "-t", "0.5", *MX_ARGS.get(script, [])],
                              ENVIRONMENTS[environment], noisy_path)
    assert code == 2, output
    assert_only_the_plugin_speaks(script, output)


@pytest.mark.slow
def test_at_vvv_the_kept_warnings_are_long_output(noisy_path):
    code, output = run_script("check_mx_sanity",
                              ["-D", "posture.test", "--dns-server", "127.0.29.99:9",
                               "-t", "0.5", "-vvv"], "error::DeprecationWarning", noisy_path)
    lines = output.splitlines()
    assert code == 2 and lines[0].startswith("MX_SANITY CRITICAL - "), output
    kept = [re.sub(r"\(sitecustomize\.py:\d+\)$", "(sitecustomize.py)", line)
            for line in lines if line.startswith("python ")]
    assert kept[:2] == ["python warning: DeprecationWarning: lab: nagiosplugin deprecates "
                        "something (sitecustomize.py)",
                        "python warning: UserWarning: lab: nagiosplugin has a user warning "
                        "(sitecustomize.py)"], output
    assert "python log: nagiosplugin: WARNING: lab: nagiosplugin logs a warning" in kept
    assert "python log: dns.resolver: WARNING: lab: dns.resolver logs a warning" in kept


@pytest.mark.lab
@pytest.mark.parametrize("environment", sorted(ENVIRONMENTS))
@pytest.mark.parametrize("case, state", [("ee", "OK"), ("single", "WARNING"), ("dual", "CRITICAL")])
def test_check_dane_against_the_signed_lab_prints_only_its_own_output(case, state, environment,
                                                                     lab_resolver, lab_postfix):
    """cryptography's own deprecations (DSA, 51.0) on the certificate paths of check_dane."""
    code, output = run_script("check_dane", [
        "-D", f"{case}.dane.test", "--dns-server", danelab.RESOLVER_ARG,
        "--secure-name", danelab.SECURE_PROBE, "--bogus-name", danelab.BOGUS_PROBE,
        "--helo-name", "monitor.posture.test", "-t", "10", "-vv"], ENVIRONMENTS[environment])
    lines = assert_only_the_plugin_speaks("check_dane", output)
    assert lines[0].startswith(f"DANE {state} - "), output
    assert code == ["OK", "WARNING", "CRITICAL"].index(state), output

