"""OAuth 2.0 for the mailbox and --submit (check_mail_roundtrip): tokens from the lab IdP
(tests/lab/idp.py) through the family's bounded HTTPS, cached, rotated; a real round
trip whose IMAP/POP3 login and submission Dovecot checks with the IdP; the states of
an IdP that refuses or is gone; no secret in any output. A hostile token endpoint is
in the fault matrix (tests/test_faults_oauth.py)."""

from __future__ import annotations

import os
import stat
import time

import pytest

from check_smtp_posture import oauth
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.plugins.check_mail_roundtrip import main
from check_smtp_posture.secrets import Redactor
from tests.conftest import run_main
from tests.lab import idp as lab_idp
from tests.lab import roundtriplab as rt


@pytest.fixture
def ca(tmp_path):
    from tests.lab.certs import LabCA

    ca = LabCA()
    ca.write(tmp_path, "idp-ca.pem")
    return ca


@pytest.fixture
def idp(ca):
    server = lab_idp.LabIdp(ca).start()
    yield server
    server.stop()


@pytest.fixture
def files(tmp_path):
    secret = tmp_path / "client-secret"
    secret.write_text(lab_idp.CLIENT_SECRET + "\n")
    refresh = tmp_path / "refresh-token"
    refresh.write_text(lab_idp.FIRST_REFRESH_TOKEN + "\n")
    return {"secret": secret, "refresh": refresh, "cache": tmp_path / "token-cache.json",
            "ca": tmp_path / "idp-ca.pem"}


def settings(idp, files, *, refresh=False, cache=True):
    return oauth.OAuthSettings(idp.url, lab_idp.CLIENT_ID, lab_idp.CLIENT_SECRET, "mail",
                               str(files["refresh"]) if refresh else None,
                               str(files["cache"]) if cache else None, str(files["ca"]))


def fetch(conf, timeout=5.0):
    return oauth.access_token(conf, Deadline(timeout), lambda host: host, Redactor())


def test_client_credentials_token_is_cached_and_reused(idp, files):
    token, cached = fetch(settings(idp, files))
    again, cached_again = fetch(settings(idp, files))
    assert (cached, cached_again) == (False, True)
    assert again == token and idp.tokens == [token]
    assert idp.requests == [("client_credentials", lab_idp.CLIENT_ID)]
    assert stat.S_IMODE(os.stat(files["cache"]).st_mode) == 0o600


def test_an_expiring_cached_token_is_fetched_anew(idp, files, monkeypatch):
    fetch(settings(idp, files))
    monkeypatch.setattr(time, "time", lambda: 10**10)
    fetch(settings(idp, files))
    assert len(idp.requests) == 2


def test_a_rotated_refresh_token_is_kept(idp, files):
    fetch(settings(idp, files, refresh=True, cache=False))
    kept = files["refresh"].read_text().strip()
    assert kept != lab_idp.FIRST_REFRESH_TOKEN and kept in idp.refresh_tokens
    assert stat.S_IMODE(os.stat(files["refresh"]).st_mode) == 0o600
    fetch(settings(idp, files, refresh=True, cache=False))  # the rotated one works
    assert [g for g, _ in idp.requests] == ["refresh_token", "refresh_token"]


def test_a_revoked_grant_means_reauthorise(idp, files):
    idp.revoke()
    with pytest.raises(oauth.OAuthError) as caught:
        fetch(settings(idp, files, refresh=True))
    assert caught.value.kind == oauth.REAUTHORISE
    assert "invalid_grant: the grant was revoked" in caught.value.detail


# -- the plugin, through the lab: Dovecot's oauth2 passdb asks the shared lab IdP ------


@pytest.fixture
def dovecot_idp(lab, ca):
    """A token endpoint of its own (its own log and grants) whose tokens the lab Dovecot
    accepts: it signs them with the key of the shared IdP that Dovecot asks."""
    server = lab_idp.LabIdp(ca, key=lab.idp_key).start()
    yield server
    server.stop()


IMAPS = f"imaps://{rt.MONITOR_USER.replace('@', '%40')}@{rt.MAILBOX_HOST}/INBOX"
POP3S = f"pop3s://{rt.MONITOR_USER.replace('@', '%40')}@{rt.MAILBOX_HOST}"


def run(lab_dns, idp_url, files, *args, mailbox=f"imaps://{rt.MONITOR_USER}@{rt.MAILBOX_HOST}"):
    return run_main(main, [
        "--dns-server", lab_dns.server_arg, "--helo-name", "monitor.posture.test",
        "-D", rt.LOOP_DOMAIN, "--to", f"{rt.PROBE_LOCAL}@{rt.LOOP_DOMAIN}",
        "--mailbox", mailbox, "--oauth2-token-url", idp_url,
        "--oauth2-client-id", lab_idp.CLIENT_ID, "--oauth2-ca-file", files["ca"],
        "--oauth2-client-secret-file", files["secret"], "-t", "20", "-vvv", *args])


def submit(lab, mechanism):
    return ("--submit", "submit.posture.test:587", "--sasl-user", rt.MONITOR_USER,
            "--sasl-mechanism", mechanism, "--ca-file", lab.ca_file)


def assert_no_secret(output, idp, *more):
    for secret in (*idp.tokens, lab_idp.CLIENT_SECRET, lab_idp.FIRST_REFRESH_TOKEN,
                   *idp.refresh_tokens, *more):
        assert secret not in output


def test_roundtrip_by_client_credentials_token_cached_for_the_next_run(lab, lab_dns,
                                                                       dovecot_idp, files):
    """IMAPS login and submission both by OAuth; the second run takes the cached token:
    the IdP sees one token request for two runs."""
    args = ("--mailbox-auth", "oauth2", "--mailbox-ca-file", lab.ca_file,
            "--oauth2-token-cache", files["cache"], *submit(lab, "XOAUTH2"))
    first = run(lab_dns, dovecot_idp.url, files, *args, mailbox=IMAPS)
    assert first.exitcode == 0, first.output
    assert first.first_line.startswith("MAIL_ROUNDTRIP OK - probe back through "
                                       "submit.posture.test (submission: no per-MX split) in ")
    assert f"AUTHENTICATE OAUTHBEARER {rt.MONITOR_USER} ********" in first.output
    assert "AUTH XOAUTH2 ****" in first.output
    assert "OAuth: access token from token endpoint 127.0.25.30 (not shown)" in first.output
    second = run(lab_dns, dovecot_idp.url, files, *args, mailbox=IMAPS)
    assert second.exitcode == 0, second.output
    assert "OAuth: access token from the cache (not shown)" in second.output
    assert dovecot_idp.requests == [("client_credentials", lab_idp.CLIENT_ID)]
    assert len(dovecot_idp.tokens) == 1
    assert_no_secret(first.output + second.output, dovecot_idp)


def test_roundtrip_by_refresh_token_over_pop3(lab, lab_dns, dovecot_idp, files):
    """POP3S by XOAUTH2 (forced) and submission by OAUTHBEARER, with a refresh token the
    IdP rotates: the new one is kept, the old one is gone, neither is shown."""
    result = run(lab_dns, dovecot_idp.url, files, "--mailbox-auth", "xoauth2", "--mailbox-ca-file",
                 lab.ca_file, "--oauth2-refresh-token-file", files["refresh"],
                 *submit(lab, "OAUTHBEARER"), mailbox=POP3S)
    assert result.exitcode == 0, result.output
    assert f"AUTH XOAUTH2 {rt.MONITOR_USER} ********: logged in" in result.output
    assert "AUTH OAUTHBEARER ****" in result.output
    assert dovecot_idp.requests == [("refresh_token", lab_idp.CLIENT_ID)]
    assert files["refresh"].read_text().strip() in dovecot_idp.refresh_tokens
    assert_no_secret(result.output, dovecot_idp)


def test_a_token_dovecot_cannot_introspect_is_a_refused_login(lab, lab_dns, ca, files):
    """A token signed by another IdP: Dovecot's introspection says inactive."""
    stranger = lab_idp.LabIdp(ca).start()  # a key of its own, not the lab's
    try:
        result = run(lab_dns, stranger.url, files, "--mailbox-auth", "oauth2",
                     "--mailbox-ca-file", lab.ca_file, mailbox=IMAPS)
    finally:
        stranger.stop()
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith(
        f"MAIL_ROUNDTRIP CRITICAL - mailbox imaps://{rt.MONITOR_USER}@{rt.MAILBOX_HOST}:993"
        f"/INBOX: OAUTHBEARER login as {rt.MONITOR_USER} refused: "), result.first_line
    assert_no_secret(result.output, stranger)


def test_plugin_revoked_grant_is_critical_reauthorise(lab_dns, idp, files):
    idp.revoke()
    result = run(lab_dns, idp.url, files, "--mailbox-auth", "oauth2",
                 "--oauth2-refresh-token-file", files["refresh"])
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith(
        f"MAIL_ROUNDTRIP CRITICAL - OAuth: re-authorise imaps://{rt.MONITOR_USER}@"
        f"{rt.MAILBOX_HOST}:993/INBOX: token endpoint {lab_idp.IDP_ADDRESS}: invalid_grant: "
        "the grant was revoked"), result.first_line
    assert_no_secret(result.output, idp)


def test_plugin_idp_down_is_the_unreachable_state(lab_dns, ca, files):
    url = f"https://{lab_idp.IDP_ADDRESS}:9/token"  # nothing listens there
    result = run(lab_dns, url, files, "--mailbox-auth", "oauth2",
                 "--unreachable-state", "warning")
    assert result.exitcode == 1, result.output
    assert result.first_line.startswith(
        f"MAIL_ROUNDTRIP WARNING - OAuth for imaps://{rt.MONITOR_USER}@{rt.MAILBOX_HOST}:993"
        f"/INBOX: token endpoint {lab_idp.IDP_ADDRESS}: connect: connection refused")
    assert lab_idp.CLIENT_SECRET not in result.output


def test_plugin_oauth_options_need_an_oauth_mechanism(monkeypatch):
    monkeypatch.setenv("CHECK_MAILBOX_PASSWORD", "pw")
    result = run_main(main, ["-D", rt.LOOP_DOMAIN, "--to", "probe@loop.test", "--mailbox",
                             "imaps://m@mail.monitor.test", "--from", "m@monitor.test",
                             "--oauth2-client-id", "x"])
    assert result.exitcode == 3
    assert "--oauth2-client-id is for an OAuth mechanism (XOAUTH2, OAUTHBEARER)" \
        in result.output


# -- check_smtp_phases: the same token code (oauth.token_for_run) for its SASL ----------


def phases(files, idp_url, mechanism, *args):
    from check_smtp_posture.plugins import check_smtp_phases

    return run_main(check_smtp_phases.main, [
        "-H", "127.0.25.3", "-p", "587", "--servername", "submit.posture.test",
        "--sasl-user", rt.MONITOR_USER, "--sasl-mechanism", mechanism,
        "--oauth2-token-url", idp_url, "--oauth2-client-id", lab_idp.CLIENT_ID,
        "--oauth2-ca-file", files["ca"], "--oauth2-client-secret-file", files["secret"],
        "-t", "10", *args])


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_smtp_phases_authenticates_with_a_token(lab, dovecot_idp, files, mechanism):
    result = phases(files, dovecot_idp.url, mechanism, "--ca-file", lab.ca_file,
                    "--oauth2-token-cache", files["cache"], "-vvv")
    assert result.exitcode == 0, result.output
    assert f", AUTH {mechanism} ok, " in result.first_line, result.first_line
    assert f"AUTH {mechanism} ****" in result.output
    assert "OAuth: access token from token endpoint 127.0.25.30 (not shown)" in result.output
    assert_no_secret(result.output, dovecot_idp)


def test_oauth_forced_on_a_password_only_server_is_critical(lab, dovecot_idp, files):
    """authfirst.posture.test offers PLAIN, LOGIN and CRAM-MD5 only (tests/lab/postfix.py)."""
    from check_smtp_posture.plugins import check_smtp_phases

    result = run_main(check_smtp_phases.main, [
        "-H", "127.0.25.4", "--servername", "authfirst.posture.test", "--ca-file", lab.ca_file,
        "--sasl-user", rt.MONITOR_USER, "--sasl-mechanism", "XOAUTH2",
        "--oauth2-token-url", dovecot_idp.url, "--oauth2-client-id", lab_idp.CLIENT_ID,
        "--oauth2-ca-file", files["ca"], "--oauth2-client-secret-file", files["secret"],
        "-t", "10", "-vvv"])
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith(
        "SMTP_PHASES CRITICAL - authfirst.posture.test[127.0.25.4] auth: XOAUTH2 not offered; "
        "authfirst.posture.test[127.0.25.4] offers AUTH (PLAIN LOGIN CRAM-MD5) before STARTTLS"
        " | "), result.first_line
    assert_no_secret(result.output, dovecot_idp)


def test_smtp_phases_idp_down_connects_nowhere(ca, files):
    result = phases(files, f"https://{lab_idp.IDP_ADDRESS}:9/token", "XOAUTH2",
                    "--unreachable-state", "unknown")
    assert result.exitcode == 3, result.output
    assert result.first_line.startswith(
        f"SMTP_PHASES UNKNOWN - OAuth for {rt.MONITOR_USER}: token endpoint "
        f"{lab_idp.IDP_ADDRESS}: connect: connection refused"), result.first_line


@pytest.mark.parametrize(("args", "message"), [
    (("--sasl-password-file", "/etc/hostname"),
     "--sasl-mechanism XOAUTH2 sends a token, not a password"),
    (("--oauth2-tenant", "example.onmicrosoft.com"), "argument --oauth2-tenant: not allowed "
     "with argument --oauth2-token-url"),
])
def test_smtp_phases_oauth_usage_errors(files, args, message):
    result = phases(files, "https://idp.example/token", "XOAUTH2", *args)
    assert result.exitcode == 3
    assert message in result.output, result.output


def test_smtp_phases_oauth_options_need_an_oauth_mechanism(monkeypatch, files):
    monkeypatch.setenv("CHECK_SMTP_PASSWORD", "pw")
    result = phases(files, "https://idp.example/token", "PLAIN")
    assert result.exitcode == 3
    assert "--oauth2-token-url is for an OAuth mechanism (XOAUTH2, OAUTHBEARER)" \
        in result.output, result.output


# -- check_mail_roundtrip --oauth2-authorize: the one-time grant that gives the refresh token


def test_authorize_stores_a_refresh_token_that_then_works(idp, files, tmp_path):
    """Authorisation code with PKCE on a loopback redirect: the URL printed is followed
    (urllib stands in for the browser; the lab IdP approves at once), the refresh token
    lands in the file, mode 0600, unprinted, and the next grant takes it."""
    import ssl
    import subprocess
    import sys
    import urllib.request

    stored = tmp_path / "new-refresh-token"
    proc = subprocess.Popen(
        [sys.executable, "-m", "check_smtp_posture.plugins.check_mail_roundtrip",
         "--oauth2-authorize", idp.authorize_url, "--oauth2-token-url", idp.url,
         "--oauth2-client-id", lab_idp.CLIENT_ID, "--oauth2-ca-file", str(files["ca"]),
         "--oauth2-scope", "mail offline_access", "--oauth2-refresh-token-file", str(stored),
         "-t", "20"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        said = [proc.stdout.readline(), proc.stdout.readline()]
        assert said[0] == "Open this URL in a browser on this machine and sign in:\n", said
        assert said[1].startswith(idp.authorize_url + "?"), said
        assert "code_challenge_method=S256" in said[1] and "redirect_uri=http%3A%2F%2F127.0.0.1"\
            in said[1]
        browser = ssl.create_default_context(cafile=str(files["ca"]))
        with urllib.request.urlopen(said[1].strip(), context=browser, timeout=10) as page:
            assert b"received" in page.read()
        rest, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, said + [rest]
    assert rest == f"Authorised: the refresh token is in {stored} (mode 0600).\n"
    token = stored.read_text().strip()
    assert token in idp.refresh_tokens and token not in "".join(said) + rest
    assert stat.S_IMODE(os.stat(stored).st_mode) == 0o600
    assert idp.requests == [("authorization_code", lab_idp.CLIENT_ID)]
    files["refresh"] = stored
    fetch(settings(idp, files, refresh=True, cache=False))
    assert [g for g, _ in idp.requests] == ["authorization_code", "refresh_token"]


@pytest.mark.parametrize(("args", "message"), [
    ((), "--oauth2-authorize: the authorisation endpoint '': the token endpoint is an "
         "https:// URL"),
    (("https://idp.example/authorize",), "--oauth2-authorize needs "
     "--oauth2-refresh-token-file FILE"),
])
def test_authorize_usage_errors(args, message):
    result = run_main(main, ["--oauth2-authorize", *args, "--oauth2-token-url",
                             "https://idp.example/token", "--oauth2-client-id", "x"])
    assert result.exitcode == 3
    assert message in result.output, result.output


@pytest.mark.slow
def test_authorize_without_a_browser_ends_within_t(idp, files, tmp_path):
    started = time.monotonic()
    result = run_main(main, ["--oauth2-authorize", idp.authorize_url, "--oauth2-token-url",
                             idp.url, "--oauth2-client-id", lab_idp.CLIENT_ID,
                             "--oauth2-ca-file", files["ca"], "--oauth2-refresh-token-file",
                             tmp_path / "never", "-t", "1"])
    assert time.monotonic() - started < 1.5
    assert result.exitcode == 2
    assert result.output.splitlines()[-1] == \
        "OAuth authorisation failed: no answer from the browser in time"
    assert idp.requests == []
