"""A real Nagios Core 4 daemon (Debian's nagios4) in a private directory, and its object files.

Nothing here touches the system's Nagios: the daemon runs as the nagios user with
its own nagios.cfg, resource.cfg, status file, command file (a FIFO) and query
socket in a private directory under /tmp; Nagios listens on no network socket.
Its objects are Debian's stock ones (the templates generic-host and generic-service,
the contact group admins, the time periods and /etc/nagios-plugins/config, where
the shipped commands must not clash with any name), the shipped nagios-conf/ files
as `make install-nagios-core` installs them, and what a site writes itself.

    installed = install_for_nagios_core(private_dir("nagios-conf-"))
    nagios = Nagios(cfg_files=[*STOCK_OBJECT_FILES, *installed.cfg_files()],
                    cfg_dirs=[STOCK_CFG_DIR], objects=SITE,
                    resources={"USER1": str(installed.plugin_dir)})
    nagios.start()
    since = nagios.force_checks(hosts=["example.org"], host_checks=["example.org"])
    hosts, services = nagios.wait_checked(since, 60, hosts=["example.org"])
    nagios.executed()   # (host, service or None) -> the command line Nagios ran
    nagios.stop()

Checks run only when the test forces them (execute_service_checks=0 and
execute_host_checks=0 stop the daemon's own schedule; a forced check runs all the
same), so every check runs exactly once. What Nagios ran is read from its debug log
(the macro-expanded command line of each check), what it made of the result from
status.dat.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.authdns import stop_process
from tests.lab.icinga import (
    DAEMON_ENV,
    REPO,
    chown_tree,
    make_install,
    private_dir,
    run_as_user,
)

NAGIOS4 = shutil.which("nagios4") or "/usr/sbin/nagios4"
CONF_DIR = REPO / "nagios-conf"
#: what `make install-nagios-core` installs as configuration Nagios loads
SHIPPED = ("check_smtp_posture.cfg", "check_smtp_posture-templates.cfg")
#: the examples, installed as FILE.example for the operator to copy and edit
EXAMPLES = ("check_smtp_posture-example.cfg", "check_smtp_posture-nrpe-example.cfg")
#: Debian's stock objects (nagios4-common) the examples build on
STOCK_OBJECT_FILES = tuple(Path("/etc/nagios4/objects") / name for name in
                           ("commands.cfg", "contacts.cfg", "timeperiods.cfg", "templates.cfg"))
#: the command definitions of Debian's plugin packages, loaded by Debian's nagios.cfg
STOCK_CFG_DIR = Path("/etc/nagios-plugins/config")


@dataclass(frozen=True)
class Installed:
    """What `make install-nagios-core` put into a private root."""

    cfg_dir: Path  # NAGIOS_CFG_DIR: the definitions, the examples as .example
    plugin_dir: Path  # NAGIOS_PLUGIN_DIR: $USER1$, the plugins linked into it

    def cfg_files(self) -> list[Path]:
        return sorted(self.cfg_dir.glob("*.cfg"))

    def example(self, name: str) -> Path:
        return self.cfg_dir / f"{name}.example"


def install_for_nagios_core(root: Path) -> Installed:
    """`make install-nagios-core` into `root`: the plugins of PREFIX brought up to date
    with the working tree (a no-op when they are) and linked, the files copied."""
    installed = Installed(root / "config", root / "plugins")
    make_install("install-nagios-core", NAGIOS_CFG_DIR=installed.cfg_dir,
                 NAGIOS_PLUGIN_DIR=installed.plugin_dir)
    return installed


# -- object files ------------------------------------------------------------------------

@dataclass
class NagiosObject:
    """One `define KIND { ... }` block: its directives in order (custom ones too)."""

    kind: str
    attrs: dict[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.attrs.get(key, default)


_DEFINE = re.compile(r"^\s*define\s+(\w+)\s*\{\s*$")


def parse_objects(text: str) -> list[NagiosObject]:
    """The objects of a Nagios object file, or of objects.cache/objects.precache.

    Comments are lines starting with # or ;, and whatever follows an unescaped ;
    (as Nagios reads them). An empty value stays empty; the precache writes it as
    "null", which is read back as empty too.
    """
    objects: list[NagiosObject] = []
    current: NagiosObject | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        match = _DEFINE.match(line)
        if match:
            current = NagiosObject(match.group(1))
            objects.append(current)
            continue
        if line == "}":
            current = None
            continue
        if current is None:
            raise ValueError(f"outside any definition: {raw!r}")
        line = re.split(r"(?<!\\);", line, maxsplit=1)[0].replace("\\;", ";").strip()
        key, *value = line.split(None, 1)
        current.attrs[key] = "" if value in ([], ["null"]) else value[0]
    return objects


def render_objects(objects: list[NagiosObject]) -> str:
    blocks = []
    for obj in objects:
        lines = [f"define {obj.kind} {{"]
        lines += [f"    {key:<24}{value}".rstrip() for key, value in obj.attrs.items()]
        blocks.append("\n".join(lines) + "\n}\n")
    return "\n".join(blocks)


_MACRO = re.compile(r"\$([A-Z0-9_]*)\$")


def custom_macros(command_line: str) -> list[str]:
    """The custom variable macros of a command line: $_SERVICEOPTIONS$ -> '_SERVICEOPTIONS'."""
    return [name for name in _MACRO.findall(command_line) if name.startswith("_")]


# -- the daemon --------------------------------------------------------------------------

#: DEBUGL_CHECKS (16): "Checking service ...", DEBUGL_MACROS (2048): the expanded command
_DEBUG_LEVEL = 16 | 2048

_NAGIOS_CFG = """\
log_file={dir}/nagios.log
{cfg}
resource_file={dir}/resource.cfg
object_cache_file={dir}/objects.cache
precached_object_file={dir}/objects.precache
status_file={dir}/status.dat
status_update_interval=1
state_retention_file={dir}/retention.dat
retain_state_information=0
command_file={dir}/rw/nagios.cmd
check_external_commands=1
query_socket={dir}/rw/nagios.qh
lock_file={dir}/nagios.lock
temp_file={dir}/nagios.tmp
temp_path={dir}
check_result_path={dir}/checkresults
check_result_reaper_frequency=1
nagios_user={user}
nagios_group={group}
interval_length=60
service_check_timeout=60
host_check_timeout=30
illegal_macro_output_chars=`~$&|'"<>
check_for_updates=0
use_syslog=0
enable_notifications=0
enable_event_handlers=0
enable_flap_detection=0
process_performance_data=0
check_service_freshness=0
check_host_freshness=0
execute_service_checks=0
execute_host_checks=0
debug_level={debug_level}
debug_verbosity=1
debug_file={dir}/debug.log
max_debug_file_size=100000000
"""


def _blocks(text: str, kind: str) -> list[dict[str, str]]:
    """The `kind { key=value ... }` blocks of status.dat."""
    blocks = []
    for body in re.findall(rf"^{kind} \{{\n(.*?)\n\s*\}}", text, re.M | re.S):
        attrs = {}
        for line in body.splitlines():
            key, _, value = line.strip().partition("=")
            attrs[key] = value
        blocks.append(attrs)
    return blocks


class Nagios:
    """One `nagios4` daemon in a private directory, as the nagios user.

    `cfg_files`/`cfg_dirs`: the object files it loads; `objects`: a site's own
    objects (written to site.cfg in the private directory and loaded last);
    `resources`: the $USERn$ macros of its resource.cfg, {"USER1": "/path"}.
    """

    def __init__(self, *, cfg_files: list[Path], cfg_dirs: list[Path] = (), objects: str = "",
                 resources: dict[str, str]):
        self.workdir = private_dir("nagios-")
        self.cfg_files = list(cfg_files)
        self.cfg_dirs = list(cfg_dirs)
        self.objects = objects
        self.resources = resources
        self.process: subprocess.Popen | None = None

    @property
    def main_cfg(self) -> Path:
        return self.workdir / "nagios.cfg"

    @property
    def command_file(self) -> Path:
        return self.workdir / "rw" / "nagios.cmd"

    def write_config(self, as_root: bool = False) -> None:
        """nagios.cfg, resource.cfg and site.cfg; `as_root`: nagios_user root, so that
        `nagios4 -v`, which switches to nagios_user, reads files the nagios user cannot
        (a checkout under /root)."""
        import grp

        for sub in ("rw", "checkresults"):
            (self.workdir / sub).mkdir(exist_ok=True)
        files = list(self.cfg_files)
        if self.objects:
            (self.workdir / "site.cfg").write_text(self.objects)
            files.append(self.workdir / "site.cfg")
        cfg = [f"cfg_dir={path}" for path in self.cfg_dirs] + [f"cfg_file={path}" for path in files]
        user = run_as_user()
        self.main_cfg.write_text(_NAGIOS_CFG.format(
            dir=self.workdir, cfg="\n".join(cfg), user="root" if as_root else user.pw_name,
            group="root" if as_root else grp.getgrgid(user.pw_gid).gr_name,
            debug_level=_DEBUG_LEVEL))
        (self.workdir / "resource.cfg").write_text(
            "".join(f"${name}$={value}\n" for name, value in self.resources.items()))
        chown_tree(self.workdir)

    def validate(self, precache: bool = False) -> subprocess.CompletedProcess:
        """`nagios4 -v` (with `precache`, -vp: objects.precache holds every object resolved)."""
        self.write_config(as_root=True)
        return subprocess.run([NAGIOS4, "-vp" if precache else "-v", str(self.main_cfg)],
                              capture_output=True, text=True, timeout=60)

    def precached_objects(self) -> list[NagiosObject]:
        return parse_objects((self.workdir / "objects.precache").read_text())

    def start(self, timeout: float = 30.0) -> Nagios:
        self.write_config()
        user = run_as_user()
        with open(self.workdir / "daemon.out", "wb") as out:
            self.process = subprocess.Popen(
                [NAGIOS4, str(self.main_cfg)], user=user.pw_uid, group=user.pw_gid,
                extra_groups=[], env=DAEMON_ENV, cwd="/", stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"nagios4 exited {self.process.returncode}:\n" + self.log())
            if self.command_file.exists() and (self.workdir / "status.dat").exists():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"nagios4 did not come up within {timeout}s:\n" + self.log())

    def stop(self) -> None:
        stop_process(self.process, 10, group=True)
        self.process = None

    def log(self) -> str:
        return "".join(path.read_text(errors="replace")
                       for path in (self.workdir / "daemon.out", self.workdir / "nagios.log")
                       if path.exists())[-6000:]

    # -- external commands, status -----------------------------------------------------

    def command(self, *fields: str, timeout: float = 10.0) -> None:
        """One external command through the command file, as the CGIs send them."""
        line = f"[{int(time.time())}] {';'.join(fields)}\n".encode()
        end = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(self.command_file, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError as exc:  # ENXIO: nobody reads the FIFO yet
                if exc.errno != errno.ENXIO or time.monotonic() > end:
                    raise
                time.sleep(0.1)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def force_checks(self, hosts: list[str], host_checks: list[str] = ()) -> int:
        """Force a check of every service of `hosts` and of the `host_checks` hosts now;
        returns the time (status.dat's last_check of each will be at least that)."""
        now = int(time.time())
        for host in host_checks:
            self.command("SCHEDULE_FORCED_HOST_CHECK", host, str(now))
        for host in hosts:
            self.command("SCHEDULE_FORCED_HOST_SVC_CHECKS", host, str(now))
        return now

    def status(self) -> tuple[dict, dict]:
        """(host -> hoststatus, (host, service) -> servicestatus) from status.dat."""
        text = (self.workdir / "status.dat").read_text(errors="replace")
        hosts = {b["host_name"]: b for b in _blocks(text, "hoststatus")}
        services = {(b["host_name"], b["service_description"]): b
                    for b in _blocks(text, "servicestatus")}
        return hosts, services

    def wait_checked(self, since: int, timeout: float, hosts: list[str] = ()) -> tuple[dict, dict]:
        """status() once every service and each of `hosts` has a check result from `since` on."""
        end = time.monotonic() + timeout
        while True:
            host_status, services = self.status()
            pending = [name for name, attrs in services.items()
                       if int(attrs["last_check"]) < since]
            pending += [name for name in hosts if int(host_status[name]["last_check"]) < since]
            if not pending:
                return host_status, services
            if time.monotonic() > end:
                raise AssertionError(f"not checked within {timeout}s: {pending}\n" + self.log())
            time.sleep(0.25)

    def executed(self) -> dict[tuple[str, str | None], str]:
        """(host, service; None for the host check) -> the command line Nagios ran last."""
        commands: dict[tuple[str, str | None], str] = {}
        check = None
        for line in (self.workdir / "debug.log").read_text(errors="replace").splitlines():
            match = re.search(r"\] Checking (?:service '(.*)' on )?host '(.*)'\.\.\.$", line)
            if match:
                check = (match.group(2), match.group(1))
                continue
            match = re.search(r"Done\.  Final output: '(.*)'$", line)
            if match and check:
                commands[check] = match.group(1)
                check = None
        return commands
