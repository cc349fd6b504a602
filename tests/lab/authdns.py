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
    has its own SOA. The test suite runs one instance, the shared lab DNS
    (tests/lab/world.py, sharedlock.SharedDns); benchmarks may run more on
    other addresses.
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

    def missing_zones(self) -> list[str]:
        """The origins the running server does not answer authoritatively (SOA over UDP)."""
        import dns.flags
        import dns.message
        import dns.query
        import dns.rcode

        missing = []
        for origin in self.zones:
            try:
                reply = dns.query.udp(dns.message.make_query(origin, "SOA"), self.address,
                                      port=self.port, timeout=2)
                if reply.rcode() != dns.rcode.NOERROR or not reply.flags & dns.flags.AA:
                    missing.append(origin)
            except Exception:
                missing.append(origin)
        return missing

    def running_pid(self) -> int | None:
        """The NSD serving this workdir: ours, or the one another session started."""
        if self.process and self.process.poll() is None:
            return self.process.pid
        try:
            pid = int((self.workdir / "nsd.pid").read_text().split()[0])
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError, IndexError):
            return None
        return pid if b"nsd" in cmdline and bytes(self.workdir) in cmdline else None

    def reload(self) -> None:
        """Rewrite the zones and make NSD read them again (SIGHUP).

        NSD rereads changed zone files only; a new zone needs a restart.
        """
        self._write_config()
        pid = self.running_pid()
        if pid:
            os.kill(pid, signal.SIGHUP)
            time.sleep(0.3)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def stop_process(process: subprocess.Popen | None, grace: float = 5.0, *,
                 group: bool = False) -> None:
    """Terminate a lab server process; kill it if it lingers past `grace` seconds.

    `group`: signal its whole process group (started with start_new_session), for
    daemons that fork workers (icinga2, nrpe).
    """
    if process is None or process.poll() is not None:
        return

    def signal(number: int) -> None:
        if group:
            os.killpg(process.pid, number)
        else:
            process.send_signal(number)

    signal(15)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        signal(9)
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
