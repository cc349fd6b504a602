"""The lab's real web server: nginx serving MTA-STS policies on NGINX_ADDRESS:443.

One nginx, one server_name (SNI) vhost per lab domain of tests/lab/mtastslab.SITES
(`mta-sts.<label>.sts.test`), each serving `/.well-known/mta-sts.txt` as its Site says:
a policy with its Content-Type, a 301 redirect, a 404; with a certificate from the
nginx lab CA that names every policy host, or one for another name, or an expired one.
An unknown SNI name gets 421 from the default server.

The CA is the nginx lab's own (`ca_file`); the lab Postfix has another. A run that
checks both the policy host and the MX needs both: `ca_bundle(path, postfix.ca_file)`
writes one PEM file with the two.

Several pytest sessions share the instance like the lab NSD (tests/lab/sharedlock.py):
the first starts it, the last stops it; one killed outright leaves it running, and
the next session to start alone restarts it. Usage::

    with LabNginx() as web:
        ...web.ca_file...
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.lab.mtastslab import NGINX_ADDRESS, SITES, STS_DOMAIN
from tests.lab.sharedlock import SharedServer

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PORT = 443
POLICY_PATH = "/.well-known/mta-sts.txt"


def host_of(label: str) -> str:
    return f"mta-sts.{label}.{STS_DOMAIN}"


def ca_bundle(path: str | os.PathLike, *ca_files: str | os.PathLike) -> Path:
    """One PEM file holding every CA certificate of `ca_files` (for --ca-file)."""
    path = Path(path)
    path.write_bytes(b"".join(Path(f).read_bytes().rstrip(b"\n") + b"\n" for f in ca_files))
    return path


class LabNginx(SharedServer):
    address = NGINX_ADDRESS
    port = PORT

    def __init__(self, workdir: str | os.PathLike | None = None):
        from tests.lab.postfix import LAB_ROOT

        self.workdir = Path(workdir or LAB_ROOT / "nginx")
        self.process: subprocess.Popen | None = None
        super().__init__(Path(LAB_ROOT) / "nginx.lock")

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM) that issued the policy hosts' certificates."""
        return self.workdir / "ca.pem"

    @property
    def access_log(self) -> Path:
        return self.workdir / "access.log"

    def requests_since(self, mark: int = 0) -> list[str]:
        """Access log lines written after `mark` (a size from mark()), each
        `SNI Host "REQUEST" STATUS BYTES "USER-AGENT"`."""
        try:
            with open(self.access_log, "rb") as log:
                log.seek(mark)
                return log.read().decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return []

    def mark(self) -> int:
        try:
            return self.access_log.stat().st_size
        except FileNotFoundError:
            return 0

    # -- lifecycle (SharedServer: shared with concurrent sessions) -----------
    def _server(self) -> LabNginx:
        return self

    def _start_fresh(self) -> None:
        self._configure()
        self._start(10.0)

    def _joined(self) -> None:
        if _read(self.workdir / "config.version") != _config_version():
            raise RuntimeError(
                f"the lab nginx in {self.workdir}, started by another test session from "
                "another configuration, serves other sites: let that session end and "
                "run again")

    def _let_go(self) -> None:
        self.process = None

    # -- internals ---------------------------------------------------------
    def _pid(self) -> int | None:
        try:
            pid = int((self.workdir / "nginx.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        from tests.lab.postfix import _alive

        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if _alive(pid) and b"nginx" in cmdline else None

    def _is_up(self) -> bool:
        from tests.lab.postfix import _listening

        return self._pid() is not None and _listening(self.address, self.port)

    def _kill_leftover(self, wait: float = 10.0) -> None:
        from tests.lab.authdns import stop_process
        from tests.lab.postfix import _alive, _listening

        stop_process(self.process)
        self.process = None
        pid = self._pid()
        if pid:
            os.kill(pid, signal.SIGTERM)
            end = time.monotonic() + wait
            while _alive(pid) and time.monotonic() < end:
                time.sleep(0.02)
        end = time.monotonic() + wait
        while _listening(self.address, self.port) and time.monotonic() < end:
            time.sleep(0.02)

    def _configure(self) -> None:
        import datetime

        from tests.lab.certs import LabCA

        d = self.workdir
        if d.exists():
            shutil.rmtree(d)
        for sub in ("", "www", "tmp", "tls"):
            (d / sub).mkdir(parents=True, exist_ok=True)
            os.chmod(d / sub, 0o755)
        os.chmod(d.parent, 0o755)
        ca = LabCA("check_smtp_posture Lab Web CA")
        ca.write(d)
        now = datetime.datetime.now(datetime.timezone.utc)
        certs = {
            "good": ca.issue([host_of(label) for label in SITES]),
            "wronghost": ca.issue(["wrong.example.test"]),
            "expired": ca.issue([host_of(label) for label in SITES],
                                not_before=now - datetime.timedelta(days=60),
                                not_after=now - datetime.timedelta(days=1)),
        }
        for stem, issued in certs.items():
            issued.write(d / "tls", stem)
        servers = [_DEFAULT_SERVER.format(address=self.address, port=self.port, d=d)]
        for label, site in SITES.items():
            if site.redirect:
                location = f"return 301 {site.redirect};"
            elif site.status != 200:
                location = f"return {site.status};"
            else:
                body = d / "www" / f"{label}.txt"
                body.write_bytes(site.body)
                os.chmod(body, 0o644)
                media, _, params = site.content_type.partition(";")
                charset = params.partition("=")[2].strip()
                location = f"default_type {media.strip()}; alias {body};" + (
                    f" charset {charset}; charset_types {media.strip()};" if charset else "")
            servers.append(_SERVER.format(address=self.address, port=self.port, d=d,
                                          name=host_of(label), cert=site.cert,
                                          path=POLICY_PATH, location=location))
        (d / "nginx.conf").write_text(_CONF.format(d=d, servers="".join(servers)))
        (d / "config.version").write_text(_config_version())

    def _start(self, wait: float) -> None:
        from tests.lab.postfix import _listening

        conf = self.workdir / "nginx.conf"
        with open(self.workdir / "nginx.out", "wb") as out:
            self.process = subprocess.Popen(
                [NGINX, "-p", str(self.workdir), "-c", str(conf),
                 "-e", str(self.workdir / "error.log"), "-g", "daemon off;"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        end = time.monotonic() + wait
        while not _listening(self.address, self.port):
            if self.process.poll() is not None or time.monotonic() > end:
                self._kill_leftover()
                raise RuntimeError("lab nginx did not start: " + _read(self.workdir / "nginx.out")
                                   + _read(self.workdir / "error.log")[-2000:])
            time.sleep(0.02)


def _config_version() -> str:
    import hashlib

    text = repr((_CONF, _SERVER, _DEFAULT_SERVER, sorted(SITES.items())))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


_CONF = """\
pid {d}/nginx.pid;
error_log {d}/error.log notice;
worker_processes 1;
events {{
    worker_connections 256;
}}
http {{
    # SNI name, Host, request, status, body bytes, User-Agent: what a test asserts
    log_format lab '$ssl_server_name $host "$request" $status $body_bytes_sent '
                   '"$http_user_agent"';
    access_log {d}/access.log lab;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{ }}
    default_type application/octet-stream;
    server_tokens off;
    ssl_protocols TLSv1.2 TLSv1.3;
{servers}}}
"""

_DEFAULT_SERVER = """\
    server {{
        listen {address}:{port} ssl default_server;
        server_name _;
        ssl_certificate {d}/tls/wronghost.crt;
        ssl_certificate_key {d}/tls/wronghost.key;
        return 421;
    }}
"""

_SERVER = """\
    server {{
        listen {address}:{port} ssl;
        server_name {name};
        ssl_certificate {d}/tls/{cert}.crt;
        ssl_certificate_key {d}/tls/{cert}.key;
        location = {path} {{ {location} }}
    }}
"""
