"""check_mail_roundtrip in the fault matrix: a hostile OAuth token endpoint (area
"OAuth"). The lab IdP (tests/lab/idp.py) misbehaves as each row says: garbage JSON, a
huge body, a slow drip, a redirect, an expired certificate; and a revoked grant, an IdP
that is not there. Each run must end within -t in the row's state, before any probe is
sent (no token, no login, nothing sent that could not be collected), and no secret may
show at any verbosity (conftest.run_main checks the client secret and the refresh token;
the rows check each access token the IdP issued).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from check_smtp_posture.plugins.check_mail_roundtrip import main
from tests.conftest import run_main
from tests.faultmatrix import AREAS, Fault, check_says, said
from tests.lab import idp as lab_idp
from tests.lab import roundtriplab as rt

EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
PLUGIN = "check_mail_roundtrip"
TIMEOUT = 3.0
MARGIN = 0.5
WHO = f"imaps://{rt.MONITOR_USER}@{rt.MAILBOX_HOST}:993/INBOX"
WHERE = f"token endpoint {lab_idp.IDP_ADDRESS}"


@dataclass(frozen=True)
class Case:
    row: Fault
    mode: str = "normal"  # the IdP's behaviour (tests/lab/idp.py)
    setup: str = ""  # "expired" certificate, "revoked" grant, "down": no IdP at all
    args: tuple = ()


def _row(id_, fault, state, message, **case):
    return Case(Fault(f"oauth-{id_}", "OAuth", PLUGIN, fault, state, message), **case)


CASES = [
    _row("garbage-json", "the token endpoint answers 200 with broken JSON", "CRITICAL",
         f"OAuth for {WHO}: {WHERE}: HTTP 200: no access token in the response",
         mode="garbage"),
    _row("huge-body", "the token endpoint answers with a 1 MiB body", "CRITICAL",
         f"OAuth for {WHO}: {WHERE}: HTTP 200: the response goes on past 64 KiB",
         mode="huge"),
    _row("slow-drip", "the token endpoint drips its answer a byte at a time", "CRITICAL",
         f"OAuth for {WHO}: {WHERE}: response: timeout after 3s", mode="drip"),
    _row("slow-drip-unreachable-state", "the token endpoint drips its answer, with "
         "--unreachable-state warning", "WARNING",
         f"OAuth for {WHO}: {WHERE}: response: timeout after 3s",
         mode="drip", args=("--unreachable-state", "warning")),
    _row("redirect", "the token endpoint redirects elsewhere", "CRITICAL",
         f"OAuth for {WHO}: {WHERE}: HTTP 302: redirects (not followed) to "
         "https://elsewhere.example/token", mode="redirect"),
    _row("expired-certificate", "the token endpoint's certificate has expired", "CRITICAL",
         f"OAuth for {WHO}: {WHERE}: tls: TLS handshake failed: certificate verify failed",
         setup="expired"),
    _row("revoked-grant", "the refresh token's grant was revoked", "CRITICAL",
         f"OAuth: re-authorise {WHO}: {WHERE}: invalid_grant: the grant was revoked",
         setup="revoked"),
    _row("idp-down", "nothing listens at the token endpoint", "CRITICAL",
         f"OAuth for {WHO}: {WHERE}: connect: connection refused", setup="down"),
]
MATRIX = [case.row for case in CASES]

#: row id -> the whole line a user reads for the fault, for each run (tests.faultmatrix)
SAYS: dict[str, tuple[str, ...]] = {
    "oauth-garbage-json": (
        "MAIL_ROUNDTRIP CRITICAL - OAuth for "
        "imaps://monitor@monitor.test@mail.monitor.test:993/INBOX: token endpoint "
        "127.0.25.30: HTTP 200: no access token in the response",
    ),
    "oauth-huge-body": (
        "MAIL_ROUNDTRIP CRITICAL - OAuth for "
        "imaps://monitor@monitor.test@mail.monitor.test:993/INBOX: token endpoint "
        "127.0.25.30: HTTP 200: the response goes on past 64 KiB",
    ),
    "oauth-slow-drip": (
        "MAIL_ROUNDTRIP CRITICAL - OAuth for "
        "imaps://monitor@monitor.test@mail.monitor.test:993/INBOX: token endpoint "
        "127.0.25.30: response: timeout after {N}s",
    ),
    "oauth-slow-drip-unreachable-state": (
        "MAIL_ROUNDTRIP WARNING - OAuth for "
        "imaps://monitor@monitor.test@mail.monitor.test:993/INBOX: token endpoint "
        "127.0.25.30: response: timeout after {N}s",
    ),
    "oauth-redirect": (
        "MAIL_ROUNDTRIP CRITICAL - OAuth for "
        "imaps://monitor@monitor.test@mail.monitor.test:993/INBOX: token endpoint "
        "127.0.25.30: HTTP 302: redirects (not followed) to https://elsewhere.example/token",
    ),
    "oauth-expired-certificate": (
        "MAIL_ROUNDTRIP CRITICAL - OAuth for "
        "imaps://monitor@monitor.test@mail.monitor.test:993/INBOX: token endpoint "
        "127.0.25.30: tls: TLS handshake failed: certificate verify failed",
    ),
    "oauth-revoked-grant": (
        "MAIL_ROUNDTRIP CRITICAL - OAuth: re-authorise "
        "imaps://monitor@monitor.test@mail.monitor.test:993/INBOX: token endpoint "
        "127.0.25.30: invalid_grant: the grant was revoked",
    ),
    "oauth-idp-down": (
        "MAIL_ROUNDTRIP CRITICAL - OAuth for "
        "imaps://monitor@monitor.test@mail.monitor.test:993/INBOX: token endpoint "
        "127.0.25.30: connect: connection refused",
    ),
}


@pytest.mark.parametrize("case, verbosity", [
    pytest.param(c, v, id=c.row.id + (f"-{'v' * v}" if v else ""))
    for c in CASES for v in (0, 3)])
def test_oauth_fault(case, verbosity, lab_dns, tmp_path):
    from tests.lab.certs import LabCA

    ca = LabCA()
    ca.write(tmp_path, "idp-ca.pem")
    secret = tmp_path / "client-secret"
    secret.write_text(lab_idp.CLIENT_SECRET + "\n")
    refresh = tmp_path / "refresh-token"
    refresh.write_text(lab_idp.FIRST_REFRESH_TOKEN + "\n")
    idp = None if case.setup == "down" else lab_idp.LabIdp(
        ca, expired=case.setup == "expired").start()
    url = idp.url if idp else f"https://{lab_idp.IDP_ADDRESS}:9/token"  # nothing there
    argv = ["-D", rt.LOOP_DOMAIN, "--to", f"{rt.PROBE_LOCAL}@{rt.LOOP_DOMAIN}",
            "--mailbox", f"imaps://{rt.MONITOR_USER}@{rt.MAILBOX_HOST}",
            "--mailbox-auth", "oauth2", "--oauth2-token-url", url,
            "--oauth2-client-id", lab_idp.CLIENT_ID, "--oauth2-ca-file",
            tmp_path / "idp-ca.pem", "--oauth2-client-secret-file", secret,
            "--dns-server", lab_dns.server_arg, "--helo-name", "monitor.posture.test",
            "-t", f"{TIMEOUT:g}", *case.args, *(["-" + "v" * verbosity] if verbosity else [])]
    if case.setup == "revoked":
        argv += ["--oauth2-refresh-token-file", refresh]
    try:
        if idp:
            idp.mode = case.mode
            if case.setup == "revoked":
                idp.revoke()
        started = time.monotonic()
        run = run_main(main, argv)
        elapsed = time.monotonic() - started
    finally:
        if idp:
            idp.stop()
    where = f"{' '.join(map(str, argv))}:\n{run.output}"
    assert run.exitcode == EXIT[case.row.state], where
    assert run.first_line.startswith(f"MAIL_ROUNDTRIP {case.row.state} - "), where
    assert case.row.message in run.first_line, where
    check_says(SAYS, case.row.id, [(PLUGIN, said(PLUGIN, run.output))])
    assert "Traceback" not in run.output, where
    assert elapsed < TIMEOUT + MARGIN, f"{elapsed:.2f}s: {where}"
    for token in idp.tokens if idp else ():
        assert token not in run.output


def test_rows_are_well_formed():
    ids = [row.id for row in MATRIX]
    assert len(ids) == len(set(ids))
    for row in MATRIX:
        assert row.area in AREAS and row.state in EXIT and row.message
        assert row.id.startswith("oauth-") and row.plugins == PLUGIN
