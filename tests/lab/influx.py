"""A real InfluxDB 1.x (Debian influxdb's influxd) on a lab address.

What Icinga 2's InfluxdbWriter feeds: the HTTP API on 127.0.25.61 and a free port,
its data under a private directory, one database (`icinga2`). The writer makes a
measurement per check command and a series per perfdata label: the label is the
value of the tag `metric`. A test starts its own, so the series it reads are its
run's alone:

    with LabInflux(private_dir("influx-")) as influx:
        node = IcingaNode(..., objects=SITE + influxdb_writer(influx))
        ...
        influx.series()   # ['smtp_phases,hostname=...,metric=...,service=...', ...]

Nothing in the system's /etc/influxdb or /var/lib/influxdb is read or written.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import textwrap
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from tests.lab.authdns import stop_process

INFLUXD = shutil.which("influxd") or "/usr/bin/influxd"
INFLUX_ADDRESS = "127.0.25.61"
DATABASE = "icinga2"


def _free_port(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


class LabInflux:
    """One influxd in `workdir`: its config, meta, data and WAL directories."""

    def __init__(self, workdir: str | os.PathLike, address: str = INFLUX_ADDRESS):
        self.workdir = Path(workdir)
        self.address = address
        self.port = _free_port(address)
        self.process: subprocess.Popen | None = None

    def config(self) -> str:
        d = self.workdir
        # The RPC service (backups) cannot be switched off: a free port of its own.
        return textwrap.dedent(f"""\
            reporting-disabled = true
            bind-address = "{self.address}:{_free_port(self.address)}"
            [meta]
              dir = "{d}/meta"
            [data]
              dir = "{d}/data"
              wal-dir = "{d}/wal"
              query-log-enabled = false
            [monitor]
              store-enabled = false
            [http]
              enabled = true
              bind-address = "{self.address}:{self.port}"
              auth-enabled = false
              log-enabled = false
              pprof-enabled = false
            [logging]
              level = "warn"
              suppress-logo = true
            """)

    def start(self, wait: float = 30.0) -> LabInflux:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "influxdb.conf"
        conf.write_text(self.config())
        with open(self.workdir / "influxd.log", "wb") as log:
            self.process = subprocess.Popen([INFLUXD, "-config", str(conf)], stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"influxd exited {self.process.returncode}: "
                                   + self.log()[-3000:])
            try:
                self.query(f"CREATE DATABASE {DATABASE}")
                return self
            except (OSError, urllib.error.URLError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("influxd did not answer in time: " + self.log()[-3000:])

    def log(self) -> str:
        path = self.workdir / "influxd.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def query(self, text: str) -> list:
        """The results of one InfluxQL statement (POST /query)."""
        body = urllib.parse.urlencode({"q": text, "db": DATABASE}).encode()
        request = urllib.request.Request(f"http://{self.address}:{self.port}/query",
                                         data=body, method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())["results"]

    def series(self) -> list[str]:
        """Every series of the database (`measurement,tag=value,...`), sorted."""
        found = self.query("SHOW SERIES")[0].get("series") or []
        return sorted(row[0] for block in found for row in block["values"])

    def stop(self) -> None:
        stop_process(self.process, group=True)
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
