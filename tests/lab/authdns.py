"""A real authoritative DNS server (NSD) serving lab zones on a loopback address."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

NSD = shutil.which("nsd") or "/usr/sbin/nsd"
NSD_CHECKZONE = shutil.which("nsd-checkzone") or "/usr/sbin/nsd-checkzone"


class LabDns:
    """An NSD instance with its own directory, zones and listening address.

    Usage::

        dns = LabDns("127.0.25.53", 53)
        dns.add_zone("lab.test", '''
            @   MX 10 mx1
            mx1 A 127.0.25.1
        ''')
        dns.start()
        ...
        dns.stop()

    Zone text gets a default $ORIGIN, $TTL, SOA and NS prepended unless it
    has its own SOA. Several instances may run at once on different
    addresses (each test module can have its own).
    """

    def __init__(self, address: str = "127.0.25.53", port: int = 53,
                 workdir: str | os.PathLike | None = None):
        self.address = address
        self.port = port
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="labdns-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.zones: dict[str, str] = {}
        self.process: subprocess.Popen | None = None

    @property
    def server_arg(self) -> str:
        """The value for a plugin's --dns-server option."""
        if ":" in self.address:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"

    def add_zone(self, origin: str, body: str) -> None:
        origin = origin.rstrip(".") + "."
        body = textwrap.dedent(body).strip("\n") + "\n"
        if " SOA " not in body and "\tSOA\t" not in body:
            body = (f"$ORIGIN {origin}\n$TTL 300\n"
                    f"@ IN SOA ns.{origin} hostmaster.{origin} 1 3600 600 86400 300\n"
                    f"@ IN NS ns.{origin}\n"
                    f"ns IN A {self.address if ':' not in self.address else '127.0.25.53'}\n"
                    + body)
        self.zones[origin] = body

    def _write_config(self) -> Path:
        zone_dir = self.workdir / "zones"
        zone_dir.mkdir(exist_ok=True)
        parts = [textwrap.dedent(f"""\
            server:
                ip-address: {self.address}@{self.port}
                port: {self.port}
                username: ""
                chroot: ""
                zonesdir: "{zone_dir}"
                pidfile: "{self.workdir}/nsd.pid"
                xfrdfile: "{self.workdir}/xfrd.state"
                zonelistfile: "{self.workdir}/zone.list"
                database: ""
                logfile: "{self.workdir}/nsd.log"
                server-count: 1
                tcp-count: 64
                verbosity: 1
                hide-version: yes
                refuse-any: no
                reuseport: no
            remote-control:
                control-enable: no
            """)]
        for origin, body in self.zones.items():
            fname = origin.rstrip(".") or "root"
            path = zone_dir / f"{fname}.zone"
            path.write_text(body)
            check = subprocess.run([NSD_CHECKZONE, origin, str(path)],
                                   capture_output=True, text=True)
            if check.returncode != 0:
                raise RuntimeError(f"zone {origin} rejected: {check.stdout}{check.stderr}")
            parts.append(f'zone:\n    name: "{origin}"\n    zonefile: "{path}"\n')
        conf = self.workdir / "nsd.conf"
        conf.write_text("".join(parts))
        return conf

    def start(self, wait: float = 10.0) -> LabDns:
        conf = self._write_config()
        with open(self.workdir / "nsd.stderr", "wb") as stderr:
            self.process = subprocess.Popen([NSD, "-d", "-c", str(conf)],
                                            stdout=subprocess.DEVNULL, stderr=stderr)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError("nsd exited: " + (self.workdir / "nsd.stderr").read_text()
                                   + _read(self.workdir / "nsd.log"))
            if self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("nsd did not answer in time: " + _read(self.workdir / "nsd.log"))

    def _answers(self) -> bool:
        """True once the server answers a query for its first zone over UDP."""
        if not self.zones:
            return True
        import dns.message
        import dns.query

        origin = next(iter(self.zones))
        try:
            dns.query.udp(dns.message.make_query(origin, "SOA"), self.address,
                          port=self.port, timeout=0.2)
            return True
        except Exception:
            return False

    def reload(self) -> None:
        """Rewrite the zones and make NSD read them again (SIGHUP)."""
        self._write_config()
        if self.process:
            self.process.send_signal(signal.SIGHUP)
            time.sleep(0.3)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def stop_process(process: subprocess.Popen | None, grace: float = 5.0) -> None:
    """Terminate a lab server process; kill it if it lingers past `grace` seconds."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def free_udp_port(address: str) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]
