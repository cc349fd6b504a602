"""The lab OAuth 2.0 authorisation server: a token endpoint (client-credentials and
refresh-token grants, RFC 6749) and an introspection endpoint (RFC 7662), over TLS with
a certificate of a lab CA, on IDP_ADDRESS (loopback only).

Standard library only (http.server): the server side needs nothing a library adds
for the plugin's tests, which read what it logged (`requests`: one entry per token
request) and change what it does (`revoke()`, `mode` for a hostile token endpoint:
garbage, huge, drip, redirect).

Access tokens carry their user and expiry and are signed (HMAC-SHA256) with a key, so
that any LabIdp holding the key can introspect them: the lab Dovecot's oauth2 passdb
asks the shared IdP (SHARED_PORT, started with Dovecot by tests/lab/postfix.py, run as
`python3 -m tests.lab.idp DIR`) about tokens a test's own LabIdp (an ephemeral port,
its own log and grants) issued with the lab key (`LabPostfix.idp_key`).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import secrets
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs

IDP_ADDRESS = "127.0.25.30"
IDP_HOST = "idp.oauth.test"
#: the port of the shared IdP that the lab Dovecot introspects tokens with
SHARED_PORT = 443
CLIENT_ID = "lab-monitor-app"
CLIENT_SECRET = "lab-client-secret-5f1c"
FIRST_REFRESH_TOKEN = "lab-refresh-token-0a9d"
TOKEN_LIFETIME = 3600
ACCESS_PREFIX = "lab-access-"


def issue_pem(ca, *, expired: bool = False) -> bytes:
    """Key and chain (PEM) of an IdP certificate from the LabCA `ca` (expired if asked)."""
    when = {}
    if expired:
        now = datetime.datetime.now(datetime.timezone.utc)
        when = {"not_before": now - datetime.timedelta(days=30),
                "not_after": now - datetime.timedelta(days=1)}
    cert = ca.issue([IDP_HOST], ip_addresses=[IDP_ADDRESS], **when)
    return cert.key_pem + cert.chain_pem


class LabIdp:
    def __init__(self, ca=None, port: int = 0, *, expired: bool = False,
                 key: bytes | None = None, pem: bytes | None = None):
        import tempfile

        self.key = key or secrets.token_bytes(32)
        self.requests: list = []  # (grant_type, client_id) of each token request
        self.tokens: list = []  # the access tokens issued
        self.refresh_tokens = {FIRST_REFRESH_TOKEN}
        self.codes: dict = {}  # authorisation code -> (PKCE challenge, redirect URI)
        self.mode = "normal"
        self.user = "monitor@monitor.test"
        self._server = ThreadingHTTPServer((IDP_ADDRESS, port), _Handler)
        self._server.idp = self
        self._server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        with tempfile.NamedTemporaryFile("wb", suffix=".pem") as f:
            f.write(pem or issue_pem(ca, expired=expired))
            f.flush()
            context.load_cert_chain(f.name)
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.url = f"https://{IDP_ADDRESS}:{self.port}/token"
        self.authorize_url = f"https://{IDP_ADDRESS}:{self.port}/authorize"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True)

    def start(self) -> LabIdp:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def revoke(self) -> None:
        self.refresh_tokens.clear()

    # -- tokens ----------------------------------------------------------------------
    def access_token(self, user: str, lifetime: int = TOKEN_LIFETIME) -> str:
        claims = json.dumps({"sub": user, "exp": int(time.time()) + lifetime,
                             "jti": secrets.token_hex(8)}).encode()
        body = base64.urlsafe_b64encode(claims).decode().rstrip("=")
        return f"{ACCESS_PREFIX}{body}.{self._sign(body)}"

    def introspect(self, token: str) -> dict:
        """RFC 7662: the token's user when its signature holds and it has not expired."""
        body, _, signature = token.removeprefix(ACCESS_PREFIX).rpartition(".")
        if not token.startswith(ACCESS_PREFIX) or not hmac.compare_digest(
                signature, self._sign(body)):
            return {"active": False}
        claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        if claims["exp"] <= time.time():
            return {"active": False}
        return {"active": True, "username": claims["sub"], "exp": claims["exp"]}

    def _sign(self, body: str) -> str:
        return hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()

    def grant(self, form: dict) -> tuple[int, dict]:
        grant = form.get("grant_type")
        self.requests.append((grant, form.get("client_id")))
        if form.get("client_id") != CLIENT_ID or (
                grant == "client_credentials" and form.get("client_secret") != CLIENT_SECRET):
            return 401, {"error": "invalid_client", "error_description": "unknown client"}
        reply = {"token_type": "Bearer", "expires_in": TOKEN_LIFETIME}
        if grant == "refresh_token":
            if form.get("refresh_token") not in self.refresh_tokens:
                return 400, {"error": "invalid_grant",
                             "error_description": "the grant was revoked"}
            self.refresh_tokens.discard(form["refresh_token"])  # rotation
            reply["refresh_token"] = "lab-refresh-" + secrets.token_hex(8)
            self.refresh_tokens.add(reply["refresh_token"])
        elif grant == "authorization_code":
            challenge, redirect_uri = self.codes.pop(form.get("code"), (None, None))
            verifier = form.get("code_verifier", "").encode()
            if challenge is None or form.get("redirect_uri") != redirect_uri or challenge != \
                    base64.urlsafe_b64encode(hashlib.sha256(verifier).digest()).rstrip(b"=") \
                    .decode():
                return 400, {"error": "invalid_grant", "error_description": "bad code"}
            reply["refresh_token"] = "lab-refresh-" + secrets.token_hex(8)
            self.refresh_tokens.add(reply["refresh_token"])
        elif grant != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        reply["access_token"] = self.access_token(self.user)
        self.tokens.append(reply["access_token"])
        return 200, reply


    def approve(self, query: dict) -> str:
        """The authorisation endpoint, approving at once (the person said yes): where
        it sends the browser back, with a code bound to the PKCE challenge (RFC 7636)."""
        from urllib.parse import urlencode, urlsplit

        redirect_uri = query.get("redirect_uri", "")
        if query.get("client_id") != CLIENT_ID or query.get("response_type") != "code" \
                or query.get("code_challenge_method") != "S256" \
                or urlsplit(redirect_uri).hostname != "127.0.0.1":
            raise ValueError("not an authorisation request of the lab client")
        code = "lab-code-" + secrets.token_hex(8)
        self.codes[code] = (query.get("code_challenge"), redirect_uri)
        return redirect_uri + "?" + urlencode({"code": code, "state": query.get("state", "")})


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        path, _, query = self.path.partition("?")
        if path != "/authorize":
            return self._json(404, {"error": "not found"})
        try:
            where = self.server.idp.approve({k: v[0] for k, v in parse_qs(query).items()})
        except ValueError as exc:
            return self._json(400, {"error": "invalid_request", "error_description": str(exc)})
        self.send_response(302)
        self.send_header("Location", where)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return None

    def do_POST(self):
        idp = self.server.idp
        length = min(int(self.headers.get("Content-Length") or 0), 65536)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if self.path == "/introspect":
            return self._json(200, idp.introspect(form.get("token", "")))
        mode = idp.mode
        if mode == "garbage":
            return self._raw(200, b'{"access_token": [1, 2', "application/json")
        if mode == "huge":
            return self._raw(200, b'{"pad": "' + b"x" * (1 << 20) + b'"}', "application/json")
        if mode == "redirect":
            self.send_response(302)
            self.send_header("Location", "https://elsewhere.example/token")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        if mode == "drip":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            for _ in range(1000):
                self.wfile.write(b" ")
                self.wfile.flush()
                time.sleep(0.05)
            return None
        status, body = idp.grant(form)
        return self._json(status, body)

    def _json(self, status: int, body: dict) -> None:
        self._raw(status, json.dumps(body).encode(), "application/json")

    def _raw(self, status: int, data: bytes, media: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:
            pass


def serve(directory: Path, pid_file: Path) -> None:
    """Run the shared IdP (SHARED_PORT) from `directory` (its key, idp.pem) as a daemon:
    once it listens, the process forks, writes the child's pid into `pid_file` and
    returns (as `master -w` does), so that tests/lab/postfix.py runs it as it runs
    Postfix."""
    import os

    idp = LabIdp(None, SHARED_PORT, key=(directory / "key").read_bytes(),
                 pem=(directory / "idp.pem").read_bytes())
    pid = os.fork()
    if pid:
        pid_file.write_text(f"{pid}\n")
        return
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    try:
        idp._server.serve_forever()
    finally:
        os._exit(0)


if __name__ == "__main__":
    import sys

    serve(Path(sys.argv[1]), Path(sys.argv[2]))
