"""check_dmarc in the fault matrix: hostile TXT answers, a silent DNS server, state files
and bad arguments.

The hostile answers are ones a real server gives: the lab NSD serves them from the
dmarclab zone (tests/lab/dmarclab.py): a record of 3000 bytes (too big for UDP, asked
again over TCP), a record split into strings in the middle of its tags, bytes that are
not UTF-8, sixty unrelated TXT records beside the one DMARC record, two DMARC records.
Every run must end within -t with the row's state and the whole line of SAYS.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

import pytest

from check_smtp_posture.plugins.check_dmarc import main
from tests.conftest import run_main
from tests.faultmatrix import AREAS, Fault, check_says, said
from tests.lab.world import DNS_SERVER_ARG

EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
PLUGIN = "check_dmarc"
TIMEOUT = 2.0
MARGIN = 0.5


@dataclass(frozen=True)
class Case:
    row: Fault
    args: tuple
    dns: str = "lab"  # lab: the lab NSD; silent: a socket that never answers; none
    state: str = ""  # nodir: a path in a missing directory; corrupt: a file of garbage


def dns_row(id_, fault, state, message, domain, **kw) -> Case:
    return Case(Fault(id_, "DNS", PLUGIN, fault, state, message),
                ("-D", f"{domain}.dmarclab"), **kw)


CASES = [
    dns_row("dmarc-txt-huge", "the DMARC record is 3000 bytes in 15 strings (more than a "
            "UDP answer holds)", "OK", "huge.dmarclab: policy reject", "huge"),
    dns_row("dmarc-txt-split", "the record's strings split it in the middle of tags and "
            "values", "OK", "split.dmarclab: policy reject", "split"),
    dns_row("dmarc-txt-non-utf8-policy", "the p= value holds bytes that are not UTF-8",
            "CRITICAL", "p= holds bytes that are not UTF-8", "binarypolicy"),
    dns_row("dmarc-txt-non-utf8-unknown-tag", "an unknown tag's value holds bytes that are "
            "not UTF-8", "OK", "unknown tag x ignored", "binary"),
    dns_row("dmarc-txt-many", "sixty unrelated TXT records beside the DMARC record",
            "OK", "many.dmarclab: policy reject", "many"),
    dns_row("dmarc-txt-several", "two v=DMARC1 records at _dmarc.DOMAIN", "CRITICAL",
            "has 2 DMARC records", "dup"),
    dns_row("dmarc-dns-silent", "the DNS server never answers", "CRITICAL",
            "DMARC lookup of _dmarc.good.dmarclab failed: TIMEOUT", "good", dns="silent"),
    Case(Fault("dmarc-state-nodir", "state files", PLUGIN, "--state-file in a directory that "
               "does not exist", "UNKNOWN", "No such file or directory"),
         ("-D", "quar.dmarclab", "--state-file", "{state}"), state="nodir"),
    Case(Fault("dmarc-state-corrupt", "state files", PLUGIN, "--state-file holds no JSON",
               "WARNING", "was corrupt and has been started afresh"),
         ("-D", "quar.dmarclab", "--state-file", "{state}"), state="corrupt"),
    Case(Fault("dmarc-args-accept-changes", "arguments", PLUGIN, "--accept-changes without "
               "--state-file", "UNKNOWN", "--accept-changes needs --state-file"),
         ("-D", "quar.dmarclab", "--accept-changes"), dns="none"),
]

MATRIX = [case.row for case in CASES]

#: row id -> the whole line a user reads for the fault (tests.faultmatrix)
SAYS: dict[str, tuple[str, ...]] = {
    "dmarc-txt-huge": (
        "DMARC OK - huge.dmarclab: policy reject, non-existent subdomains reject; unknown "
        "tag x ignored",),
    "dmarc-txt-split": (
        "DMARC OK - split.dmarclab: policy reject, non-existent subdomains quarantine",),
    "dmarc-txt-non-utf8-policy": (
        "DMARC CRITICAL - binarypolicy.dmarclab: _dmarc.binarypolicy.dmarclab: p= holds "
        "bytes that are not UTF-8",),
    "dmarc-txt-non-utf8-unknown-tag": (
        "DMARC OK - binary.dmarclab: policy reject, non-existent subdomains reject; unknown "
        "tag x ignored",),
    "dmarc-txt-many": (
        "DMARC OK - many.dmarclab: policy reject, non-existent subdomains reject",),
    "dmarc-txt-several": (
        "DMARC CRITICAL - dup.dmarclab: _dmarc.dup.dmarclab has 2 DMARC records (receivers "
        "apply none)",),
    "dmarc-dns-silent": (
        "DMARC CRITICAL - good.dmarclab: DMARC lookup of _dmarc.good.dmarclab failed: "
        "TIMEOUT (no answer within {N}s)",),
    "dmarc-state-nodir": (
        "DMARC UNKNOWN - quar.dmarclab: state file {PATH}: No such file or directory",),
    "dmarc-state-corrupt": (
        "DMARC WARNING - quar.dmarclab: state file {PATH} was corrupt and has been started "
        "afresh",),
    "dmarc-args-accept-changes": (
        "check_dmarc: error: --accept-changes needs --state-file",),
}


@pytest.fixture
def silent_dns():
    """A UDP socket that reads queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.28.97", 0))
        yield f"127.0.28.97:{sink.getsockname()[1]}"


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.row.id, marks=[pytest.mark.lab] if c.dns == "lab" else [])
    for c in CASES])
def test_dmarc_fault(case, request, tmp_path):
    if case.dns == "lab":
        assert request.getfixturevalue("lab_dns").server_arg == DNS_SERVER_ARG
        dns = DNS_SERVER_ARG
    elif case.dns == "silent":
        dns = request.getfixturevalue("silent_dns")
    else:
        dns = "127.0.29.99:9"  # a usage error asks no DNS at all
    path = tmp_path / ("missing/dmarc.json" if case.state == "nodir" else "dmarc.json")
    if case.state == "corrupt":
        path.write_bytes(b"\x00not json")
    argv = [str(path) if a == "{state}" else a for a in case.args]
    argv += ["--dns-server", dns, "-t", f"{TIMEOUT:g}", "--query-timeout", "0.5"]
    started = time.monotonic()
    run = run_main(main, argv)
    elapsed = time.monotonic() - started
    where = f"{' '.join(argv)}:\n{run.output}"
    assert run.exitcode == EXIT[case.row.state], where
    if case.row.area == "arguments":
        assert run.output.startswith(f"usage: {PLUGIN}"), where
    else:
        assert run.first_line.startswith(f"DMARC {case.row.state} - "), where
    assert case.row.message in run.output, where
    check_says(SAYS, case.row.id, [(PLUGIN, said(PLUGIN, run.output))])
    assert elapsed < TIMEOUT + MARGIN, f"{elapsed:.2f}s: {where}"


def test_rows_are_well_formed():
    ids = [row.id for row in MATRIX]
    assert len(ids) == len(set(ids)) and set(ids) == set(SAYS)
    for row in MATRIX:
        assert row.area in AREAS and row.state in EXIT and row.message
        assert row.id.startswith("dmarc-") and row.plugins == PLUGIN
