"""A real Carbon (Debian graphite-carbon's carbon-cache) on a lab address.

What Icinga 2's GraphiteWriter feeds: a plaintext line receiver on 127.0.25.60
and a free port, writing whisper files under a private directory, one file per
metric path (`icinga2.<host>.services.<service>.<command>.perfdata.<label>.value`
becomes `icinga2/<host>/.../<label>/value.wsp`: every dot a folder). A test
starts its own, so the metric tree it reads is its run's alone:

    with LabCarbon(private_dir("carbon-")) as carbon:
        node = IcingaNode(..., objects=SITE + graphite_writer(carbon))
        ...
        carbon.metric_paths()   # ['icinga2.host.services....value', ...]

Nothing in the system's /etc/carbon or /var/lib/graphite is read or written.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import textwrap
import time
from pathlib import Path

from tests.lab.authdns import stop_process

CARBON_CACHE = shutil.which("carbon-cache") or "/usr/bin/carbon-cache"
CARBON_ADDRESS = "127.0.25.60"


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


class LabCarbon:
    """One carbon-cache in `workdir`: its config, whisper tree, log and pid file."""

    def __init__(self, workdir: str | os.PathLike, address: str = CARBON_ADDRESS):
        self.workdir = Path(workdir)
        self.address = address
        self.port = _free_port(address)
        self.process: subprocess.Popen | None = None

    @property
    def whisper_dir(self) -> Path:
        return self.workdir / "whisper"

    def config(self) -> str:
        d = self.workdir
        # The pickle receiver and the cache query port cannot be switched off: they get
        # free ports of their own on the lab address. No metrics of Carbon's own
        # (CARBON_METRIC_INTERVAL 0): the tree is what was sent.
        return textwrap.dedent(f"""\
            [cache]
            STORAGE_DIR = {d}/
            LOCAL_DATA_DIR = {self.whisper_dir}/
            CONF_DIR = {d}/
            LOG_DIR = {d}/log/
            PID_DIR = {d}/
            USER =
            MAX_CACHE_SIZE = inf
            MAX_UPDATES_PER_SECOND = inf
            MAX_CREATES_PER_MINUTE = inf
            LINE_RECEIVER_INTERFACE = {self.address}
            LINE_RECEIVER_PORT = {self.port}
            ENABLE_UDP_LISTENER = False
            PICKLE_RECEIVER_INTERFACE = {self.address}
            PICKLE_RECEIVER_PORT = {_free_port(self.address)}
            CACHE_QUERY_INTERFACE = {self.address}
            CACHE_QUERY_PORT = {_free_port(self.address)}
            CARBON_METRIC_INTERVAL = 0
            LOG_LISTENER_CONNECTIONS = True
            LOG_CREATES = True
            ENABLE_LOGROTATION = False
            """)

    def start(self, wait: float = 30.0) -> LabCarbon:
        (self.workdir / "log").mkdir(parents=True, exist_ok=True)
        self.whisper_dir.mkdir(exist_ok=True)
        conf = self.workdir / "carbon.conf"
        conf.write_text(self.config())
        (self.workdir / "storage-schemas.conf").write_text(
            "[everything]\npattern = .*\nretentions = 10s:1d\n")
        with open(self.workdir / "carbon.stdout", "wb") as out:
            self.process = subprocess.Popen(
                [CARBON_CACHE, f"--config={conf}", f"--pidfile={self.workdir}/carbon.pid",
                 f"--logdir={self.workdir}/log", "--nodaemon", "start"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"carbon-cache exited {self.process.returncode}: "
                                   + self.log()[-3000:])
            try:
                socket.create_connection((self.address, self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("carbon-cache did not listen in time: " + self.log()[-3000:])

    def log(self) -> str:
        texts = [path.read_text(errors="replace")
                 for path in [self.workdir / "carbon.stdout",
                              *sorted((self.workdir / "log").glob("*.log"))]
                 if path.exists()]
        return "\n".join(texts)

    def metric_paths(self, since: float | None = None) -> list[str]:
        """Every metric Carbon has a whisper file of, as a dotted path, sorted; with
        `since` (a time.time()) only those written since."""
        return sorted(".".join(path.relative_to(self.whisper_dir).with_suffix("").parts)
                      for path in self.whisper_dir.rglob("*.wsp")
                      if since is None or path.stat().st_mtime >= since)

    def wait_for_metrics(self, count: int, since: float, timeout: float = 30.0,
                         quiet: float = 2.0) -> list[str]:
        """metric_paths(since) once there are `count` of them and no whisper file has
        changed for `quiet` seconds (Carbon writes a moment after the lines arrive,
        a file first, its datapoints after), or `timeout` seconds have passed."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            files = list(self.whisper_dir.rglob("*.wsp"))
            latest = max((path.stat().st_mtime for path in files), default=0.0)
            if len(self.metric_paths(since)) >= count and time.time() - latest >= quiet:
                break
            time.sleep(0.25)
        return self.metric_paths(since)

    def stop(self) -> None:
        stop_process(self.process, group=True)
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
