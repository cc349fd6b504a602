"""check_mta_sts in the fault matrix: policy-host faults (area "TLS"), DNS faults, bad
arguments and state files.

The policy hosts that misbehave as a real web server will (redirect, wrong type,
oversized, 404, wrong or expired certificate) are the lab nginx (tests/lab/nginx.py);
the ones no real server does on demand (a handshake that never comes, a response that
drips, garbage, a hang-up, an endless body, plain HTTP on 443) are scripted here
(FakePolicyHost), on the addresses tests/lab/mtastslab.FAKE_HOSTS gives their names.
DNS faults come from the scripted DNS server of tests/lab/fakedns.py with a world of
its own (STS_WORLD). Every run must end within -t with the row's state and fragment.
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import ssl
import time
from dataclasses import dataclass

import pytest

from check_smtp_posture.plugins.check_mta_sts import main
from tests.conftest import run_main
from tests.faultmatrix import AREAS, Fault, check_says, said
from tests.lab import fakedns
from tests.lab.mtastslab import FAKE_HOSTS, STS_DOMAIN, STS_ID, policy
from tests.lab.threadedserver import ThreadedServer

#: what the policy hosts that cut their body short send of it: a valid policy on its own
CUT_POLICY = policy()
EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
PLUGIN = "check_mta_sts"
TIMEOUT = 2.0
MARGIN = 0.5


# --------------------------------------------------------------------------- the fakes


class FakePolicyHost(ThreadedServer):
    """A policy host on `address`:443 that misbehaves as `scenario` says:

    stall      accepts and never speaks (the TLS handshake never completes)
    drip       TLS, then a status line one byte every 0.2 s, forever
    garbage    TLS, then bytes that are no HTTP, then closes
    hangup     TLS, reads the request, closes without a word
    endless    TLS, 200 text/plain without a length, a body that never ends
    plaintext  answers the ClientHello with a plain HTTP response
    short      TLS, 200 text/plain with a valid policy, Content-Length 500 bytes more than
               it sends, then closes
    chunkcut   TLS, 200 text/plain chunked: a chunk 500 bytes longer than the valid policy
               it carries, then closes
    """

    thread_name = "fake-policy-host"

    def __init__(self, scenario: str, address: str, certfile: str, keyfile: str):
        super().__init__()
        self.scenario = scenario
        self.address = address
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certfile, keyfile)

    def start(self) -> FakePolicyHost:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.address, 443))
        listener.listen(16)
        listener.settimeout(0.2)
        self._listen(listener)
        return self

    def _serve(self, conn: socket.socket, peer) -> None:
        conn.settimeout(5)
        try:
            if self.scenario == "stall":
                self._stop.wait(10)
                return
            if self.scenario == "plaintext":
                conn.recv(4096)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                return
            tls = self.context.wrap_socket(conn, server_side=True)
            tls.recv(4096)
            if self.scenario == "drip":
                for byte in b"HTTP/1.1 200 OK\r\n" * 100:
                    if self._stop.wait(0.2):
                        return
                    tls.sendall(bytes([byte]))
            elif self.scenario == "garbage":
                tls.sendall(b"\x00\x01garbage that is no HTTP\r\n\r\n")
            elif self.scenario == "endless":
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                            b"Connection: close\r\n\r\n")
                line = b"comment: " + b"x" * 1000 + b"\n"
                while not self._stop.is_set():
                    tls.sendall(line)
            elif self.scenario == "short":
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (len(CUT_POLICY) + 500,
                                                                CUT_POLICY))
            elif self.scenario == "chunkcut":
                tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s"
                            % (len(CUT_POLICY) + 500, CUT_POLICY))
        except OSError:
            pass


@pytest.fixture(scope="module")
def sts_ca(lab_postfix, lab_nginx, tmp_path_factory):
    """A CA file trusting the lab Postfix, the lab nginx and the fakes (their CA: made here),
    and that CA, to issue the fakes' certificate."""
    from tests.lab.certs import LabCA
    from tests.lab.nginx import ca_bundle

    directory = tmp_path_factory.mktemp("fakes")
    ca = LabCA("check_smtp_posture fake policy hosts CA")
    bundle = ca_bundle(directory / "bundle.pem", lab_postfix.ca_file, lab_nginx.ca_file,
                       ca.write(directory))
    return str(bundle), ca


@pytest.fixture(scope="module")
def fake_hosts(sts_ca, tmp_path_factory):
    names = [f"mta-sts.{label}.{STS_DOMAIN}" for label in FAKE_HOSTS]
    certfile, keyfile = sts_ca[1].issue(names).write(tmp_path_factory.mktemp("fake"), "fake")
    servers = [FakePolicyHost(label, address, str(certfile), str(keyfile)).start()
               for label, address in FAKE_HOSTS.items()]
    yield
    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def sts_dns(lab_dns):
    """The lab DNS, reloaded if it was started before the fake hosts' names were added."""
    import dns.message
    import dns.query

    last = list(FAKE_HOSTS)[-1]
    query = dns.message.make_query(f"mta-sts.{last}.{STS_DOMAIN}", "A")
    if not dns.query.udp(query, lab_dns.address, port=lab_dns.port, timeout=2).answer:
        lab_dns.reload()
    return lab_dns.server_arg


#: the DNS faults' world: every domain has an MX (where nothing listens) and, unless the
#: row is about it, an MTA-STS record and a policy host
FAULT_DOMAIN = "stsfault.test"


def _d(label: str) -> str:
    return f"{label}.{FAULT_DOMAIN}"


STS_WORLD_RECORDS = {
    "mx." + FAULT_DOMAIN: [("A", "127.0.25.88")],
    **{_d(label): [("MX", f"10 mx.{FAULT_DOMAIN}.")]
       for label in ("txt-servfail", "txt-silent", "txt-garbage", "txt-wrongtype",
                     "host-servfail", "host-silent", "rpt-servfail", "mx-servfail")},
    **{f"_mta-sts.{_d(label)}": [("TXT", f'"v=STSv1; id={STS_ID};"')]
       for label in ("host-servfail", "host-silent", "rpt-servfail", "mx-servfail")},
}
STS_WORLD_RULES = {
    f"_mta-sts.{_d('txt-servfail')}/TXT": fakedns.SERVFAIL,
    f"_mta-sts.{_d('txt-silent')}/TXT": fakedns.SILENT,
    f"_mta-sts.{_d('txt-garbage')}/TXT": fakedns.GARBAGE,
    f"_mta-sts.{_d('txt-wrongtype')}/TXT": fakedns.WRONG_TYPE,
    f"mta-sts.{_d('host-servfail')}": fakedns.SERVFAIL,
    f"mta-sts.{_d('host-silent')}": fakedns.SILENT,
    f"_smtp._tls.{_d('rpt-servfail')}/TXT": fakedns.SERVFAIL,
    f"{_d('mx-servfail')}/MX": fakedns.SERVFAIL,
}


@pytest.fixture(scope="module")
def sts_fake_dns():
    world = fakedns.World(STS_WORLD_RECORDS, STS_WORLD_RULES)
    with fakedns.FakeDns(world) as server:
        yield server.server_arg


# --------------------------------------------------------------------------- the rows


@dataclass(frozen=True)
class Case:
    row: Fault
    args: tuple  # after the plugin name; "{state}" is the state file's path
    dns: str = "lab"  # "lab" (lab NSD, nginx, fakes) or "fake" (STS_WORLD)
    state_setup: object = None  # bytes written to the state file first, or "lock"


def _lab(label: str) -> tuple:
    return ("-D", f"{label}.{STS_DOMAIN}")


def tls_row(id_, fault, message, label, state="CRITICAL", *extra) -> Case:
    return Case(Fault(id_, "TLS", PLUGIN, fault, state, message), (*_lab(label), *extra))


CASES = [
    # -- the policy host: the real nginx ----------------------------------------------------
    tls_row("sts-policy-redirect", "the policy host answers 301 (nginx)",
            "policy fetch answered 301 redirect to https://mta-sts.good.sts.test/"
            ".well-known/mta-sts.txt (senders do not follow redirects)", "redirect"),
    tls_row("sts-policy-wrong-type", "the policy is served as text/html (nginx)",
            "policy served as text/html, not text/plain", "wrongtype"),
    tls_row("sts-policy-oversized", "the policy is 80 KB long (nginx)",
            "policy larger than 64 KiB", "oversized"),
    tls_row("sts-policy-not-found", "no policy at the well-known path: 404 (nginx)",
            "policy fetch answered 404 Not Found", "notfound"),
    tls_row("sts-policy-cert-wrong-host",
            "the policy host's certificate names another host (nginx)",
            "policy host mta-sts.badcert.sts.test certificate name mismatch for "
            "mta-sts.badcert.sts.test", "badcert"),
    tls_row("sts-policy-cert-expired", "the policy host's certificate expired (nginx)",
            "policy host mta-sts.expired.sts.test certificate expired 1 day ago", "expired"),
    tls_row("sts-policy-refused", "nothing listens on the policy host's port 443",
            "policy host mta-sts.refused.sts.test[127.0.25.81] connect: connection refused",
            "refused"),
    tls_row("sts-policy-refused-warning",
            "nothing listens on the policy host's port 443, --unreachable-state warning",
            "connect: connection refused", "refused", "WARNING",
            "--unreachable-state", "warning"),
    # -- the policy host: scripted -----------------------------------------------------------
    tls_row("sts-policy-handshake-stall",
            "the policy host accepts and never answers the TLS handshake (-t 2)",
            "policy host mta-sts.stall.sts.test[127.0.25.82] tls: timeout after 2s", "stall"),
    tls_row("sts-policy-drip", "the policy host sends its status line a byte every 0.2 s "
                               "(-t 2)",
            "policy host mta-sts.drip.sts.test[127.0.25.83] response: timeout after 2s",
            "drip"),
    tls_row("sts-policy-garbage", "the policy host answers bytes that are no HTTP",
            "policy host mta-sts.garbage.sts.test[127.0.25.84] response: not an HTTP "
            "response", "garbage"),
    tls_row("sts-policy-hangup", "the policy host closes after the request, without a word",
            "policy host mta-sts.hangup.sts.test[127.0.25.85] response: the server closed "
            "the connection without a response", "hangup"),
    tls_row("sts-policy-endless", "the policy host sends a text/plain body that never ends",
            "policy larger than 64 KiB", "endless"),
    tls_row("sts-policy-plain-http", "the policy host speaks plain HTTP on port 443",
            "policy host mta-sts.plaintext.sts.test[127.0.25.87] tls: TLS handshake failed",
            "plaintext"),
    # -- DNS -----------------------------------------------------------------------------------
    Case(Fault("sts-dns-txt-servfail", "DNS", PLUGIN, "the _mta-sts TXT lookup gets SERVFAIL",
               "CRITICAL", "_mta-sts.txt-servfail.stsfault.test TXT lookup failed: "
                           "SERVFAIL"), ("-D", _d("txt-servfail")), "fake"),
    Case(Fault("sts-dns-txt-silent", "DNS", PLUGIN,
               "the _mta-sts TXT lookup is never answered (--query-timeout 0.5)", "CRITICAL",
               "_mta-sts.txt-silent.stsfault.test TXT lookup failed: TIMEOUT (no answer "
               "within 0.5s)"), ("-D", _d("txt-silent"), "--query-timeout", "0.5"), "fake"),
    Case(Fault("sts-dns-txt-garbage", "DNS", PLUGIN,
               "the reply to the _mta-sts TXT query is garbage (--query-timeout 0.5)",
               "CRITICAL", "_mta-sts.txt-garbage.stsfault.test TXT lookup failed: TIMEOUT"),
         ("-D", _d("txt-garbage"), "--query-timeout", "0.5"), "fake"),
    Case(Fault("sts-dns-txt-wrong-type", "DNS", PLUGIN,
               "the _mta-sts TXT query is answered with an A record", "CRITICAL",
               "_mta-sts.txt-wrongtype.stsfault.test TXT lookup failed: ERROR (the answer "
               "does not match the question)"), ("-D", _d("txt-wrongtype")), "fake"),
    Case(Fault("sts-dns-host-servfail", "DNS", PLUGIN,
               "the policy host's address lookups get SERVFAIL", "CRITICAL",
               "policy host mta-sts.host-servfail.stsfault.test: lookup failed (A: SERVFAIL"),
         ("-D", _d("host-servfail")), "fake"),
    Case(Fault("sts-dns-host-silent", "DNS", PLUGIN,
               "the policy host's address lookups are never answered (--query-timeout 0.5)",
               "CRITICAL", "policy host mta-sts.host-silent.stsfault.test: lookup failed "
                           "(A: TIMEOUT"),
         ("-D", _d("host-silent"), "--query-timeout", "0.5"), "fake"),
    Case(Fault("sts-dns-tlsrpt-servfail", "DNS", PLUGIN,
               "the _smtp._tls TXT lookup gets SERVFAIL", "CRITICAL",
               "_smtp._tls.rpt-servfail.stsfault.test TXT lookup failed: SERVFAIL"),
         ("-D", _d("rpt-servfail")), "fake"),
    Case(Fault("sts-dns-mx-servfail", "DNS", PLUGIN, "the MX lookup gets SERVFAIL",
               "CRITICAL", "MX lookup failed: SERVFAIL"), ("-D", _d("mx-servfail")), "fake"),
    Case(Fault("sts-dns-two-records", "DNS", PLUGIN, "two v=STSv1 TXT records", "CRITICAL",
               "_mta-sts.twotxt.sts.test: 2 v=STSv1 records (senders apply no policy)"),
         _lab("twotxt")),
    Case(Fault("sts-dns-bad-id", "DNS", PLUGIN, "the v=STSv1 record's id is not 1-32 letters "
                                                 "and digits", "CRITICAL",
               "_mta-sts.badid.sts.test: bad id 'not-valid!'"), _lab("badid")),
    Case(Fault("sts-dns-no-record", "DNS", PLUGIN, "no _mta-sts record (NXDOMAIN)",
               "CRITICAL", "no MTA-STS record at _mta-sts.nosts.sts.test (NXDOMAIN)"),
         _lab("nosts")),
    Case(Fault("sts-dns-no-policy-host", "DNS", PLUGIN,
               "a record, but the policy host does not exist (NXDOMAIN)", "CRITICAL",
               "policy host mta-sts.nohost.sts.test: NXDOMAIN"), _lab("nohost")),
    # -- arguments -----------------------------------------------------------------------------
    Case(Fault("sts-args-no-domain", "arguments", PLUGIN, "no -D", "UNKNOWN",
               "check_mta_sts: error: -D/--domain is required"), ()),
    Case(Fault("sts-args-ca-file-missing", "arguments", PLUGIN,
               "--ca-file names a file that does not exist", "UNKNOWN",
               "--ca-file: cannot read CA file /nonexistent/ca.pem: No such file or "
               "directory"), (*_lab("good"), "--ca-file", "/nonexistent/ca.pem")),
    Case(Fault("sts-args-ca-file-directory", "arguments", PLUGIN, "--ca-file is a directory",
               "UNKNOWN", "--ca-file: CA file / is not a regular file"),
         (*_lab("good"), "--ca-file", "/")),
    Case(Fault("sts-args-missing-choice", "arguments", PLUGIN, "--missing unknown",
               "UNKNOWN", "argument --missing: invalid choice: 'unknown'"),
         (*_lab("good"), "--missing", "unknown")),
    Case(Fault("sts-args-empty-state-file", "arguments", PLUGIN, "--state-file ''",
               "UNKNOWN", "--state-file: empty path"), (*_lab("good"), "--state-file", "")),
    # -- state files ---------------------------------------------------------------------------
    Case(Fault("sts-state-garbage", "state files", PLUGIN, "--state-file holds no JSON",
               "WARNING", "state file PATH was corrupt and has been started afresh"),
         (*_lab("good"), "--state-file", "{state}"), state_setup=b"not JSON\n"),
    Case(Fault("sts-state-bad-entry", "state files", PLUGIN,
               "the domain's entry in --state-file is not a policy history", "WARNING",
               "state file PATH was corrupt and has been started afresh"),
         (*_lab("good"), "--state-file", "{state}"),
         state_setup=b'{"mta-sts:good.sts.test": {"policies": [{"id": 5}], "mx": []}}'),
    Case(Fault("sts-state-missing-directory", "state files", PLUGIN,
               "--state-file in a directory that does not exist", "UNKNOWN",
               "state file PATH: No such file or directory"),
         (*_lab("good"), "--state-file", "{state}"), state_setup="nodir"),
    Case(Fault("sts-state-locked", "state files", PLUGIN,
               "--state-file locked by another run (flock) past -t 2", "UNKNOWN",
               "state file PATH is locked by another run"),
         (*_lab("good"), "--state-file", "{state}"), state_setup="lock"),
]

MATRIX = [case.row for case in CASES]

#: row id -> the whole line a user reads for the fault, for each run (tests.faultmatrix)
SAYS: dict[str, tuple[str, ...]] = {
    "sts-policy-redirect": (
        "MTA_STS CRITICAL - policy fetch answered 301 redirect to "
        "https://mta-sts.good.sts.test/.well-known/mta-sts.txt (senders do not follow "
        "redirects)",
    ),
    "sts-policy-wrong-type": (
        "MTA_STS CRITICAL - policy served as text/html, not text/plain",
    ),
    "sts-policy-oversized": (
        "MTA_STS CRITICAL - policy larger than 64 KiB",
    ),
    "sts-policy-not-found": (
        "MTA_STS CRITICAL - policy fetch answered 404 Not Found",
    ),
    "sts-policy-cert-wrong-host": (
        "MTA_STS CRITICAL - policy host mta-sts.badcert.sts.test certificate name mismatch "
        "for mta-sts.badcert.sts.test",
    ),
    "sts-policy-cert-expired": (
        "MTA_STS CRITICAL - policy host mta-sts.expired.sts.test certificate expired 1 day "
        "ago",
    ),
    "sts-policy-refused": (
        "MTA_STS CRITICAL - policy host mta-sts.refused.sts.test[127.0.25.81] connect: "
        "connection refused",
    ),
    "sts-policy-refused-warning": (
        "MTA_STS WARNING - policy host mta-sts.refused.sts.test[127.0.25.81] connect: "
        "connection refused",
    ),
    "sts-policy-handshake-stall": (
        "MTA_STS CRITICAL - policy host mta-sts.stall.sts.test[127.0.25.82] tls: timeout "
        "after {N}s",
    ),
    "sts-policy-drip": (
        "MTA_STS CRITICAL - policy host mta-sts.drip.sts.test[127.0.25.83] response: timeout "
        "after {N}s",
    ),
    "sts-policy-garbage": (
        "MTA_STS CRITICAL - policy host mta-sts.garbage.sts.test[127.0.25.84] response: not "
        "an HTTP response (BadStatusLine)",
    ),
    "sts-policy-hangup": (
        "MTA_STS CRITICAL - policy host mta-sts.hangup.sts.test[127.0.25.85] response: the "
        "server closed the connection without a response",
    ),
    "sts-policy-endless": (
        "MTA_STS CRITICAL - policy larger than 64 KiB",
    ),
    "sts-policy-plain-http": (
        "MTA_STS CRITICAL - policy host mta-sts.plaintext.sts.test[127.0.25.87] tls: TLS "
        "handshake failed: wrong version number",
    ),
    "sts-dns-txt-servfail": (
        "MTA_STS CRITICAL - _mta-sts.txt-servfail.stsfault.test TXT lookup failed: SERVFAIL",
    ),
    "sts-dns-txt-silent": (
        "MTA_STS CRITICAL - _mta-sts.txt-silent.stsfault.test TXT lookup failed: TIMEOUT (no "
        "answer within {N}s)",
    ),
    "sts-dns-txt-garbage": (
        "MTA_STS CRITICAL - _mta-sts.txt-garbage.stsfault.test TXT lookup failed: TIMEOUT "
        "(no answer within {N}s)",
    ),
    "sts-dns-txt-wrong-type": (
        "MTA_STS CRITICAL - _mta-sts.txt-wrongtype.stsfault.test TXT lookup failed: ERROR "
        "(the answer does not match the question)",
    ),
    "sts-dns-host-servfail": (
        "MTA_STS CRITICAL - policy host mta-sts.host-servfail.stsfault.test: lookup failed "
        "(A: SERVFAIL; AAAA: SERVFAIL)",
    ),
    "sts-dns-host-silent": (
        "MTA_STS CRITICAL - policy host mta-sts.host-silent.stsfault.test: lookup failed (A: "
        "TIMEOUT (no answer within {N}s); AAAA: TIMEOUT (no answer within...",
    ),
    "sts-dns-tlsrpt-servfail": (
        "MTA_STS CRITICAL - policy host mta-sts.rpt-servfail.stsfault.test: NXDOMAIN; "
        "_smtp._tls.rpt-servfail.stsfault.test TXT lookup failed: SERVFAIL",
    ),
    "sts-dns-mx-servfail": (
        "MTA_STS CRITICAL - MX lookup failed: SERVFAIL; policy host "
        "mta-sts.mx-servfail.stsfault.test: NXDOMAIN",
    ),
    "sts-dns-two-records": (
        "MTA_STS CRITICAL - _mta-sts.twotxt.sts.test: 2 v=STSv1 records (senders apply no "
        "policy)",
    ),
    "sts-dns-bad-id": (
        "MTA_STS CRITICAL - _mta-sts.badid.sts.test: bad id 'not-valid!' (1-32 letters and "
        "digits) (senders apply no policy)",
    ),
    "sts-dns-no-record": (
        "MTA_STS CRITICAL - no MTA-STS record at _mta-sts.nosts.sts.test (NXDOMAIN)",
    ),
    "sts-dns-no-policy-host": (
        "MTA_STS CRITICAL - policy host mta-sts.nohost.sts.test: NXDOMAIN",
    ),
    "sts-args-no-domain": (
        "check_mta_sts: error: -D/--domain is required",
    ),
    "sts-args-ca-file-missing": (
        "check_mta_sts: error: --ca-file: cannot read CA file /nonexistent/ca.pem: No such "
        "file or directory",
    ),
    "sts-args-ca-file-directory": (
        "check_mta_sts: error: --ca-file: CA file / is not a regular file",
    ),
    "sts-args-missing-choice": (
        "check_mta_sts: error: argument --missing: invalid choice: 'unknown' (choose from "
        "'ok', 'warning', 'critical')",
    ),
    "sts-args-empty-state-file": (
        "check_mta_sts: error: --state-file: empty path",
    ),
    "sts-state-garbage": (
        "MTA_STS WARNING - state file {PATH} was corrupt and has been started afresh",
    ),
    "sts-state-bad-entry": (
        "MTA_STS WARNING - state file {PATH} was corrupt and has been started afresh",
    ),
    "sts-state-missing-directory": (
        "MTA_STS UNKNOWN - state file {PATH}: No such file or directory",
    ),
    "sts-state-locked": (
        "MTA_STS UNKNOWN - state file {PATH} is locked by another run",
    ),
}


def _state_path(case: Case, tmp_path):
    if case.state_setup == "nodir":
        return tmp_path / "missing" / "sts.json"
    path = tmp_path / "sts.json"
    if isinstance(case.state_setup, bytes):
        path.write_bytes(case.state_setup)
    return path


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.row.id, marks=[pytest.mark.lab] if c.row.area != "arguments"
                 and c.dns == "lab" else []) for c in CASES])
def test_mta_sts_fault(case, request, tmp_path):
    argv_ca = ()
    if case.row.area == "arguments":
        dns = "127.0.29.99:9"  # a usage error asks no DNS at all
    elif case.dns == "fake":
        dns = request.getfixturevalue("sts_fake_dns")
    else:
        request.getfixturevalue("fake_hosts")
        dns = request.getfixturevalue("sts_dns")
        argv_ca = ("--ca-file", request.getfixturevalue("sts_ca")[0])
    path = _state_path(case, tmp_path)
    args = [str(path) if a == "{state}" else a for a in case.args]
    argv = [*args, *argv_ca, "--dns-server", dns, "--helo-name", "probe.posture.test",
            "-t", f"{TIMEOUT:g}"]
    with contextlib.ExitStack() as stack:
        if case.state_setup == "lock":  # another run holds it all the time
            fcntl.flock(stack.enter_context(open(path, "a")), fcntl.LOCK_EX)
        started = time.monotonic()
        run = run_main(main, argv)
        elapsed = time.monotonic() - started
    message = case.row.message.replace("PATH", str(path))
    where = f"{' '.join(argv)}:\n{run.output}"
    assert run.exitcode == EXIT[case.row.state], where
    if case.row.area == "arguments":
        assert run.output.startswith("usage: check_mta_sts"), where
        assert message in run.output, where
        assert elapsed < 1.0, where
        check_says(SAYS, case.row.id, [(PLUGIN, said(PLUGIN, run.output))])
        return
    assert run.first_line.startswith(f"MTA_STS {case.row.state} - "), where
    assert message in run.first_line, where
    check_says(SAYS, case.row.id, [(PLUGIN, said(PLUGIN, run.output))])
    assert elapsed < TIMEOUT + MARGIN, f"{elapsed:.2f}s: {where}"


@pytest.mark.parametrize("label, why", [
    ("short", f"the body ended early ({len(CUT_POLICY)} of {len(CUT_POLICY) + 500} bytes)"),
    ("chunkcut", "the body ended before its last chunk"),
])
def test_a_policy_cut_short_is_a_failed_fetch(label, why, fake_hosts, sts_dns, sts_ca):
    # What did arrive is a valid policy, but not what the server said it sends: senders
    # fetch no policy from it. (Not a matrix row yet: the page's table is regenerated in
    # another branch.)
    run = run_main(main, [*_lab(label), "--ca-file", sts_ca[0], "--dns-server", sts_dns,
                          "--helo-name", "probe.posture.test", "-t", f"{TIMEOUT:g}"])
    assert run.exitcode == 2, run.output
    assert run.first_line.startswith(
        f"MTA_STS CRITICAL - policy host mta-sts.{label}.{STS_DOMAIN}[{FAKE_HOSTS[label]}] "
        f"response: {why}"), run.output


def test_rows_are_well_formed():
    ids = [row.id for row in MATRIX]
    assert len(ids) == len(set(ids))
    for row in MATRIX:
        assert row.area in AREAS and row.state in EXIT and row.message
        assert row.id.startswith("sts-") and row.plugins == PLUGIN
