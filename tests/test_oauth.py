"""OAuth 2.0 for the mailbox and --submit (check_mail_roundtrip): tokens from the lab IdP
(tests/lab/idp.py) through the family's bounded HTTPS, cached, rotated; the states of
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


# -- the plugin ------------------------------------------------------------------------


def run(lab_dns, idp_url, files, *args):
    return run_main(main, [
        "--dns-server", lab_dns.server_arg, "--helo-name", "monitor.posture.test",
        "-D", rt.LOOP_DOMAIN, "--to", f"{rt.PROBE_LOCAL}@{rt.LOOP_DOMAIN}",
        "--mailbox", f"imaps://{rt.MONITOR_USER}@{rt.MAILBOX_HOST}",
        "--mailbox-auth", "oauth2", "--oauth2-token-url", idp_url,
        "--oauth2-client-id", lab_idp.CLIENT_ID, "--oauth2-ca-file", files["ca"],
        "--oauth2-client-secret-file", files["secret"], "-t", "10", "-vvv", *args])


def test_plugin_revoked_grant_is_critical_reauthorise(lab_dns, idp, files):
    idp.revoke()
    result = run(lab_dns, idp.url, files, "--oauth2-refresh-token-file", files["refresh"])
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith(
        f"MAIL_ROUNDTRIP CRITICAL - OAuth: re-authorise imaps://{rt.MONITOR_USER}@"
        f"{rt.MAILBOX_HOST}:993/INBOX: token endpoint {lab_idp.IDP_ADDRESS}: invalid_grant: "
        "the grant was revoked"), result.first_line


def test_plugin_idp_down_is_the_unreachable_state(lab_dns, ca, files):
    url = f"https://{lab_idp.IDP_ADDRESS}:9/token"  # nothing listens there
    result = run(lab_dns, url, files, "--unreachable-state", "warning")
    assert result.exitcode == 1, result.output
    assert result.first_line.startswith(
        f"MAIL_ROUNDTRIP WARNING - OAuth for imaps://{rt.MONITOR_USER}@{rt.MAILBOX_HOST}:993"
        f"/INBOX: token endpoint {lab_idp.IDP_ADDRESS}: connect: connection refused")


def test_plugin_oauth_forced_on_a_password_only_server_is_critical(lab, lab_dns, idp, files):
    """The lab Dovecot offers PLAIN LOGIN CRAM-MD5: no OAuth mechanism to log in with."""
    result = run(lab_dns, idp.url, files, "--mailbox-ca-file", lab.ca_file)
    assert result.exitcode == 2, result.output
    assert result.first_line.startswith(
        f"MAIL_ROUNDTRIP CRITICAL - mailbox imaps://{rt.MONITOR_USER}@{rt.MAILBOX_HOST}:993"
        f"/INBOX: login as {rt.MONITOR_USER}: the server offers no OAUTHBEARER or XOAUTH2 "
        "(SASL: CRAM-MD5 LOGIN PLAIN)"), result.first_line
    for token in idp.tokens:
        assert token not in result.output


def test_plugin_oauth_options_need_an_oauth_mechanism(monkeypatch):
    monkeypatch.setenv("CHECK_MAILBOX_PASSWORD", "pw")
    result = run_main(main, ["-D", rt.LOOP_DOMAIN, "--to", "probe@loop.test", "--mailbox",
                             "imaps://m@mail.monitor.test", "--from", "m@monitor.test",
                             "--oauth2-client-id", "x"])
    assert result.exitcode == 3
    assert "--oauth2-client-id is for an OAuth mechanism (XOAUTH2, OAUTHBEARER)" \
        in result.output
