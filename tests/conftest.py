"""Shared pytest fixtures: plugin runner helpers and the lab."""

from __future__ import annotations

import io
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

import pytest

from tests import secretguard


@dataclass
class PluginRun:
    exitcode: int
    output: str  # stdout
    errors: str = ""  # stderr

    @property
    def first_line(self) -> str:
        return self.output.splitlines()[0] if self.output else ""

    @property
    def perfdata(self) -> dict[str, str]:
        """label -> value[UOM] from the first line's perfdata."""
        _, _, perf = self.first_line.partition(" | ")
        result = {}
        for item in perf.split():
            label, _, rest = item.partition("=")
            result[label.strip("'")] = rest.split(";")[0]
        return result


def run_main(main, argv) -> PluginRun:
    """Call a plugin's main(argv) in-process and capture what it prints.

    Neither stream may show a secret the run was given (tests/secretguard.py).
    """
    out, err = io.StringIO(), io.StringIO()
    argv = [str(a) for a in argv]
    with redirect_stdout(out), redirect_stderr(err):
        code = main(argv)
    secretguard.check(argv, os.environ, out.getvalue(), err.getvalue())
    return PluginRun(code, out.getvalue(), err.getvalue())


@pytest.fixture
def run_plugin():
    return run_main


def pytest_report_header(config):
    return f"python: {sys.executable}"


# `slow` (pyproject.toml): what waits out a deadline or drives a daemon; `make test-fast`
# runs the rest. A test that uses a lab daemon below, even through another fixture, or
# that is marked `lab` (Icinga 2, Nagios, NRPE are started by their modules) is slow; so
# is a fault-matrix row whose first line says the run ran out of time
# (tests/faultmatrix.py). Other tests that wait out a deadline, and the property tests'
# searches, are marked where written.
LAB_FIXTURES = frozenset({"lab", "lab_dns", "lab_postfix", "lab_nginx", "lab_resolver"})


def pytest_collection_modifyitems(items):
    from tests.faultmatrix import waits_out_deadline

    for item in items:
        params = getattr(item, "callspec", None)
        rows = [getattr(value, "row", value) for value in params.params.values()] \
            if params else []
        if item.get_closest_marker("lab") or LAB_FIXTURES & set(item.fixturenames) \
                or any(waits_out_deadline(row) for row in rows):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def _a_lab_test_is_slow(request):
    """A test that took a lab daemon with request.getfixturevalue(), which collection
    cannot see, errs unless marked: else `make test-fast` would start the daemons."""
    yield
    used = LAB_FIXTURES & set(request.fixturenames)
    if used and not request.node.get_closest_marker("slow"):
        pytest.fail(f"uses the lab ({', '.join(sorted(used))}): mark it lab or slow",
                    pytrace=False)


# --- the lab: real servers started by the tests (tests/lab/) ----------------------------
#
# Lab fixtures skip only when a server binary is absent or we are not root (a
# developer machine without `make install`); any failure to start is an error, so CI
# never hides a broken lab behind a skip.


def _lab_requirement(*binaries: str) -> str | None:
    import os
    import shutil

    if os.geteuid() != 0:
        return "the lab needs root (it binds 127.0.25.x:25 and runs daemons)"
    for binary in binaries:
        if not (shutil.which(binary) or os.path.exists(binary)):
            return f"{binary} is not installed (run `make install`)"
    return None


@pytest.fixture(scope="session")
def lab_dns():
    """The lab's authoritative DNS (NSD) on 127.0.25.53:53 serving tests/lab/world.ZONES.

    The suite's only NSD, shared with concurrent sessions: every test module's zones
    are in world.ZONES. Yields the LabDns: `.server_arg` is the value for `--dns-server`,
    `.address` and `.port` the upstream for a tests/lab/dnsdelay forwarder.
    """
    from tests.lab.authdns import NSD

    reason = _lab_requirement(NSD)
    if reason:
        pytest.skip(reason)
    from tests.lab.sharedlock import SharedDns

    shared = SharedDns()
    dns = shared.start()
    try:
        yield dns
    finally:
        shared.stop()


@pytest.fixture(scope="session")
def lab_postfix():
    """The lab Postfix (+ Dovecot SASL/IMAP); see tests/lab/postfix.py for the endpoints.

    Yields the started LabPostfix: `.endpoint("mx1")`, `.ca_file`, `.sasl_user`,
    `.sasl_password`, `.mark()`, `.wait_for_log(regex, since=mark)`, `.messages(user)`.
    """
    from tests.lab.postfix import DOVECOT, POSTFIX, POSTFIX_DAEMONS, LabPostfix

    reason = _lab_requirement(POSTFIX, f"{POSTFIX_DAEMONS}/master", DOVECOT)
    if reason:
        pytest.skip(reason)
    with LabPostfix() as postfix:
        yield postfix


@pytest.fixture(scope="session")
def lab_nginx():
    """The lab nginx on 127.0.25.80:443 serving the MTA-STS policy hosts of
    tests/lab/mtastslab.SITES, shared with concurrent sessions; see tests/lab/nginx.py.

    Yields the started LabNginx: `.ca_file` (its CA, not the Postfix one: see
    nginx.ca_bundle), `.mark()`, `.requests_since(mark)`.
    """
    from tests.lab.nginx import NGINX, LabNginx

    reason = _lab_requirement(NGINX)
    if reason:
        pytest.skip(reason)
    with LabNginx() as web:
        yield web


@pytest.fixture(scope="session")
def lab_resolver(lab_dns):
    """The lab's validating resolver (unbound) on 127.0.25.54:53, trusting dane.test.

    Shared with concurrent sessions like the NSD; yields the LabUnbound
    (`.server_arg` is the value for `--dns-server`). See tests/lab/unbound.py.
    """
    from tests.lab.unbound import UNBOUND, SharedUnbound

    reason = _lab_requirement(UNBOUND)
    if reason:
        pytest.skip(reason)
    shared = SharedUnbound()
    resolver = shared.start()
    try:
        yield resolver
    finally:
        shared.stop()


@pytest.fixture(scope="session")
def lab(lab_dns, lab_postfix):
    """Both: DNS answering for posture.test and its mail servers running."""
    return lab_postfix


@pytest.fixture
def fake_smtp():
    """Factory: `fake_smtp(scenario, **options)` -> a started FakeSmtpServer.

    Every server made in the test is stopped at its end. See tests/lab/fakesmtp.py.
    """
    from tests.lab.fakesmtp import FakeSmtpServer

    servers = []

    def make(scenario="normal", **options):
        server = FakeSmtpServer(scenario, **options).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()
