"""The lab's validating resolver: unbound on 127.0.25.54:53, trusting the DANE lab's key.

Questions under .test go to the lab's NSD (a stub zone), others nowhere: nothing
leaves the machine; dane.test validates from the trust anchor tests/lab/danelab.py
prints, its unsigned child is provably insecure, every other lab zone is outside
the anchor (no AD bit). RFC 8914 extended errors are on (`ede: yes`), so a bogus
answer's SERVFAIL says why.

Shared between concurrent test sessions like the NSD (tests/lab/sharedlock.py):
the first starts it, the last stops it. Usage::

    with SharedUnbound() as resolver:   # -> LabUnbound
        ...check_dane --dns-server resolver.server_arg...
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

from tests.lab import danelab
from tests.lab.authdns import stop_process
from tests.lab.sharedlock import SharedServer, kill_pidfile

UNBOUND = shutil.which("unbound") or "/usr/sbin/unbound"
UNBOUND_CHECKCONF = shutil.which("unbound-checkconf") or "/usr/sbin/unbound-checkconf"


class LabUnbound:
    def __init__(self, workdir: str | os.PathLike, address: str = danelab.RESOLVER_ADDRESS,
                 port: int = 53, upstream: str = "127.0.25.53@53"):
        self.workdir = Path(workdir)
        self.address = address
        self.port = port
        self.upstream = upstream
        self.process: subprocess.Popen | None = None

    @property
    def server_arg(self) -> str:
        return f"{self.address}:{self.port}"

    def config(self) -> str:
        d = self.workdir
        return textwrap.dedent(f"""\
            server:
                interface: {self.address}@{self.port}
                port: {self.port}
                do-ip6: no
                access-control: 127.0.0.0/8 allow
                username: ""
                chroot: ""
                directory: "{d}"
                pidfile: "{d}/unbound.pid"
                logfile: "{d}/unbound.log"
                use-syslog: no
                verbosity: 1
                val-log-level: 2
                num-threads: 1
                do-not-query-localhost: no
                module-config: "validator iterator"
                trust-anchor: "{danelab.trust_anchor()}"
                ede: yes
                harden-dnssec-stripped: yes
                qname-minimisation: no
                cache-max-ttl: 5
                cache-max-negative-ttl: 5
                val-bogus-ttl: 5
                infra-host-ttl: 5
                # unbound answers .test itself (RFC 6761) unless told not to
                local-zone: "test." nodefault
            remote-control:
                control-enable: no
            stub-zone:
                name: "test."
                stub-addr: {self.upstream}
            """)

    def start(self, wait: float = 10.0) -> LabUnbound:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "unbound.conf"
        conf.write_text(self.config())
        check = subprocess.run([UNBOUND_CHECKCONF, str(conf)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"unbound.conf rejected: {check.stdout}{check.stderr}")
        with open(self.workdir / "unbound.stderr", "wb") as stderr:
            self.process = subprocess.Popen([UNBOUND, "-d", "-c", str(conf)],
                                            stdout=subprocess.DEVNULL, stderr=stderr)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError("unbound exited: "
                                   + _read(self.workdir / "unbound.stderr")
                                   + _read(self.workdir / "unbound.log"))
            if self.answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("unbound did not answer in time: " + _read(self.workdir / "unbound.log"))

    def answers(self) -> bool:
        """True once the resolver answers dane.test SOA with the AD flag (it validates)."""
        import dns.flags
        import dns.message
        import dns.query

        try:
            query = dns.message.make_query(danelab.ZONE, "SOA", want_dnssec=True)
            query.flags |= dns.flags.AD
            reply = dns.query.udp(query, self.address, port=self.port, timeout=0.5)
            return bool(reply.flags & dns.flags.AD)
        except Exception:
            return False

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


class SharedUnbound(SharedServer):
    """The one lab resolver, shared by concurrent sessions (see SharedDns)."""

    def __init__(self, root: str | os.PathLike | None = None):
        from tests.lab.postfix import LAB_ROOT

        root = Path(root or LAB_ROOT)
        self.resolver = LabUnbound(root / "unbound")
        super().__init__(root / "unbound.lock")

    def _server(self) -> LabUnbound:
        return self.resolver

    def _is_up(self) -> bool:
        return self.resolver.answers()

    def _start_fresh(self) -> None:
        self.resolver.start()

    def _kill_leftover(self) -> None:
        self.resolver.stop()
        kill_pidfile(self.resolver.workdir / "unbound.pid", b"unbound")

    def _let_go(self) -> None:
        self.resolver.process = None


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return ""
