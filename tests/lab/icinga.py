"""Real Icinga 2 daemons on loopback, and the plugin install the monitoring user runs.

Nothing here touches the system's Icinga: every node gets a private directory
under /tmp (owned by the `nagios` user, which the daemon switches to, as
Debian's icinga2.service does), its own CA-signed certificate, an API listener
on 127.0.0.1 and a free port, and an API user for the REST API. The
configuration is the project's icinga2-conf/ files, loaded as an operator loads
them, plus what a site writes itself (its zones, endpoints and hosts).

    installed = install_for_nagios(private_dir("icinga-conf-"))
    pki = Pki(private_dir("icinga-pki-"))
    master = IcingaNode("lab-master", pki, includes=site_includes(installed),
                        objects=HOSTS, zone_objects=ZONES)
    master.start()
    master.api("POST", "/v1/actions/reschedule-check", {...})
    master.stop()

The plugins are not the test interpreter's console scripts: those live under
/root, which the nagios user cannot enter. `install_for_nagios()` runs
`make install-nagios`, which keeps a virtualenv of Debian's python3 at PREFIX
(/opt/check_smtp_posture) up to date with the working tree (the shipped constant
CheckSmtpPostureBinDir names its bin/) and copies the configuration where the
daemons read it, here a private directory.
"""

from __future__ import annotations

import base64
import grp
import json
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.lab.authdns import stop_process

ICINGA2 = shutil.which("icinga2") or "/usr/sbin/icinga2"
REPO = Path(__file__).resolve().parents[2]
#: where `make install-nagios-plugins` puts the family (see README, "Icinga 2 and NRPE")
PREFIX = Path("/opt/check_smtp_posture")
PLUGIN_BIN = PREFIX / "bin"
PLUGIN_DIR = Path("/usr/lib/nagios/plugins")
#: the user Debian runs icinga2 and nrpe as
RUN_AS = "nagios"
#: Debian's default conf.d files the shipped notification example builds on
DEFAULT_CONF_D = Path("/etc/icinga2/conf.d")
DEFAULT_CONF_D_FILES = ("templates.conf", "timeperiods.conf", "groups.conf", "users.conf",
                        "commands.conf")

#: what systemd gives a daemon: nothing of the test session's environment (PATH, HOME)
DAEMON_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}

API_USER = "lab"
API_PASSWORD = "lab-api-secret"


@dataclass(frozen=True)
class Installed:
    """What `make install-nagios` put into a private root: the files a daemon reads."""

    conf_dir: Path  # the Icinga 2 configuration (ICINGA2_CONF_DIR)
    nrpe_dir: Path  # the NRPE snippet, as check_smtp_posture.cfg.example (NRPE_CONF_DIR)

    def conf_files(self) -> list[Path]:
        """Every installed Icinga 2 file, the constants first."""
        files = sorted(self.conf_dir.glob("*.conf"))
        files.sort(key=lambda path: "constants" not in path.name)
        return files

    def command_files(self) -> list[Path]:
        """The constants and the CheckCommands: what an agent needs."""
        return [f for f in self.conf_files()
                if f.name == "check_smtp_posture-constants.conf" or "-" not in f.name]

    @property
    def nrpe_snippet(self) -> Path:
        return self.nrpe_dir / "check_smtp_posture.cfg.example"


def install_for_nagios(root: Path) -> Installed:
    """`make install-nagios` with the configuration directories under `root`.

    Brings PREFIX up to date with the working tree first (a no-op when it is), and
    copies the configuration out of the working tree, as an operator does: the
    daemons, running as nagios, read the copies (a CI checkout may be out of that
    user's reach).
    """
    installed = Installed(root / "conf.d" / "check_smtp_posture", root / "nrpe.d")
    installed.nrpe_dir.mkdir(parents=True, exist_ok=True)
    make_install("install-nagios", ICINGA2_CONF_DIR=installed.conf_dir,
                 NRPE_CONF_DIR=installed.nrpe_dir)
    return installed


def make_install(target: str, **directories: Path) -> None:
    """`make TARGET NAME=DIRECTORY...` in the working tree: an install of the README's."""
    proc = subprocess.run(["make", "-s", "--no-print-directory", "-C", str(REPO), target,
                           *(f"{name}={path}" for name, path in directories.items())],
                          capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"make {target} failed:\n" + proc.stdout + proc.stderr)


def run_as_user() -> pwd.struct_passwd:
    return pwd.getpwnam(RUN_AS)


def private_dir(prefix: str) -> Path:
    """A fresh directory the nagios user owns (pytest's tmp_path is root's, mode 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    user = run_as_user()
    path.chmod(0o755)
    os.chown(path, user.pw_uid, user.pw_gid)
    return path


def chown_tree(path: Path) -> None:
    user = run_as_user()
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)
    os.chown(path, user.pw_uid, user.pw_gid)


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def console_scripts() -> dict[str, str]:
    """console script -> the module of its main(), from setup.cfg."""
    import configparser

    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    scripts = {}
    for line in config["options.entry_points"]["console_scripts"].strip().splitlines():
        name, _, target = (part.strip() for part in line.partition("="))
        scripts[name] = target.split(":")[0]
    return scripts


def parsed(script: str, args) -> dict:
    """The plugin's own reading of its arguments: order and spelling do not matter."""
    import importlib

    module = importlib.import_module(console_scripts()[script])
    return vars(module.build_parser().parse_args(list(args)))


def run_plugin_as_nagios(argv: list[str], env: dict[str, str] | None = None,
                         timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a plugin by hand the way the daemons do: as nagios, minimal environment."""
    user = run_as_user()
    environ = {**DAEMON_ENV, "HOME": user.pw_dir, **(env or {})}
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=environ,
                          user=user.pw_uid, group=user.pw_gid, extra_groups=[], cwd="/")


#: digits of a measurement: times, sizes, counts of milliseconds
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def without_numbers(text: str) -> str:
    """The text with every number replaced by N: two runs differ only in timings."""
    return _NUMBER.sub("N", text)


def split_status_line(line: str) -> tuple[str, str]:
    """(text, perfdata) of a plugin's output line, the way Icinga 2 splits it: at the
    first '|' when an '=' follows it (a usage synopsis "[-H HOST | -D DOMAIN]" is text)."""
    cut = line.find("|")
    if cut != -1 and "=" in line[cut:]:
        return line[:cut].strip(), line[cut + 1:].strip()
    return line.strip(), ""


def perf_labels(perfdata) -> list[str]:
    """label=value[UOM]... -> ['label UOM', ...] (the parts that do not change between runs)."""
    items = perfdata.split() if isinstance(perfdata, str) else list(perfdata)
    labels = []
    for item in items:
        label, _, rest = item.partition("=")
        value = rest.split(";")[0]
        labels.append(f"{label.strip(chr(39))} {re.sub(r'^[-0-9.]+', '', value)}")
    return sorted(labels)


def site_includes(installed: Installed) -> list[Path]:
    """A master's files: Debian's stock templates (the notification rule imports one)
    and every installed file."""
    stock = [DEFAULT_CONF_D / name for name in DEFAULT_CONF_D_FILES
             if (DEFAULT_CONF_D / name).exists()]
    return stock + installed.conf_files()


class Pki:
    """A private Icinga CA (`icinga2 pki new-ca`) and node certificates signed by it."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.data_dir = workdir / "ca-lib"
        self.data_dir.mkdir()
        chown_tree(workdir)
        self._icinga2("pki", "new-ca")

    @property
    def ca_cert(self) -> Path:
        return self.data_dir / "ca" / "ca.crt"

    def _icinga2(self, *args: str) -> None:
        # The CLI drops to RunAsUser (nagios) as the daemon does, hence the owned dirs.
        proc = subprocess.run([ICINGA2, *args, f"-DDataDir={self.data_dir}"],
                              capture_output=True, text=True, timeout=60, cwd=self.workdir)
        if proc.returncode != 0:
            raise RuntimeError(f"icinga2 {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")

    def issue(self, common_name: str, certs_dir: Path) -> None:
        """certs_dir/<cn>.key, <cn>.crt and ca.crt: what an ApiListener reads."""
        certs_dir.mkdir(parents=True, exist_ok=True)
        chown_tree(certs_dir)
        key, csr, crt = (certs_dir / f"{common_name}.{ext}" for ext in ("key", "csr", "crt"))
        self._icinga2("pki", "new-cert", "--cn", common_name, "--key", str(key), "--csr", str(csr))
        self._icinga2("pki", "sign-csr", "--csr", str(csr), "--cert", str(crt))
        shutil.copy(self.ca_cert, certs_dir / "ca.crt")
        chown_tree(certs_dir)


_DIRS = {"ConfigDir": "etc", "DataDir": "lib", "LogDir": "log", "CacheDir": "cache",
         "SpoolDir": "spool", "InitRunDir": "run"}

_HEADER = """\
const NodeName = "{node}"
const ZoneName = "{zone}"
const TicketSalt = ""
const PluginDir = "{plugin_dir}"
const ManubulonPluginDir = "{plugin_dir}"
const PluginContribDir = "{plugin_dir}"
include <itl>
include <plugins>
include <plugins-contrib>

object IcingaApplication "app" {{ }}
object CheckerComponent "checker" {{ }}
object ApiListener "api" {{
  bind_host = "127.0.0.1"
  bind_port = {port}
  accept_commands = {accept_commands}
  accept_config = false
  ticket_salt = TicketSalt
}}
"""


class IcingaNode:
    """One `icinga2 daemon` in a private directory, its API on 127.0.0.1:<port>.

    `includes`: the files to load after the ITL (site_includes(), or an agent's
    Installed.command_files()); `zone_objects`: the Zone and Endpoint objects of the
    cluster (the same text on every node); `objects`: the node's own configuration
    (hosts...).
    """

    def __init__(self, name: str, pki: Pki, *, zone: str | None = None, port: int | None = None,
                 includes: list[Path], zone_objects: str = "", objects: str = "",
                 accept_commands: bool = False, api_user: bool = True):
        self.name = name
        self.zone = zone or name
        self.port = port or free_port()
        self.workdir = private_dir(f"icinga-{name}-")
        self.pki = pki
        # A node alone is its own zone with its own endpoint.
        self.zone_objects = zone_objects or (
            f'object Endpoint "{name}" {{ }}\n'
            f'object Zone "{self.zone}" {{ endpoints = [ "{name}" ] }}\n')
        self.objects = objects
        self.includes = includes
        self.accept_commands = accept_commands
        self.api_user = api_user
        self.process: subprocess.Popen | None = None
        self._context: ssl.SSLContext | None = None

    # -- configuration -------------------------------------------------------------------

    def _dir(self, constant: str) -> Path:
        return self.workdir / _DIRS[constant]

    @property
    def main_conf(self) -> Path:
        return self._dir("ConfigDir") / "icinga2.conf"

    @property
    def log_file(self) -> Path:
        return self.workdir / "daemon.log"

    def write_config(self) -> None:
        for sub in _DIRS.values():
            (self.workdir / sub).mkdir(exist_ok=True)
        self.pki.issue(self.name, self._dir("DataDir") / "certs")
        text = _HEADER.format(node=self.name, zone=self.zone, plugin_dir=PLUGIN_DIR,
                              port=self.port,
                              accept_commands=str(self.accept_commands).lower())
        if self.api_user:
            text += (f'object ApiUser "{API_USER}" {{\n  password = "{API_PASSWORD}"\n'
                     f'  permissions = [ "*" ]\n}}\n')
        text += "\n".join(f'include "{path}"' for path in self.includes) + "\n"
        text += self.zone_objects + "\n" + self.objects + "\n"
        self.main_conf.write_text(text)
        chown_tree(self.workdir)

    def _defines(self) -> list[str]:
        group = grp.getgrgid(run_as_user().pw_gid).gr_name
        return [*(f"-D{name}={self.workdir / sub}" for name, sub in _DIRS.items()),
                f"-DRunAsUser={RUN_AS}", f"-DRunAsGroup={group}"]

    def validate(self) -> subprocess.CompletedProcess:
        self.write_config()
        return subprocess.run([ICINGA2, "daemon", "-C", "-c", str(self.main_conf),
                               *self._defines()], capture_output=True, text=True, timeout=120)

    # -- the daemon ----------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> IcingaNode:
        self.write_config()
        with open(self.log_file, "wb") as log:
            # Started as root, the daemon switches to RunAsUser itself (Debian's unit does
            # the same); the plugins it runs are the nagios user's processes.
            self.process = subprocess.Popen(
                [ICINGA2, "daemon", "-c", str(self.main_conf), *self._defines()],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, env=DAEMON_ENV)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"icinga2 {self.name} exited {self.process.returncode}:\n"
                                   + self.log_file.read_text(errors="replace")[-6000:])
            if not self.api_user:
                if "Started new listener on" in self.log_file.read_text(errors="replace"):
                    return self
            else:
                try:
                    self.api("GET", "/v1/status/IcingaApplication")
                    return self
                except (OSError, urllib.error.URLError):
                    pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"icinga2 {self.name} did not come up within {timeout}s:\n"
                           + self.log_file.read_text(errors="replace")[-6000:])

    def stop(self) -> None:
        stop_process(self.process, 10, group=True)
        self.process = None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    # -- REST API ------------------------------------------------------------------------

    def api(self, method: str, path: str, body: dict | None = None, timeout: float = 10.0):
        """One REST API call as the API user; the decoded JSON answer."""
        if self._context is None:
            context = ssl.create_default_context(cafile=str(self.pki.ca_cert))
            context.check_hostname = False  # the certificate names the node, not 127.0.0.1
            self._context = context
        token = base64.b64encode(f"{API_USER}:{API_PASSWORD}".encode()).decode()
        request = urllib.request.Request(
            f"https://127.0.0.1:{self.port}{path}", method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Accept": "application/json", "Authorization": f"Basic {token}",
                     **({"X-HTTP-Method-Override": method} if method == "GET" and body else {})})
        if method == "GET" and body is not None:
            request.method = "POST"
        with urllib.request.urlopen(request, timeout=timeout, context=self._context) as resp:
            return json.loads(resp.read())

    def services(self, filter_expr: str | None = None, attrs=("last_check_result",)) -> dict:
        """host!service -> attrs, through /v1/objects/services."""
        body: dict = {"attrs": list(attrs)}
        if filter_expr:
            body["filter"] = filter_expr
        answer = self.api("GET", "/v1/objects/services", body)
        return {item["name"]: item["attrs"] for item in answer["results"]}


def graphite_writer(address: str, port: int) -> str:
    """Icinga 2's GraphiteWriter feature (Debian's features-available/graphite.conf),
    sending every check result's perfdata to a lab Carbon (tests/lab/carbon.py)."""
    return (f'object GraphiteWriter "graphite" {{\n  host = "{address}"\n  port = {port}\n'
            '  enable_send_thresholds = false\n}\n')


def influxdb_writer(address: str, port: int, database: str) -> str:
    """Icinga 2's InfluxdbWriter feature (Debian's features-available/influxdb.conf, its
    default templates), sending every check result at once to a lab InfluxDB
    (tests/lab/influx.py)."""
    return (f'object InfluxdbWriter "influxdb" {{\n  host = "{address}"\n  port = {port}\n'
            f'  database = "{database}"\n  flush_threshold = 1\n  flush_interval = 1s\n}}\n')
