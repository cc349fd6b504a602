"""The contract every plugin keeps, checked for every console script of setup.cfg.

Usage errors exit 3 with usage and the reason on stdout; -V and --help; a
silent DNS server ends the run within -t in the --unreachable-state state;
an internal error is UNKNOWN without a traceback; the man page and the Icinga 2
CheckCommand name every option and nothing else; the cheap paths import
neither dnspython nor cryptography.
"""

from __future__ import annotations

import configparser
import importlib
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from check_smtp_posture import __version__
from tests import secretguard
from tests.conftest import run_main

ROOT = Path(__file__).resolve().parents[1]


def console_scripts() -> dict:
    """console script name -> plugin module, from setup.cfg."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    scripts = {}
    for line in config["options.entry_points"]["console_scripts"].strip().splitlines():
        name, _, target = (part.strip() for part in line.partition("="))
        scripts[name] = importlib.import_module(target.split(":")[0])
    return scripts


SCRIPTS = console_scripts()
NAMES = sorted(SCRIPTS)
#: the status-line name of each plugin
STATUS = {"check_smtp_phases": "SMTP_PHASES", "check_mx_sanity": "MX_SANITY",
          "check_dnsbl": "DNSBL", "check_spf": "SPF", "check_open_relay": "OPEN_RELAY",
          "check_mta_sts": "MTA_STS", "check_dane": "DANE",
          "check_mail_roundtrip": "MAIL_ROUNDTRIP",
          "check_dkim": "DKIM", "check_dmarc": "DMARC"}
#: what makes each plugin ask about a domain's MX set
MX_ARGS = {"check_spf": ["--check-mx"],
           "check_mail_roundtrip": ["--to", "probe@posture.test", "--from", "m@posture.test",
                                    "--mailbox", "maildir:/nonexistent"],
           "check_dkim": ["--selector", "s1"]}


def test_every_console_script_is_covered():
    assert set(NAMES) == set(STATUS)


@pytest.mark.parametrize("script", NAMES)
@pytest.mark.parametrize("argv, message", [
    (["-D", "a..b"], "bad domain name 'a..b'"),
    (["-D", "x" * 64 + ".test"], "bad domain name"),
    (["-D", "\u00e4" * 62 + ".test"], "bad domain name"),  # 62 letters, 130 octets encoded
    (["-D", "mx .test"], "bad domain name"),
    (["-D", "localhost"], "bad domain name 'localhost'"),
    (["-D", "posture.test", "-t", "nan"], "not a finite number: 'nan'"),
    (["-D", "posture.test", "-t", "0"], "must be greater than zero"),
    (["-D", "posture.test", "--unreachable-state", "ok"], "invalid choice: 'ok'"),
    (["-D", "posture.test", "--query-timeout", "inf"], "not a finite number: 'inf'"),
])
def test_usage_errors_exit_3_with_usage_and_reason_on_stdout(script, argv, message):
    run = run_main(SCRIPTS[script].main, argv)
    assert run.exitcode == 3, run.output
    assert run.output.startswith(f"usage: {script}")
    assert f"{script}: error: " in run.output and message in run.output


@pytest.mark.parametrize("script", NAMES)
def test_version_and_help(script):
    version = run_main(SCRIPTS[script].main, ["-V"])
    assert (version.exitcode, version.output) == (0, f"{script} {__version__}\n")
    helptext = run_main(SCRIPTS[script].main, ["--help"])
    assert helptext.exitcode == 0
    assert helptext.output.startswith(f"usage: {script}")
    assert "--unreachable-state" in helptext.output


@pytest.fixture
def silent_dns():
    """A UDP socket that reads queries and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.28.97", 0))
        yield f"127.0.28.97:{sink.getsockname()[1]}"


@pytest.mark.slow
@pytest.mark.parametrize("script", NAMES)
@pytest.mark.parametrize("state, exitcode", [(None, 2), ("warning", 1), ("unknown", 3)])
def test_silent_dns_ends_within_the_timeout_in_the_unreachable_state(script, state, exitcode,
                                                                     silent_dns):
    argv = ["-D", "posture.test", "--dns-server", silent_dns, "-t", "0.6",
            *MX_ARGS.get(script, [])]
    if state:
        argv += ["--unreachable-state", state]
    started = time.monotonic()
    run = run_main(SCRIPTS[script].main, argv)
    elapsed = time.monotonic() - started
    assert elapsed < 0.6 + 0.5, run.output
    assert run.exitcode == exitcode, run.output
    word = ["OK", "WARNING", "CRITICAL", "UNKNOWN"][exitcode]
    assert run.first_line.startswith(f"{STATUS[script]} {word} - "), run.output


@pytest.mark.parametrize("script", NAMES)
def test_internal_error_is_unknown_without_traceback(script, silent_dns, monkeypatch):
    from check_smtp_posture.dnslookup import DnsClient

    def boom(self, name, rdtype):
        raise RuntimeError("boom")

    monkeypatch.setattr(DnsClient, "query", boom)
    run = run_main(SCRIPTS[script].main, ["-D", "posture.test", "--dns-server", silent_dns,
                                          *MX_ARGS.get(script, [])])
    assert run.exitcode == 3, run.output
    assert run.output == f"{STATUS[script]} UNKNOWN - internal error: RuntimeError: boom\n"


def parser_options(script) -> set:
    """Every option string of the plugin's parser."""
    parser = SCRIPTS[script].build_parser()
    return {o for a in parser._actions for o in a.option_strings}


def man_options(script) -> set:
    """Option strings in the OPTIONS section of the plugin's man page."""
    text = (ROOT / "man" / f"{script}.1").read_text()
    section = re.search(r"^\.SH OPTIONS\n(.*?)(?=^\.SH )", text, re.S | re.M)
    assert section, f"{script}.1 has no OPTIONS section"
    options = set()
    for line in section.group(1).splitlines():
        if line.startswith((".TP", ".B", ".BR", ".BI", ".IP", "\\fB")):
            plain = re.sub(r"\\f[BIRP]", " ", line).replace("\\-", "-")
            options.update(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*|-[A-Za-z0-9])\b", plain))
    return options


def command_options(script) -> set:
    """Option strings the plugin's Icinga 2 CheckCommand passes."""
    text = (ROOT / "icinga2-conf" / f"{script}.conf").read_text()
    return set(re.findall(r'^\s*"(--?[A-Za-z0-9][a-z0-9-]*)"\s*=\s*[{"]', text, re.M))


@pytest.mark.parametrize("script", NAMES)
def test_man_page_names_every_option_and_nothing_else(script):
    assert man_options(script) == parser_options(script)


@pytest.mark.parametrize("script", NAMES)
def test_check_command_passes_every_option_and_nothing_else(script):
    parser = SCRIPTS[script].build_parser()
    wanted = set()
    for action in parser._actions:
        names = [o for o in action.option_strings if o.startswith("--")] or action.option_strings
        if not names or set(names) & {"--help", "--version", "--list-zones", "--oauth2-authorize"}:
            continue
        wanted.add(names[0])
    assert command_options(script) == wanted


@pytest.mark.parametrize("script", NAMES)
def test_startup_imports_neither_dnspython_nor_cryptography(script):
    # Startup is most of a plugin's cost when Icinga runs thousands of checks.
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", SCRIPTS[script].__name__,
                           "-V"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout
    modules = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()}
    assert "check_smtp_posture.nagios.cli" in modules  # the plugin really ran
    assert not {m for m in modules if m == "dns" or m.startswith(("dns.", "cryptography"))}


def imported_modules(*args: str) -> tuple[subprocess.CompletedProcess, set]:
    """The run of `python -m args` and the modules it imported (-X importtime)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", *args],
                          capture_output=True, text=True, timeout=30)
    return proc, {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                  if line.startswith("import time:")}


def _loaded(modules: set, packages) -> list:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


#: what an SMTP run of one address without TLS has no use for: dnspython (no name to
#: look up), cryptography and our TLS module (no certificate), a thread pool (one
#: endpoint), AUTH's digests, typing (annotations only), the message builder (no DATA)
NOT_FOR_A_PLAIN_SMTP_RUN = ("dns", "cryptography", "check_smtp_posture.tls",
                            "check_smtp_posture.dnslookup", "concurrent", "hmac", "hashlib",
                            "typing", "email", "check_smtp_posture.smtp.message",
                            "check_smtp_posture.smtp.proxy")


@pytest.mark.parametrize("script, extra", [
    ("check_smtp_phases", ["--no-starttls"]),
    ("check_open_relay", ["-D", "posture.test"]),  # -D names the recipients' domain only
])
def test_a_plain_run_of_an_address_imports_only_what_it_uses(script, extra, fake_smtp):
    # The import budget of the cheapest runs, listed rather than timed: a module in
    # this list is several ms of CPU on every run Icinga starts.
    server = fake_smtp()
    _, bare = imported_modules("site")  # what the interpreter loads by itself
    proc, modules = imported_modules(SCRIPTS[script].__name__, "-H", server.host,
                                     "-p", str(server.port), *extra)
    assert proc.stdout.startswith(f"{script[6:].upper()} "), proc.stdout + proc.stderr[-500:]
    assert server.commands[:1] == ["EHLO"]  # the run really spoke SMTP
    assert _loaded(modules - bare, NOT_FOR_A_PLAIN_SMTP_RUN) == []


def test_a_run_without_tls_does_not_load_ssl(fake_smtp):
    server = fake_smtp()
    _, bare = imported_modules("site")
    proc, modules = imported_modules(SCRIPTS["check_smtp_phases"].__name__, "-H", server.host,
                                     "-p", str(server.port), "--no-starttls")
    assert proc.stdout.startswith("SMTP_PHASES OK - "), proc.stdout
    assert _loaded(modules - bare, ("ssl", "_ssl")) == []


# -- secrets: no plugin shows or stores the password, whatever the server echoes ----------

SECRET = "hunter2-Secret"


def _secret_forms(user: str = "u") -> list:
    """The password as it could leak: raw, base64 (LOGIN), inside a PLAIN token..."""
    return list(secretguard.forms(SECRET, ["", user]).values())


@pytest.mark.parametrize("where", ["stdout", "stderr"])
def test_the_secret_guard_finds_every_form_of_a_password_the_run_was_given(where, tmp_path):
    # Every plugin run of the tests passes the guard (conftest.run_main and the process
    # runners of the fault matrix): it must fail on each form, from a variable or a file.
    tricky = "pa\"ss\\wo'rd"
    secret_file = tmp_path / "secret"
    secret_file.write_text(tricky + "\nnot the password\n")
    runs = [(["--sasl-user", "u"], {"CHECK_SMTP_PASSWORD": tricky}),
            (["--mailbox", "imaps://m%40x.test@h.x.test/", "--mailbox-password-file",
              str(secret_file)], {}),
            ([f"--sasl-password-file={secret_file}", "--sasl-user=u"], {})]
    for argv, env in runs:
        shown = secretguard.forms(tricky, secretguard.accounts_of(argv))
        assert len(set(shown.values())) >= 6, shown
        for form in shown.values():
            output = f"PLUGIN CRITICAL - refused: {form}\n"
            outputs = (output, "") if where == "stdout" else ("", output)
            with pytest.raises(secretguard.SecretShown, match="the .* form of a password"):
                secretguard.check(argv, env, *outputs)
        secretguard.check(argv, env, "PLUGIN CRITICAL - refused: ********\n", "")
    assert "not the password" not in secretguard.secrets_of(runs[1][0], {})


def _echo(session, line):
    return f"535 5.7.8 you sent {line.decode(errors='replace')}"


def _cram_md5_answer(challenge_b64: str) -> str:
    import base64
    import hmac

    digest = hmac.new(SECRET.encode(), base64.b64decode(challenge_b64), "md5").hexdigest()
    return base64.b64encode(f"u {digest}".encode()).decode()


CHALLENGE = "PDEyMzQ1LjY3ODlAcG9zdHVyZS50ZXN0Pg=="
#: per mechanism, a server that quotes back whatever the client sent
ECHO_SCRIPTS = {
    "PLAIN": {"AUTH": _echo},
    "LOGIN": {"AUTH": "334 VXNlcm5hbWU6", "dQ==": "334 UGFzc3dvcmQ6",
              "aHVudGVyMi1TZWNyZXQ=": _echo},
    "CRAM-MD5": {"AUTH": f"334 {CHALLENGE}", _cram_md5_answer(CHALLENGE).upper(): _echo},
}


@pytest.mark.lab
@pytest.mark.parametrize("script", NAMES)
def test_no_plugin_shows_or_stores_the_password(script, lab_dns, fake_smtp, tmp_path,
                                                 monkeypatch):
    # Every plugin at -vvv, with the password in the environment and in a file; the
    # ones that log in do so against servers that echo credentials in their refusal.
    # Every output and every file the run leaves must be free of it.
    monkeypatch.setenv("CHECK_SMTP_PASSWORD", SECRET)
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    runs = []
    if script == "check_smtp_phases":
        for mechanism, script_ in ECHO_SCRIPTS.items():
            server = fake_smtp(script_, ehlo_keywords=("AUTH PLAIN LOGIN CRAM-MD5",))
            runs.append((["-H", server.host, "-p", str(server.port), "--sasl-user", "u",
                          "--sasl-mechanism", mechanism, "--allow-plaintext-auth",
                          "--sasl-password-file", str(secret_file), "-vvv"], server))
    elif script == "check_open_relay":
        server = fake_smtp({"AUTH": _echo}, ehlo_keywords=("AUTH PLAIN",))
        runs.append((["-D", "posture.test", "-H", server.host, "-p", str(server.port),
                      "--dns-server", lab_dns.server_arg, "--probe", "plain*", "-vvv"], server))
    else:
        argv = ["-D", "posture.test", "--dns-server", lab_dns.server_arg, "-vvv",
                *MX_ARGS.get(script, [])]
        if "--state-file" in parser_options(script):
            argv += ["--state-file", str(state_dir / "state.json")]
        runs.append((argv, None))
    for argv, server in runs:
        run = run_main(SCRIPTS[script].main, argv)
        assert run.first_line.startswith(f"{STATUS[script]} "), run.output
        for form in _secret_forms():
            assert form not in run.output, (argv, run.output)
        if script == "check_smtp_phases":  # it did log in, and the server did echo
            assert server.wait_ended()
            assert "535 5.7.8 you sent" in run.output, run.output
    for path in tmp_path.rglob("*"):
        if path.is_file() and path != secret_file:
            data = path.read_bytes()
            assert not any(form.encode() in data for form in _secret_forms()), path
    if script == "check_mx_sanity":
        assert (state_dir / "state.json").exists()  # the state file was written and read


@pytest.mark.parametrize("script", NAMES)
def test_a_reader_that_goes_away_gets_no_traceback(script):
    # `check_x ... | head -1` closes the pipe before the usage is written.
    proc = subprocess.Popen([script, "-D", "a..b"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=30) == 3
    assert stderr == b""


def test_a_fault_before_the_run_is_unknown_without_traceback():
    """A fault while the arguments become a Check, outside the runner's own guard."""
    code = ("import sys; sys.argv[0] = '/usr/local/bin/check_smtp_phases'\n"
            "from check_smtp_posture.nagios import runner\n"
            "runner.console(lambda: 1 / 0)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=30)
    assert (done.returncode, done.stderr) == (3, ""), done.stderr
    assert done.stdout == ("SMTP_PHASES UNKNOWN - internal error: "
                           "ZeroDivisionError: division by zero\n")


def test_one_failure_state_whatever_the_protocol_failed():
    """SMTP, HTTPS and a mailbox fail with the same kinds (failures.py), and one rule
    (states.failure_state) gives every plugin the same state for them."""
    from nagiosplugin.state import Critical, Unknown, Warn

    from check_smtp_posture import failures
    from check_smtp_posture.https import HttpsError
    from check_smtp_posture.mailbox import MailboxError, connection_error
    from check_smtp_posture.nagios.states import failure_state
    from check_smtp_posture.smtp import errors

    unreached = [errors.SmtpConnectError("connect", "refused"),
                 errors.SmtpTimeout("banner", "timeout"),
                 HttpsError(failures.CONNECT, "connect", "refused"),
                 connection_error(TimeoutError(), "imap"),
                 connection_error(ConnectionRefusedError(111, "refused"), "imap")]
    assert [failure_state(e.kind, "warning") for e in unreached] == [Warn] * 5
    done_by_the_peer = [errors.SmtpConnectionClosed("data", "reset"),
                        errors.SmtpTlsError("starttls", "bad"),
                        HttpsError(failures.PROTOCOL, "response", "garbage"),
                        connection_error(ConnectionResetError(), "imap"),
                        MailboxError(failures.LOGIN, "refused")]
    assert [failure_state(e.kind, "warning") for e in done_by_the_peer] == [Critical] * 5
    assert failure_state(errors.SmtpUsageError("connect", "family").kind, "warning") == Unknown
