"""OAuth 2.0 access tokens for the SASL OAuth mechanisms (sasl.py): a client-credentials
grant (a Microsoft Entra ID app with IMAP.AccessAsApp, POP.AccessAsApp,
SMTP.SendAsApp) or a refresh-token grant (any RFC 6749 IdP: Google, Entra
delegated, Keycloak), cached between runs.

oauthlib writes the token requests and reads the replies (errors included);
the family's bounded HTTPS (https.post_form) carries them, to an address the
family's DNS layer found, with the IdP's certificate verified and the deadline
of the run. oauthlib is an optional extra (`[oauth]`), imported only here, and
this module only when an OAuth option is used.

The access token is kept in a cache file (mode 0600, locked while the token is
fetched, so that runs at once ask once) until EXPIRY_MARGIN seconds before it
expires. A refresh token the IdP rotates is written back atomically. Failures
are OAuthErrors whose `kind` says what the plugin reports: UNREACHABLE (the IdP
cannot be reached: --unreachable-state), REAUTHORISE (the grant, the client or
the consent is gone: a person must act), FAILED (anything else the IdP did).
Every secret (client secret, refresh token, access token) goes to the caller's
Redactor before anything of the IdP's is shown.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field

UNREACHABLE, REAUTHORISE, FAILED = "unreachable", "reauthorise", "failed"
#: a cached token is used until this many seconds before it expires
EXPIRY_MARGIN = 60
#: a token response larger than this is no token response
BODY_LIMIT = 64 * 1024
#: RFC 6749 5.2 and OpenID Connect errors that only a person can mend
REAUTHORISE_ERRORS = frozenset({"invalid_grant", "invalid_client", "unauthorized_client",
                                "consent_required", "interaction_required", "login_required"})
#: the token endpoint of a Microsoft Entra ID tenant (--oauth2-tenant)
ENTRA_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
#: ... and its authorisation endpoint (--oauth2-authorize)
ENTRA_AUTHORIZE_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize"


class OAuthError(Exception):
    """No access token; `kind` is UNREACHABLE, REAUTHORISE or FAILED, `detail` one line."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class OAuthSettings:
    token_url: str
    client_id: str
    client_secret: str | None = field(repr=False)
    scope: str | None
    refresh_token_file: str | None  # None: the client-credentials grant
    cache_file: str | None
    ca_file: str | None

    @property
    def host(self) -> str:
        from urllib.parse import urlsplit

        return urlsplit(self.token_url).hostname or ""


def check_token_url(text: str) -> str:
    """`text` when it is an https:// URL with a host; ValueError with the reason."""
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{text!r}: bad port") from None
    if parts.scheme != "https" or not parts.hostname or port == 0:
        raise ValueError(f"{text!r}: the token endpoint is an https:// URL")
    if parts.username or parts.password or parts.fragment:
        raise ValueError(f"{text!r}: no user, password or fragment in a token endpoint URL")
    return text


def access_token(settings: OAuthSettings, deadline, resolve, redact) -> tuple[str, bool]:
    """(access token, whether it came from the cache); raises OAuthError.

    `resolve(host)` gives the address to connect to (or raises OAuthError);
    `redact` (secrets.Redactor) learns every secret before any is sent.
    """
    from check_smtp_posture.nagios.statefile import StateFile

    redact.add(settings.client_secret)
    if settings.cache_file is None or not _private(settings.cache_file):
        return _fetch(settings, deadline, resolve, redact)[0], False
    key = _cache_key(settings)
    with StateFile(settings.cache_file, deadline) as state:
        now = time.time()
        entry = state.data.get(key)
        if isinstance(entry, dict) and isinstance(entry.get("access_token"), str) \
                and isinstance(entry.get("expires_at"), (int, float)) \
                and entry["expires_at"] - EXPIRY_MARGIN > now:
            redact.add(entry["access_token"])
            return entry["access_token"], True
        token, expires_at = _fetch(settings, deadline, resolve, redact)
        for old in [k for k, v in state.data.items()
                    if not isinstance(v, dict) or not isinstance(v.get("expires_at"), (int, float))
                    or v["expires_at"] < now]:
            del state.data[old]
        if expires_at is not None and state.usable:
            state.data[key] = {"access_token": token, "expires_at": expires_at}
    return token, False


def token_for_run(settings: OAuthSettings, options, deadline) -> tuple[str, bool]:
    """access_token() for a plugin run: the token endpoint's name resolved by the
    family's DNS layer with the run's `options` (--dns-server, -4/-6: cli.dns_client),
    only when the cache has no token. Every plugin that sends a token gets it here."""
    from check_smtp_posture.secrets import Redactor

    return access_token(settings, deadline, run_resolver(options, deadline), Redactor())


def run_resolver(options, deadline):
    """resolve(host) -> the address to connect to, by the family's DNS layer with the
    run's `options`; OAuthError (UNREACHABLE) when the name has none."""
    from check_smtp_posture import targets
    from check_smtp_posture.nagios import cli
    from check_smtp_posture.names import is_ip_literal

    def resolve(host: str) -> str:
        if is_ip_literal(host):
            return host.strip("[]")
        found = targets.resolve_hosts(cli.dns_client(options, deadline), [host],
                                      family=options.family)[0]
        if not found.addresses:
            problem = found.targets[0].describe_problem() if found.targets else "no address"
            raise OAuthError(UNREACHABLE, f"token endpoint {host}: {problem}")
        return found.addresses[0]

    return resolve


def transcript_line(settings: OAuthSettings, cached: bool) -> str:
    """What -vvv says of the run's token (never the token)."""
    return "OAuth: access token " + ("from the cache" if cached else
                                     f"from token endpoint {settings.host}") + " (not shown)"


def _private(path: str) -> bool:
    """Make the cache file (if need be) readable by its owner only; False when it cannot
    be (the run then asks the IdP without a cache)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_RDONLY | os.O_NOFOLLOW, 0o600)
    except OSError:
        return False
    try:
        os.fchmod(fd, 0o600)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _cache_key(settings: OAuthSettings) -> str:
    """What the cached token was granted for: not a secret, so hashed only to be short."""
    what = "\0".join((settings.token_url, settings.client_id, settings.scope or "",
                      os.path.abspath(settings.refresh_token_file or "")))
    return hashlib.sha256(what.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _fetch(settings: OAuthSettings, deadline, resolve, redact) -> tuple[str, float | None]:
    """A fresh access token from the token endpoint, and when it expires (epoch, or None)."""
    from oauthlib.oauth2 import BackendApplicationClient, WebApplicationClient

    refresh = None
    if settings.refresh_token_file is not None:
        refresh = read_refresh_token(settings.refresh_token_file)
        redact.add(refresh)
        client = WebApplicationClient(settings.client_id, refresh_token=refresh)
        form = client.prepare_refresh_body(client_id=settings.client_id,
                                           client_secret=settings.client_secret,
                                           scope=settings.scope or None)
    else:
        client = BackendApplicationClient(settings.client_id)
        form = client.prepare_request_body(include_client_id=True,
                                           client_secret=settings.client_secret,
                                           scope=settings.scope or None)
    token = _token_request(settings, client, form, deadline, resolve, redact)
    access = token["access_token"]
    rotated = token.get("refresh_token")
    if refresh is not None and isinstance(rotated, str) and rotated and rotated != refresh:
        redact.add(rotated)
        store_refresh_token(settings.refresh_token_file, rotated)
    expires = token.get("expires_at")
    return access, float(expires) if isinstance(expires, (int, float)) else None


def _token_request(settings: OAuthSettings, client, form: str, deadline, resolve,
                   redact) -> dict:
    """POST `form` to the token endpoint; the token response (oauthlib's), its
    access token checked and, like any refresh token in it, known to `redact`."""
    from urllib.parse import urlsplit

    from oauthlib.oauth2 import OAuth2Error

    from check_smtp_posture import failures, https
    from check_smtp_posture.sanitize import one_line
    from check_smtp_posture.tls import NoTrustAnchors, verified_context

    parts = urlsplit(settings.token_url)
    host = parts.hostname
    where = f"token endpoint {host}"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    address = resolve(host)
    try:
        context = verified_context(settings.ca_file)
    except NoTrustAnchors as exc:
        raise OAuthError(FAILED, f"{where}: certificate untrusted ({exc})") from None
    try:
        response = https.post_form(address, parts.port or 443, host, path, form, deadline,
                                   limit=BODY_LIMIT, context_factory=lambda: context)
    except https.HttpsError as exc:
        kind = UNREACHABLE if exc.kind in failures.UNREACHED else FAILED
        raise OAuthError(kind, f"{where}: {exc.phase}: {redact(exc.detail)}") from None
    status = f"HTTP {response.status}"
    if response.truncated:
        raise OAuthError(FAILED, f"{where}: {status}: the response goes on past "
                                 f"{BODY_LIMIT // 1024} KiB")
    if 300 <= response.status < 400:
        raise OAuthError(FAILED, f"{where}: {status}: redirects (not followed) to "
                                 f"{one_line(redact(response.header('location') or '?'), 80)}")
    try:
        token = client.parse_request_body_response(response.body.decode("utf-8", "replace"))
    except OAuth2Error as exc:
        said = one_line(redact(f"{exc.error}: {exc.description or ''}".rstrip(": ")), 120)
        if exc.error in REAUTHORISE_ERRORS:
            raise OAuthError(REAUTHORISE, f"{where}: {said}") from None
        if exc.error == "missing_token":
            said = "no access token in the response"
        raise OAuthError(FAILED, f"{where}: {status}: {said}") from None
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # JSON, but no token's
        raise OAuthError(FAILED, f"{where}: {status}: not a token response "
                                 f"({type(exc).__name__})") from None
    access = token.get("access_token")
    if not isinstance(access, str) or not access:
        raise OAuthError(FAILED, f"{where}: {status}: no access token in the response")
    redact.add(access)
    if isinstance(token.get("refresh_token"), str):
        redact.add(token["refresh_token"])
    return token


def authorize(settings: OAuthSettings, auth_url: str, deadline, resolve, redact,
              announce) -> None:
    """The one-time authorisation-code grant with PKCE (RFC 7636) on a loopback
    redirect (RFC 8252): `announce(url)` tells the person which URL to open; the
    browser comes back to 127.0.0.1 with the code, which is exchanged for tokens;
    the refresh token goes into settings.refresh_token_file (mode 0600). Waits
    until the deadline at most; raises OAuthError."""
    import secrets
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from urllib.parse import parse_qs, urlsplit

    from oauthlib.oauth2 import WebApplicationClient

    from check_smtp_posture.sanitize import one_line

    client = WebApplicationClient(settings.client_id)
    verifier = client.create_code_verifier(64)
    state = secrets.token_urlsafe(16)
    back: list = []

    class Redirect(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            if "state=" not in self.path:  # not the IdP's redirect (a favicon, a stray)
                self.send_error(404)
                return
            back.append(self.path)
            text = b"check_smtp_posture: received; the terminal says what came of it.\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args):  # nothing but the plugin's own output
            pass

    server = HTTPServer(("127.0.0.1", 0), Redirect)
    try:
        redirect_uri = f"http://127.0.0.1:{server.server_address[1]}/"
        announce(client.prepare_request_uri(
            auth_url, redirect_uri=redirect_uri, scope=settings.scope or None, state=state,
            code_challenge=client.create_code_challenge(verifier, "S256"),
            code_challenge_method="S256"))
        while not back:
            if deadline.remaining() <= 0:
                raise OAuthError(UNREACHABLE, "no answer from the browser in time")
            server.timeout = deadline.remaining()
            server.handle_request()
    finally:
        server.server_close()
    # RFC 6749 4.1.2 read here: oauthlib's parser refuses the http:// of a loopback
    # redirect, which RFC 8252 7.3 prescribes
    query = {k: v[0] for k, v in parse_qs(urlsplit(back[0]).query).items()}
    if query.get("state") != state:
        raise OAuthError(FAILED, "the browser came back without this request's state")
    if "code" not in query:
        said = one_line(f"{query.get('error', '?')}: {query.get('error_description', '')}"
                        .rstrip(": "), 120)
        raise OAuthError(REAUTHORISE, f"authorisation refused: {said}")
    code = query["code"]
    form = client.prepare_request_body(code=code, redirect_uri=redirect_uri,
                                       code_verifier=verifier, include_client_id=True,
                                       client_secret=settings.client_secret)
    token = _token_request(settings, client, form, deadline, resolve, redact)
    refresh = token.get("refresh_token")
    if not isinstance(refresh, str) or not refresh:
        raise OAuthError(FAILED, "the token endpoint gave no refresh token (offline access "
                                 "not granted? ask for the offline_access scope)")
    store_refresh_token(settings.refresh_token_file, refresh)


def read_refresh_token(path: str) -> str:
    """The refresh token in `path` (its first line); OAuthError when there is none."""
    from check_smtp_posture.secrets import SecretError, first_line

    try:
        return first_line(path, "refresh token file")
    except SecretError as exc:
        raise OAuthError(REAUTHORISE, f"no refresh token: {exc}") from None


def store_refresh_token(path: str, token: str) -> None:
    """Write `token` into `path` (mode 0600) atomically: a crash leaves the old or the new."""
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".refresh-token-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(token + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise
    except OSError as exc:
        raise OAuthError(FAILED, f"cannot keep the rotated refresh token in {path}: "
                                 f"{exc.strerror or exc}") from None
