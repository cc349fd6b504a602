"""The project's Icinga 2 configuration (icinga2-conf/*.conf) passes the real `icinga2 daemon -C`;
every file names the one plugin directory; the man pages pass `mandoc -T lint`.
(tests/test_icinga_daemon.py and tests/test_nrpe.py run the configuration in real daemons.)

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


# -- the install path: one place, named the same everywhere ------------------------------

ROOT = CONF_DIR.parent
PREFIX = "/opt/check_smtp_posture"


def test_every_file_names_the_same_plugin_directory():
    """The constant, the NRPE snippet, the Makefile and the tests agree on where the
    plugins are installed for the nagios user."""
    from tests.lab.icinga import PLUGIN_BIN
    from tests.lab.nrpe import snippet_commands

    constants = (CONF_DIR / "check_smtp_posture-constants.conf").read_text()
    assert f'const CheckSmtpPostureBinDir = "{PREFIX}/bin"' in constants
    assert str(PLUGIN_BIN) == f"{PREFIX}/bin"
    assert f"NAGIOS_PREFIX ?= {PREFIX}\n" in (ROOT / "Makefile").read_text()
    commands = snippet_commands((CONF_DIR / "nrpe.d-check_smtp_posture.cfg").read_text())
    assert commands
    for line in commands.values():
        assert line.startswith(f"{PREFIX}/bin/check_"), line


def test_every_check_command_runs_from_the_plugin_directory():
    for path in CONF_DIR.glob("check_*.conf"):
        for command in re.findall(r"^\s*command\s*=\s*\[([^\]]*)\]", path.read_text(), re.M):
            assert command.strip() == f'CheckSmtpPostureBinDir + "/{path.stem}"', path.name


# -- man pages ---------------------------------------------------------------------------

MANDOC = shutil.which("mandoc") or "/usr/bin/mandoc"
MAN_PAGES = sorted((ROOT / "man").glob("*.[1-8]"))


def _lint(page: Path, level: str) -> subprocess.CompletedProcess:
    return subprocess.run([MANDOC, "-T", "lint", "-W", level, str(page)],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.skipif(not Path(MANDOC).exists(), reason="mandoc is not installed (make install)")
@pytest.mark.parametrize("page", MAN_PAGES, ids=lambda p: p.name)
def test_man_page_has_no_mandoc_warning(page):
    """No warning or error (a .TH date mandoc cannot parse is one)."""
    lint = _lint(page, "warning")
    assert (lint.returncode, lint.stdout + lint.stderr) == (0, "")


@pytest.mark.skipif(not Path(MANDOC).exists(), reason="mandoc is not installed (make install)")
def test_man_pages_are_mandoc_lint_clean():
    lints = [_lint(page, "style") for page in MAN_PAGES]
    assert "".join(lint.stdout + lint.stderr for lint in lints) == ""


# -- every argument in ITL style, checked against the plugin's own parser ----------------

def _argument_blocks(text: str) -> dict[str, str]:
    """option -> the text of its `"--option" = { ... }` block in `arguments`."""
    body = text[text.index("arguments = {"):]
    blocks = {}
    for match in re.finditer(r'^\s*"(--?[A-Za-z0-9][a-z0-9-]*)"\s*=\s*\{', body, re.M):
        depth, end = 0, match.end() - 1
        for end in range(match.end() - 1, len(body)):
            depth += {"{": 1, "}": -1}.get(body[end], 0)
            if depth == 0:
                break
        blocks[match.group(1)] = body[match.end():end]
    return blocks


def _plugin_actions(script: str) -> dict:
    import importlib

    from tests.lab.icinga import REPO

    config = re.search(rf"^\s*{script} = ([\w.]+):", (REPO / "setup.cfg").read_text(), re.M)
    parser = importlib.import_module(config.group(1)).build_parser()
    actions = {}
    for action in parser._actions:
        names = [o for o in action.option_strings if o.startswith("--")] or action.option_strings
        if names and not set(names) & {"--help", "--version", "--list-zones",
                                         "--oauth2-authorize"}:
            actions[names[0]] = action
    return actions


@pytest.mark.parametrize("script", ["check_smtp_phases", "check_mx_sanity", "check_dnsbl",
                                    "check_spf", "check_open_relay", "check_dane",
                                    "check_mta_sts", "check_mail_roundtrip",
                                    "check_dkim", "check_dmarc"])
def test_every_argument_is_passed_only_when_its_variable_says_so(script):
    """Flags by set_if, optional values only when set and not empty (set_if), repeatable
    options with repeat_key, the verbosity as -v..-vvv; a description each."""
    import argparse

    blocks = _argument_blocks((CONF_DIR / f"{script}.conf").read_text())
    for option, action in _plugin_actions(script).items():
        block = blocks[option]
        assert "description = " in block, option
        if isinstance(action, argparse._CountAction):
            assert "skip_key = true" in block and '"-vvv"' in block, option
        elif action.nargs == 0:
            assert re.search(r'set_if = "\$\w+\$"', block) and "value" not in block, option
        elif "required = true" in block:
            assert action.required or option == "--domain", option
        else:
            assert re.search(r"set_if = \{\{", block), option
        assert ("repeat_key = true" in block) == isinstance(action, argparse._AppendAction), \
            option


def test_every_man_page_is_installed_with_the_package():
    import configparser

    config = configparser.ConfigParser()
    config.read(CONF_DIR.parent / "setup.cfg")
    installed = {line.strip() for value in config["options.data_files"].values()
                 for line in value.strip().splitlines()}
    assert installed == {f"man/{page.name}" for page in MAN_PAGES}
