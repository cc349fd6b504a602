"""The project's Nagios Core configuration (nagios-conf/) passes the real `nagios4 -v`,
and everything a command definition would hand a plugin is an option of that plugin.
(tests/test_nagios_daemon.py runs the configuration in a real daemon.)

The files are loaded together, as an operator's Debian nagios4 loads them: next to
Debian's stock objects (templates, contacts, time periods) and every command of
/etc/nagios-plugins/config, so a name clashing with a Debian plugin package's fails
here. The objects are read back as Nagios resolved them (`nagios4 -vp` writes
objects.precache: every template applied), not as a parser of ours would guess.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.lab.icinga import PLUGIN_DIR, console_scripts
from tests.lab.nagios import (
    CONF_DIR,
    EXAMPLES,
    NAGIOS4,
    SHIPPED,
    STOCK_CFG_DIR,
    STOCK_OBJECT_FILES,
    Nagios,
    custom_macros,
    parse_objects,
)

pytestmark = [pytest.mark.skipif(not Path(NAGIOS4).exists(),
                                 reason="nagios4 is not installed (run `make install`)"),
              pytest.mark.skipif(os.geteuid() != 0,
                                 reason="nagios4 -v runs in a directory of the nagios user")]

ROOT = CONF_DIR.parent
FILES = [CONF_DIR / name for name in (*SHIPPED, *EXAMPLES)]
BARE_HOST = "bare.test"


def validate(files: list[Path],
             precache: bool = False) -> tuple[Nagios, subprocess.CompletedProcess]:
    nagios = Nagios(cfg_files=[*STOCK_OBJECT_FILES, *files], cfg_dirs=[STOCK_CFG_DIR],
                    resources={"USER1": str(PLUGIN_DIR)})
    return nagios, nagios.validate(precache=precache)


def bare_services() -> str:
    """A domain host and services made of the shipped templates alone: each service
    template with its own command, and each command no template names with every
    template of its plugin (as the templates' comments tell: check_command ...)."""
    objects = parse_objects((CONF_DIR / "check_smtp_posture-templates.cfg").read_text())
    templates = [o for o in objects if o.kind == "service" and o.get("check_command")]
    commands = shipped_commands()
    named = {o.attrs["check_command"] for o in objects if o.get("check_command")}
    pairs = [(t.attrs["name"], t.attrs["check_command"]) for t in templates]
    pairs += [(t.attrs["name"], name) for name in commands if name not in named
              for t in templates
              if words(commands[t.attrs["check_command"]])[0] == words(commands[name])[0]]
    text = ("define host {\n    use smtp-posture-domain,generic-host\n"
            f"    host_name {BARE_HOST}\n    contact_groups admins\n}}\n")
    for template, command in pairs:
        text += (f"define service {{\n    use {template},generic-service\n"
                 f"    host_name {BARE_HOST}\n    service_description {template} {command}\n"
                 f"    check_command {command}\n}}\n")
    return text


@pytest.fixture(scope="module")
def resolved(tmp_path_factory):
    """The shipped files, the examples and bare_services(), validated; every object as
    Nagios resolved it."""
    import shutil

    bare = tmp_path_factory.mktemp("nagios") / "bare.cfg"
    bare.write_text(bare_services())
    nagios, result = validate([*FILES, bare], precache=True)
    try:
        yield result, nagios.precached_objects()
    finally:
        shutil.rmtree(nagios.workdir, ignore_errors=True)


def test_shipped_configuration_validates_without_a_warning(resolved):
    result, _ = resolved
    assert result.returncode == 0, result.stdout[-6000:]
    assert "Total Warnings: 0\n" in result.stdout and "Total Errors:   0\n" in result.stdout, \
        result.stdout[-6000:]


def test_every_object_of_the_files_was_read(resolved):
    """No file silently skipped: every command, host and service is in the precache."""
    _, objects = resolved
    have = {(o.kind, o.get("command_name") or o.get("host_name"), o.get("service_description"))
            for o in objects}
    for path in FILES:
        for obj in parse_objects(path.read_text()):
            if obj.get("register") == "0":
                continue
            key = (obj.kind, obj.get("command_name") or obj.get("host_name"),
                   obj.get("service_description"))
            assert key in have, f"{path.name}: {key} not loaded"


def test_a_clash_with_a_debian_command_is_caught(tmp_path):
    """The harness itself: a name Debian's plugin packages use must fail validation."""
    import shutil

    clash = tmp_path / "clash.cfg"
    clash.write_text("define command {\n    command_name    check_smtp\n"
                     "    command_line    $USER1$/check_smtp_phases -H '$HOSTADDRESS$'\n}\n")
    nagios, result = validate([clash])
    shutil.rmtree(nagios.workdir, ignore_errors=True)
    assert result.returncode != 0
    assert "Duplicate definition found for command 'check_smtp'" in result.stdout


# -- the command definitions ---------------------------------------------------------------

def shipped_commands() -> dict[str, str]:
    """command_name -> command_line of nagios-conf/check_smtp_posture.cfg."""
    return {obj.attrs["command_name"]: obj.attrs["command_line"]
            for obj in parse_objects((CONF_DIR / "check_smtp_posture.cfg").read_text())
            if obj.kind == "command"}


def words(command_line: str) -> list[str]:
    """The command line as the shell splits it, every macro left out: the plugin and the
    options and values the definition itself gives."""
    return shlex.split(re.sub(r"\$[A-Z0-9_]*\$", "", command_line.replace("$USER1$/", "")))


@cache
def plugin_help(plugin: str) -> str:
    """What `PLUGIN --help` prints: the family's from this tree, check_nrpe Debian's."""
    scripts = console_scripts()
    argv = ([sys.executable, "-m", scripts[plugin]] if plugin in scripts
            else [str(PLUGIN_DIR / plugin)])
    result = subprocess.run([*argv, "--help"], capture_output=True, text=True, timeout=30,
                            cwd=ROOT)
    assert "usage: " in result.stdout.lower(), result.stdout + result.stderr
    return result.stdout


def not_in_help(plugin: str, arguments: list[str]) -> list[str]:
    """The options among `arguments` that PLUGIN --help does not list."""
    text = plugin_help(plugin)
    return [arg for arg in arguments if arg.startswith("-")
            and not re.search(rf"(?<![\w-]){re.escape(arg.split('=')[0])}(?![\w-])", text)]


def test_every_console_script_has_a_command_running_it():
    ran = {words(line)[0] for line in shipped_commands().values()}
    assert set(console_scripts()) <= ran


def test_every_command_runs_a_plugin_from_user1():
    for name, line in shipped_commands().items():
        assert re.match(r"\$USER1\$/check_\w+ ", line), (name, line)


@pytest.mark.parametrize("name", sorted(shipped_commands()))
def test_every_option_a_command_passes_is_in_the_plugins_help(name):
    plugin, *arguments = words(shipped_commands()[name])
    assert not_in_help(plugin, arguments) == []


def test_the_help_check_catches_an_option_the_plugin_lacks():
    """The harness itself: a misspelt option and another plugin's option are caught."""
    assert not_in_help("check_spf", ["-D", "--check-mx", "--check-mxs", "--require-starttls",
                                     "--max-length=450"]) == ["--check-mxs",
                                                              "--require-starttls"]


def test_every_command_but_the_host_check_takes_any_option_through_options():
    """Each service command ends with the service's _OPTIONS, so every option of its
    plugin can be given; the domain commands take the host's _MAIL_DOMAIN_OPTIONS
    (check_dane excepted: its resolver must validate)."""
    for name, line in shipped_commands().items():
        if name == "check_smtp_posture_domain":
            assert line.endswith(" $_HOSTMAIL_DOMAIN_OPTIONS$"), line
            continue
        assert line.endswith(" $_SERVICEOPTIONS$"), (name, line)
        if "$_HOSTMAIL_DOMAIN$" in line and name != "check_dane":
            assert line.endswith(" $_HOSTMAIL_DOMAIN_OPTIONS$ $_SERVICEOPTIONS$"), (name, line)


def test_passwords_come_only_from_files_named_in_resource_cfg():
    for name, line in shipped_commands().items():
        for option, value in re.findall(r"(--[\w-]*password[\w-]*)\s+(\S+)", line):
            assert option.endswith("-file") and re.fullmatch(r"'\$USER\d+\$'", value), \
                (name, option, value)
    for path in FILES:  # no custom variable carries one, nor the name of a file
        for obj in parse_objects(path.read_text()):
            for key, value in obj.attrs.items():
                if key.startswith("_"):
                    assert "password" not in f"{key} {value}".lower(), (path.name, key)


# -- what the services hand the plugins, as Nagios resolved them ---------------------------

def _services_and_domain_hosts(objects):
    hosts = {o.attrs["host_name"]: o for o in objects if o.kind == "host"}
    commands = {o.attrs["command_name"]: o.attrs["command_line"]
                for o in objects if o.kind == "command"}
    checks = [(o, hosts[o.attrs["host_name"]]) for o in objects if o.kind == "service"]
    checks += [(host, host) for host in hosts.values() if host.get("check_command")]
    return [(obj, host, commands[obj.attrs["check_command"].split("!")[0]])
            for obj, host in checks]


def test_every_custom_variable_a_command_reads_is_defined(resolved):
    """Nagios 4.4 passes an undefined $_SERVICEX$ on literally: the templates define
    every variable the commands read, for each service and host that uses them."""
    _, objects = resolved
    checked = 0
    for obj, host, command_line in _services_and_domain_hosts(objects):
        for macro in custom_macros(command_line):
            owner, variable = ((obj, macro[8:]) if macro.startswith("_SERVICE")
                               else (host, macro[5:]))
            assert f"_{variable}" in owner.attrs, (obj.attrs, macro)
            checked += 1
    assert checked > 40


def test_every_option_a_service_passes_is_in_its_plugins_help(resolved):
    """_OPTIONS of every example service and template, and the host's
    _MAIL_DOMAIN_OPTIONS where the command takes them."""
    _, objects = resolved
    for obj, host, command_line in _services_and_domain_hosts(objects):
        plugin = words(command_line)[0]
        given = shlex.split(obj.get("_OPTIONS"))
        if "$_HOSTMAIL_DOMAIN_OPTIONS$" in command_line:
            given += shlex.split(host.get("_MAIL_DOMAIN_OPTIONS"))
        assert not_in_help(plugin, given) == [], (obj.attrs, given)


def test_no_custom_variable_needs_a_character_nagios_strips():
    """Nagios removes illegal_macro_output_chars (Debian's nagios.cfg) from every macro
    value: a shipped value with one would reach the plugin mangled."""
    debian = Path("/etc/nagios4/nagios.cfg").read_text()
    illegal = re.search(r"^illegal_macro_output_chars=(.*)$", debian, re.M).group(1)
    assert set("<>'\"") <= set(illegal)
    for path in FILES:
        for obj in parse_objects(path.read_text()):
            for key, value in obj.attrs.items():
                if key.startswith("_"):
                    assert not set(value) & set(illegal), (path.name, key, value)


def test_each_nrpe_example_service_asks_a_command_of_the_nrpe_snippet(resolved):
    from tests.lab.nrpe import snippet_commands

    _, objects = resolved
    snippet = snippet_commands((ROOT / "icinga2-conf" / "nrpe.d-check_smtp_posture.cfg")
                               .read_text())
    asked = [o.attrs["_NRPE_COMMAND"] for o in objects
             if o.kind == "service" and o.get("check_command") == "check_nrpe_smtp_posture"
             and o.attrs["host_name"] != BARE_HOST]
    assert sorted(asked) == sorted(snippet)


# -- man pages: a Nagios Core example each -------------------------------------------------

@pytest.mark.parametrize("script", sorted(console_scripts()))
def test_man_page_shows_a_template_that_runs_its_plugin(script):
    """Each plugin page's Nagios Core example uses a shipped service template whose
    command runs that plugin."""
    templates = {o.attrs["name"]: o for o in
                 parse_objects((CONF_DIR / "check_smtp_posture-templates.cfg").read_text())
                 if o.kind == "service"}
    commands = shipped_commands()
    page = (ROOT / "man" / f"{script}.1").read_text()
    used = re.findall(r"^\s*use\s+(smtp-posture-[\w-]+)", page.replace("\\-", "-"), re.M)
    assert used, f"man/{script}.1 shows no Nagios Core service"
    for name in used:
        assert words(commands[templates[name].attrs["check_command"]])[0] == script, name
