"""check_dkim in the fault matrix: hostile TXT answers at a selector's key name.

A real NSD serves what its zone file says; the answers here are the ones a
hostile or broken server (or a provider's generator gone wrong) gives: a key
record beside forty others, too big for UDP; a record cut into one-byte
strings; bytes that are not UTF-8; many key records at once; SERVFAIL and
silence. They come from the scripted server of tests/lab/fakedns.py with a
world of their own (DKIM_WORLD). Every run must end within -t with the row's
exit status and first line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from check_smtp_posture.plugins.check_dkim import main
from tests.conftest import run_main
from tests.faultmatrix import Fault, check_says, said
from tests.lab import fakedns
from tests.lab.dkimlab import RSA2048

EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
TIMEOUT = 3.0
QUERY_TIMEOUT = 0.5
MARGIN = 0.5
DOMAIN = "dkimfault.test"
KEY = "v=DKIM1; k=rsa; p=" + RSA2048


def _name(selector: str) -> str:
    return f"{selector}._domainkey.{DOMAIN}"


def _strings(data: str | bytes, size: int = 255) -> str:
    """TXT rdata in presentation form: `data` as character-strings of `size` bytes, each
    byte that is not printable ASCII as a \\DDD escape."""
    raw = data.encode() if isinstance(data, str) else data
    chunks = (raw[i:i + size] for i in range(0, len(raw), size))
    return " ".join('"' + "".join(chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03d}"
                                  for b in chunk) + '"' for chunk in chunks)


#: forty tokens beside the key (about 4 KB) and a key record with a long n= note
_TOKENS = [f"token-{i:02d}={'%064x' % (0xd1c1 * (i + 1) ** 7)}" for i in range(40)]
_NOTE = "n=" + "x" * 3000

DKIM_WORLD = fakedns.World({
    _name("huge"): [("TXT", _strings(f"{KEY}; {_NOTE}"))]
    + [("TXT", f'"{token}"') for token in _TOKENS],
    _name("split"): [("TXT", _strings(KEY, 1))],
    # p= with bytes that are no UTF-8 (\255\254) in the middle of the base64
    _name("latin"): [("TXT", _strings(f"v=DKIM1; p={RSA2048[:40]}".encode() + b"\xff\xfe"
                                      + RSA2048[40:].encode()))],
    # the bytes outside a tag that matters: a note in Latin-1
    _name("latin-note"): [("TXT", _strings(f"v=DKIM1; n=caf\xe9; p={RSA2048}"
                                           .encode("latin-1")))],
    _name("many"): [("TXT", _strings(f"v=DKIM1; n={i}; p={RSA2048}")) for i in range(30)],
    _name("servfail"): [("TXT", f'"{KEY}"')],
    _name("silent"): [("TXT", f'"{KEY}"')],
}, {_name("servfail"): fakedns.SERVFAIL, _name("silent"): fakedns.SILENT})


@dataclass(frozen=True)
class Case:
    row: Fault
    argv: tuple
    tcp: str = ""  # a name the plugin must have asked again over TCP


CASES = [
    Case(Fault("dkim-txt-huge", "DNS", "check_dkim",
               "the key record (3 KB, with a long n= note) among forty other TXT records: "
               "too big for UDP, asked again over TCP", "OK", "dkimfault.test: huge rsa-2048"),
         ("--selector", "huge"), tcp=_name("huge")),
    Case(Fault("dkim-txt-split", "DNS", "check_dkim",
               "the key record cut into one-byte character-strings", "OK",
               "dkimfault.test: split rsa-2048"),
         ("--selector", "split")),
    Case(Fault("dkim-txt-non-utf8-key", "DNS", "check_dkim",
               "bytes that are not UTF-8 inside the key record's p= value", "CRITICAL",
               "selector latin: p= is not base64"),
         ("--selector", "latin")),
    Case(Fault("dkim-txt-non-utf8-note", "DNS", "check_dkim",
               "bytes that are not UTF-8 in the key record's n= note", "OK",
               "dkimfault.test: latin-note rsa-2048"),
         ("--selector", "latin-note")),
    Case(Fault("dkim-txt-many", "DNS", "check_dkim",
               "thirty key records at one selector", "CRITICAL",
               "several key records at many._domainkey.dkimfault.test"),
         ("--selector", "many"), tcp=_name("many")),
    Case(Fault("dkim-txt-servfail", "DNS", "check_dkim --unreachable-state warning",
               "the key record's TXT lookup gets SERVFAIL: a failure, never \"no key\"",
               "WARNING", "TXT lookup of servfail._domainkey.dkimfault.test failed: SERVFAIL"),
         ("--selector", "servfail", "--unreachable-state", "warning")),
    Case(Fault("dkim-txt-silent", "DNS", "check_dkim",
               "the DNS server never answers the key record's TXT query (--query-timeout 0.5)",
               "CRITICAL", "TXT lookup of silent._domainkey.dkimfault.test failed: TIMEOUT"),
         ("--selector", "silent")),
]

MATRIX = [case.row for case in CASES]

#: row id -> the whole line a user reads for the fault (tests.faultmatrix)
SAYS: dict[str, tuple[str, ...]] = {
    "dkim-txt-huge": ("DKIM OK - dkimfault.test: huge rsa-2048",),
    "dkim-txt-split": ("DKIM OK - dkimfault.test: split rsa-2048",),
    "dkim-txt-non-utf8-key": ("DKIM CRITICAL - dkimfault.test: selector latin: p= is not "
                              "base64",),
    "dkim-txt-non-utf8-note": ("DKIM OK - dkimfault.test: latin-note rsa-2048",),
    "dkim-txt-many": ("DKIM CRITICAL - dkimfault.test: selector many: several key records "
                      "at many._domainkey.dkimfault.test: verifiers' results are undefined",),
    "dkim-txt-servfail": ("DKIM WARNING - dkimfault.test: selector servfail: TXT lookup of "
                          "servfail._domainkey.dkimfault.test failed: SERVFAIL",),
    "dkim-txt-silent": ("DKIM CRITICAL - dkimfault.test: selector silent: TXT lookup of "
                        "silent._domainkey.dkimfault.test failed: TIMEOUT (no answer within "
                        "{N}s)",),
}


@pytest.fixture(scope="module")
def fake_dns():
    with fakedns.FakeDns(DKIM_WORLD) as server:
        yield server


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.row.id)
def test_dkim_fault(case, fake_dns):
    before = len(fake_dns.queries)
    argv = ["-D", DOMAIN, *case.argv, "--dns-server", fake_dns.server_arg,
            "-t", f"{TIMEOUT:g}", "--query-timeout", f"{QUERY_TIMEOUT:g}"]
    started = time.monotonic()
    result = run_main(main, argv)
    elapsed = time.monotonic() - started
    assert result.exitcode == EXIT[case.row.state], result.output
    assert case.row.message in result.first_line, result.output
    assert elapsed < TIMEOUT + MARGIN, f"{elapsed:.2f}s: {result.output}"
    check_says(SAYS, case.row.id, [("check_dkim", said("check_dkim", result.output))])
    if case.tcp:  # the fallback really went over TCP
        assert fake_dns.asked(case.tcp, transport="tcp", since=before), fake_dns.queries[before:]


def test_rows_are_well_formed():
    for case in CASES:
        assert case.row.id.startswith("dkim-") and case.row.area == "DNS"
        assert case.row.state in EXIT and case.row.message in " ".join(SAYS[case.row.id])
