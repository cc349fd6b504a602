"""A real NRPE daemon on loopback, configured from the shipped nrpe.d snippet.

Debian's nagios-nrpe-server runs `nrpe -c /etc/nagios/nrpe.cfg -f` as the nagios
user (systemd User=nagios); so does this one, with a private directory, a free
port on 127.0.0.1, `allowed_hosts=127.0.0.1` and the snippet
icinga2-conf/nrpe.d-check_smtp_posture.cfg, as `make install-nagios` installs it
(tests/lab/icinga.install_for_nagios), made fit for the lab the way its comment
tells an operator to: the example domain replaced by the lab's, and (the lab's
only difference from a real site) the lab's DNS server added to each line.

    installed = install_for_nagios(private_dir("nrpe-conf-"))
    with LabNrpe(installed.nrpe_snippet, "posture.test", "127.0.25.53:53") as nrpe:
        check_nrpe("-H", "127.0.0.1", "-p", str(nrpe.port), "-c", "smtp_posture_mx")
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

from tests.lab.authdns import stop_process
from tests.lab.icinga import DAEMON_ENV, PLUGIN_DIR, free_port, private_dir, run_as_user

NRPE = shutil.which("nrpe") or "/usr/sbin/nrpe"
CHECK_NRPE = str(PLUGIN_DIR / "check_nrpe")
#: the domain the shipped snippet names, for the operator to replace
EXAMPLE_DOMAIN = "example.org"

_NRPE_CFG = """\
log_facility=daemon
log_file={dir}/nrpe.log
debug=0
pid_file={dir}/nrpe.pid
server_address=127.0.0.1
server_port={port}
nrpe_user={user}
nrpe_group={group}
allowed_hosts=127.0.0.1
dont_blame_nrpe=0
allow_bash_command_substitution=0
command_timeout=60
connection_timeout=300
disable_syslog=1
include={dir}/check_smtp_posture.cfg
"""


def snippet_commands(text: str) -> dict[str, str]:
    """command name -> command line, from nrpe.d text."""
    return dict(re.findall(r"^command\[([^\]]+)\]=(.*)$", text, re.M))


def lab_snippet(snippet: Path, domain: str, dns_server: str) -> str:
    """The snippet with the operator's edit made: the lab domain, the lab DNS."""
    lines = []
    for line in snippet.read_text().splitlines():
        if line.startswith("command["):
            line = line.replace(EXAMPLE_DOMAIN, domain) + f" --dns-server {dns_server}"
        lines.append(line)
    return "\n".join(lines) + "\n"


class LabNrpe:
    def __init__(self, snippet: Path, domain: str, dns_server: str):
        self.workdir = private_dir("nrpe-")
        self.port = free_port()
        self.snippet = lab_snippet(snippet, domain, dns_server)
        self.commands = snippet_commands(self.snippet)
        self.process: subprocess.Popen | None = None

    @property
    def config(self) -> Path:
        return self.workdir / "nrpe.cfg"

    def log(self) -> str:
        path = self.workdir / "nrpe.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 15.0) -> LabNrpe:
        import grp

        user = run_as_user()
        (self.workdir / "check_smtp_posture.cfg").write_text(self.snippet)
        self.config.write_text(_NRPE_CFG.format(dir=self.workdir, port=self.port,
                                                user=user.pw_name,
                                                group=grp.getgrgid(user.pw_gid).gr_name))
        for path in self.workdir.iterdir():
            os.chown(path, user.pw_uid, user.pw_gid)
        self.process = subprocess.Popen(
            [NRPE, "-c", str(self.config), "-f"], user=user.pw_uid, group=user.pw_gid,
            extra_groups=[], env=DAEMON_ENV, cwd="/", stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"nrpe exited {self.process.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"nrpe did not listen on 127.0.0.1:{self.port}:\n{self.log()}")

    def uid(self) -> int:
        """The real uid of the running daemon (from /proc)."""
        assert self.process is not None
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))

    def stop(self) -> None:
        stop_process(self.process, 10, group=True)
        self.process = None

    def __enter__(self) -> LabNrpe:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def check_nrpe(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """check_nrpe run by hand as the nagios user, as Icinga runs it."""
    from tests.lab.icinga import run_plugin_as_nagios

    return run_plugin_as_nagios([CHECK_NRPE, *args], timeout=timeout)
