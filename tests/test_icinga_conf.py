"""The project's Icinga 2 configuration (icinga2-conf/*.conf) passes the real `icinga2 daemon -C`.

The files are loaded together, the way an operator would drop them into
/etc/icinga2/conf.d, next to everything a default Debian install loads: the ITL
(itl, plugins, plugins-contrib, manubulon, windows-plugins, nscp) -- so a
CheckCommand name clashing with an ITL one fails here -- and the default
templates (generic-host, generic-service, ...) that examples may import.
Icinga runs against a temporary directory (constants ConfigDir, DataDir, ...),
not the system daemon's.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ICINGA2 = shutil.which("icinga2") or "/usr/sbin/icinga2"
CONF_DIR = Path(__file__).resolve().parents[1] / "icinga2-conf"
#: default conf.d files that define templates, groups, users, time periods, notifications
DEFAULT_CONF_D = Path("/etc/icinga2/conf.d")
DEFAULT_CONF_D_FILES = ("templates.conf", "timeperiods.conf", "groups.conf", "users.conf",
                        "commands.conf", "notifications.conf")

_HEADER = """\
const PluginDir = "/usr/lib/nagios/plugins"
const ManubulonPluginDir = "/usr/lib/nagios/plugins"
const PluginContribDir = "/usr/lib/nagios/plugins"
const NodeName = "lab-master.posture.test"
const ZoneName = NodeName
const TicketSalt = ""
include <itl>
include <plugins>
include <plugins-contrib>
include <manubulon>
include <windows-plugins>
include <nscp>
"""

_DIRS = {"ConfigDir": "etc", "DataDir": "lib", "LogDir": "log", "CacheDir": "cache",
         "SpoolDir": "spool", "InitRunDir": "run"}

pytestmark = pytest.mark.skipif(not Path(ICINGA2).exists(),
                                reason="icinga2 is not installed (run `make install`)")


def project_conf_files() -> list[Path]:
    return sorted(CONF_DIR.glob("*.conf"))


def validate(workdir: Path, files: list[Path]) -> subprocess.CompletedProcess:
    """Run `icinga2 daemon -C` on the ITL + default templates + `files`."""
    for sub in _DIRS.values():
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    lines = [_HEADER]
    lines += [f'include "{DEFAULT_CONF_D / name}"' for name in DEFAULT_CONF_D_FILES
              if (DEFAULT_CONF_D / name).exists()]
    lines += [f'include "{path}"' for path in files]
    main = workdir / "etc" / "icinga2.conf"
    main.write_text("\n".join(lines) + "\n")
    defines = [f"-D{name}={workdir / sub}" for name, sub in _DIRS.items()]
    # Run as root without switching to the system's nagios user (whose dirs these aren't).
    defines += ["-DRunAsUser=root", "-DRunAsGroup=root"]
    return subprocess.run([ICINGA2, "daemon", "-C", "-c", str(main),
                           *defines], capture_output=True, text=True, timeout=120)


def test_project_icinga2_conf_validates(tmp_path):
    files = project_conf_files()
    result = validate(tmp_path, files)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"icinga2 daemon -C failed for {[f.name for f in files]}:\n" \
                                   + output[-6000:]
    # Every object the project defines was really instantiated (no file silently skipped).
    dumped = (tmp_path / "cache" / "icinga2.debug").read_bytes().decode("utf-8", "replace")
    for path in files:
        for kind, name in re.findall(r'^\s*object\s+(\w+)\s+"([^"]+)"', path.read_text(),
                                     flags=re.M):
            assert f'"{name}"' in dumped, f"{path.name}: {kind} {name!r} not instantiated"


def test_a_broken_file_is_caught(tmp_path):
    """The harness itself: a bad file must fail validation, or the test above proves nothing."""
    bad = tmp_path / "bad.conf"
    bad.write_text('object CheckCommand "smtp" {\n  command = [ "x" ]\n}\n')  # ITL has "smtp"
    result = validate(tmp_path / "icinga", [bad])
    assert result.returncode != 0
    assert "smtp" in result.stdout + result.stderr
