"""Fault matrix, areas "arguments" and "state files": what a plugin does with bad input.

A bad argument is a usage error: exit 3, the usage and `PROG: error: MESSAGE` on
stdout, nothing on stderr, no traceback, at once. Runs whose argv is not UTF-8,
that need an environment, name a file (a named pipe could hang them) or test the
output encoding run the installed console script as a user would (a subprocess
with a timeout); so do three rows for every plugin. The rest call main(argv)
in-process (conftest's run_main), which a subprocess would only make slower.
The state-file rows run check_mx_sanity (the one plugin that keeps state)
against the lab DNS.

Nothing here reaches a real server: DNS goes to a loopback address where
nothing listens (SINK_DNS), SMTP to a closed loopback port or the fake server.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests import secretguard
from tests.conftest import PluginRun, run_main
from tests.faultmatrix import Fault, check_says, said

BIN = Path(sys.executable).parent
STATUS = {"check_smtp_phases": "SMTP_PHASES", "check_mx_sanity": "MX_SANITY",
          "check_dnsbl": "DNSBL", "check_spf": "SPF", "check_open_relay": "OPEN_RELAY"}
ALL = tuple(STATUS)
PHASES, MX, DNSBL, SPF, RELAY = ALL
WITH_H = (PHASES, DNSBL, RELAY)
WITH_RANGES = (PHASES, DNSBL, SPF, RELAY)
WITH_CONCURRENCY = (PHASES, MX, DNSBL, RELAY)

#: where nothing listens: DNS questions go unanswered, SMTP connections are refused
SINK_HOST = "127.0.29.99"
SINK_DNS = f"{SINK_HOST}:9"
#: a valid target per plugin, for rows about another option
TARGET = {
    PHASES: ("-H", SINK_HOST, "-p", "9"),
    MX: ("-D", "posture.test"),
    DNSBL: ("--ip", "192.0.2.1", "--no-default-zones", "--zone", "bl.posture.test"),
    SPF: ("-D", "posture.test"),
    RELAY: ("-D", "posture.test", "-H", SINK_HOST, "-p", "9"),
}
#: before every argv: no system resolver, and a run that went ahead ends soon (a row's own
#: -t comes later and wins)
PREFIX = ("--dns-server", SINK_DNS, "-t", "5")
#: a usage error comes at once: well before a run that got as far as DNS could end
QUICK = 2.5
#: what starting a console script may take on a busy machine, on top of -t
STARTUP = 0.7
#: the runner's promise: a run ends within -t plus this
GRACE = 0.5

# Files the file options are pointed at, made by the `files` fixture.
MISSING, DIRECTORY, FIFO, LATIN1, BADNAME = ("<missing>", "<directory>", "<fifo>",
                                             "<latin1>", "<badname>")
SEND = ("--send-data", "--to", "x@posture.test")
NON_UTF8 = os.fsdecode(b"\xff\xfe")  # argv bytes as Python hands them over (surrogateescape)


@dataclass(frozen=True)
class Run:
    script: str
    argv: tuple
    env: dict = field(default_factory=dict)
    #: the option the error line must name (argparse's "argument -X/--xx:" or our own)
    option: str | None = None
    inprocess: bool = False  # argv a process cannot be given (NUL): main() in-process


RUNS: dict[str, list[Run]] = {}
DEFECTS: dict[str, str] = {}
MATRIX: list[Fault] = []


def row(id, area, fault, state, message, runs, *, defect=None) -> None:
    scripts = list(dict.fromkeys(r.script for r in runs))
    plugins = "all" if set(scripts) == set(ALL) else ", ".join(scripts)
    MATRIX.append(Fault(id, area, plugins, fault, state, message))
    RUNS[id] = runs
    if defect:
        DEFECTS[id] = defect


def usage(id, fault, message, runs, **kw) -> None:
    row(id, "arguments", fault + " (usage error)", "UNKNOWN", message, runs, **kw)


def each(scripts, *extra, target=True, option=None, env=None) -> list[Run]:
    """A Run per plugin: its TARGET (unless target=False) and `extra`."""
    return [Run(s, (*(TARGET[s] if target else ()), *extra), env or {}, option)
            for s in scripts]


# --------------------------------------------------------------------------- -t, DNS

usage("timeout-zero", "-t 0", "argument -t/--timeout: must be greater than zero: '0'",
      each(ALL, "-t", "0"))
usage("timeout-negative", "-t -1 (read as an option: every plugin has -4 and -6)",
      "argument -t/--timeout: expected one argument", each(ALL, "-t", "-1"))
usage("timeout-nan", "-t nan", "argument -t/--timeout: not a finite number: 'nan'",
      each(ALL, "-t", "nan"))
usage("timeout-inf", "-t inf", "argument -t/--timeout: not a finite number: 'inf'",
      each(ALL, "-t", "inf"))
usage("timeout-huge", "-t 1e11 (more than a day)",
      "argument -t/--timeout: must be at most 86400 seconds: '1e11'", each(ALL, "-t", "1e11"))
usage("timeout-not-a-number", "-t abc", "argument -t/--timeout: not a number: 'abc'",
      each(ALL, "-t", "abc"))
usage("query-timeout-nan", "--query-timeout nan",
      "argument --query-timeout: not a finite number: 'nan'",
      each(ALL, "--query-timeout", "nan"))
usage("dns-server-name", "--dns-server given a host name",
      "argument --dns-server: DNS server must be an IP address[:port]: 'ns.posture.test'",
      each(ALL, "--dns-server", "ns.posture.test"))
usage("concurrency-zero", "--concurrency 0", "argument --concurrency: must be at least 1: '0'",
      each(WITH_CONCURRENCY, "--concurrency", "0"))

# --------------------------------------------------------------------------- -H, -D, -p, --ip

for _id, _fault, _value, _shown in [
    ("host-empty", "-H ''", "", "''"),
    ("host-blank", "-H ' '", " ", "' '"),
    ("host-line-break", "-H with CR LF", "mx\r\nposture.test", "'mx\\r\\nposture.test'"),
    ("host-non-utf8", "-H with bytes that are not UTF-8", "mx" + NON_UTF8 + ".posture.test",
     "'mx\\udcff\\udcfe.posture.test'"),
    ("host-empty-label", "-H a..b", "a..b", "'a..b'"),
]:
    # check_dnsbl checks -H after parsing, in its own words (row host-option-named)
    usage(_id, _fault, f"bad host name {_shown}", each(WITH_H, "-H", _value))
usage("host-option-named", "check_dnsbl -H that is not a host name: the error names -H",
      "-H/--hostname: bad host name 'a..b'",
      each([DNSBL], "-H", "a..b", option="--hostname"))

for _id, _fault, _value, _shown in [
    ("domain-empty-label", "-D a..b", "a..b", " 'a..b'"),
    ("domain-single-label", "-D with a single label", "mailhost", " 'mailhost'"),
    ("domain-long-label", "-D with a 64-octet label", "x" * 64 + ".test", ""),
    ("domain-long-encoded-label", "-D with a label of 63 two-byte letters (126 octets)",
     "\u00e9" * 63 + ".test", ""),
    ("domain-non-utf8", "-D with bytes that are not UTF-8", NON_UTF8 + ".test",
     " '\\udcff\\udcfe.test'"),
    ("domain-too-long", "-D of 255 octets (more than 253)", ".".join(["x" * 63] * 4), ""),
]:
    usage(_id, _fault, f"argument -D/--domain: bad domain name{_shown}",
          each(ALL, "-D", _value, target=False))
row("domain-trailing-dot", "arguments",
    "-D with a trailing dot: a valid name, the run goes ahead (here: DNS silent, "
    "--unreachable-state warning)", "WARNING", "TIMEOUT (no answer within",
    each(ALL, "-D", "posture.test.", "--unreachable-state", "warning", "-t", "0.5",
         target=False))

for _id, _value, _message in [
    ("port-zero", "0", "port out of range 1-65535: '0'"),
    ("port-too-big", "65536", "port out of range 1-65535: '65536'"),
    ("port-not-a-number", "x", "not a port number: 'x'"),
]:
    usage(_id, f"-p {_value}", f"argument -p/--port: {_message}",
          each((PHASES, RELAY), "-p", _value))
usage("ip-not-an-address", "--ip not an address",
      "argument --ip: not an IP address: '192.0.2.300'", each((DNSBL, SPF), "--ip", "192.0.2.300"))

# --------------------------------------------------------------------------- SMTP arguments

_SMUGGLED = "probe@posture.test\r\nRSET"
usage("address-line-break", "--from, --to, --rcpt, --external-from, --external-rcpt with CR LF",
      "control characters in an address", [
          Run(PHASES, (*TARGET[PHASES], "--from", _SMUGGLED), option="--from"),
          Run(PHASES, (*TARGET[PHASES], "--to", _SMUGGLED), option="--to"),
          Run(RELAY, (*TARGET[RELAY], "--rcpt", _SMUGGLED), option="--rcpt"),
          Run(RELAY, (*TARGET[RELAY], "--external-from", _SMUGGLED), option="--external-from"),
          Run(RELAY, (*TARGET[RELAY], "--external-rcpt", _SMUGGLED), option="--external-rcpt"),
      ])
usage("address-brackets-inside", "an envelope address with angle brackets inside",
      "angle brackets inside an address", [
          Run(PHASES, (*TARGET[PHASES], "--from", "<a<b>@posture.test>"), option="--from"),
          Run(PHASES, (*TARGET[PHASES], "--to", "a<b>@posture.test"), option="--to"),
          Run(RELAY, (*TARGET[RELAY], "--rcpt", "a>b@posture.test"), option="--rcpt"),
      ])
usage("recipient-null", "'<>' as a recipient", "the null address <> cannot be a recipient", [
    Run(PHASES, (*TARGET[PHASES], "--to", "<>"), option="--to"),
    Run(RELAY, (*TARGET[RELAY], "--rcpt", "<>"), option="--rcpt"),
    Run(RELAY, (*TARGET[RELAY], "--external-rcpt", "<>"), option="--external-rcpt"),
])
usage("spf-sender-line-break", "check_spf --sender with CR LF",
      "--sender: control characters in an address",
      each([SPF], "--ip", "192.0.2.1", "--sender", _SMUGGLED, "-t", "1", option="--sender"))
usage("helo-line-break", "--helo-name with CR LF", "not a host name or [address] literal",
      each((PHASES, RELAY), "--helo-name", "probe.posture.test\r\nMAIL FROM:<>",
           option="--helo-name"))
usage("spf-helo-line-break", "check_spf --helo-name with CR LF",
      "--helo-name: not a host name or [address] literal",
      each([SPF], "--ip", "192.0.2.1", "--helo-name", "probe.posture.test\r\nx", "-t", "1",
           option="--helo"))
usage("command-line-break", "--command with CR LF",
      "argument --command: a line break or NUL in a command line",
      each([PHASES], "--command", "NOOP\r\nMAIL FROM:<>"))
row("command-nul", "arguments",
    "--command with NUL (main() called in-process: no process can be given a NUL) "
    "(usage error)", "UNKNOWN", "argument --command: a line break or NUL in a command line",
    [Run(PHASES, (*TARGET[PHASES], "--command", "NOOP\0x"), inprocess=True)])
usage("command-empty", "--command ''", "argument --command: an empty command line",
      each([PHASES], "--command", " "))
usage("command-non-utf8", "--command with bytes that are not UTF-8",
      "argument --command: not UTF-8 text: '\\udcff\\udcfe'",
      each([PHASES], "--command", NON_UTF8))
usage("payload-file-empty-name", "--payload-file ''", "--payload-file: empty payload file name",
      each([PHASES], *SEND, "--payload-file", ""))
usage("payload-without-send-data", "--payload without --send-data",
      "--payload/--payload-file need --send-data", each([PHASES], "--payload", "x"))

# --------------------------------------------------------------------------- named files


def _file_runs(path, *, text_only=False, ca=True):
    """A Run per option that names a file, pointed at `path`."""
    runs = [Run(PHASES, (*TARGET[PHASES], "--sasl-user", "u", "--sasl-password-file", path)),
            Run(DNSBL, (*TARGET[DNSBL], "--zones-file", path), option="--zones-file")]
    if not text_only:  # a payload is bytes, a CA bundle PEM: neither needs to be UTF-8
        runs.insert(0, Run(PHASES, (*TARGET[PHASES], *SEND, "--payload-file", path),
                           option="--payload-file"))
        if ca:
            runs.append(Run(PHASES, (*TARGET[PHASES], "--ca-file", path), option="--ca-file"))
    return runs


usage("file-missing", "--payload-file, --sasl-password-file, --zones-file, --ca-file: "
      "no such file", "PATH: No such file or directory", _file_runs(MISSING))
usage("file-directory", "a named file that is a directory", "PATH is not a regular file",
      _file_runs(DIRECTORY))
usage("file-fifo", "a named file that is a named pipe with no writer (-t 3): refused, not "
      "waited on", "PATH is not a regular file", _file_runs(FIFO))
usage("file-not-utf8", "--sasl-password-file, --zones-file not UTF-8 text",
      "PATH is not UTF-8 text", _file_runs(LATIN1, text_only=True))
usage("password-file-option-named", "an unusable --sasl-password-file: the error names the "
      "option", "--sasl-password-file: cannot read password file PATH",
      [Run(PHASES, (*TARGET[PHASES], "--sasl-user", "u", "--sasl-password-file", MISSING),
           option="--sasl-password-file")])
usage("file-name-not-utf8", "a named file whose name is not UTF-8, output strictly UTF-8 "
      "(PYTHONIOENCODING=utf-8, as in a UTF-8 locale other than C.UTF-8)",
      "No such file or directory",
      [Run(r.script, r.argv, {"PYTHONIOENCODING": "utf-8"}, r.option)
       for r in _file_runs(BADNAME)])

# --------------------------------------------------------------------------- TLS, SASL

for _id, _value in [("cert-days-nan", "nan,nan"), ("cert-days-overflow", "1e400,1"),
                    ("cert-days-one-number", "5"), ("cert-days-not-numbers", "x,y"),
                    ("cert-days-exponent", "1e-7,0")]:
    usage(_id, f"--cert-days {_value}", "--cert-days takes WARN,CRIT in days (0 to 36500), "
          f"not '{_value}'", each([PHASES], "--cert-days", _value))
usage("cert-days-crit-above-warn", "--cert-days 10,20 (critical above warning)",
      "--cert-days: the critical number of days must not exceed the warning one",
      each([PHASES], "--cert-days", "10,20"))
usage("sasl-user-empty", "--sasl-user ''",
      "--sasl-user is empty: give the authentication identity",
      each([PHASES], "--sasl-user", ""))
usage("sasl-no-password", "--sasl-user without a password (no file, $CHECK_SMTP_PASSWORD "
      "unset or empty)",
      "SASL needs a password: --sasl-password-file FILE or $CHECK_SMTP_PASSWORD",
      each([PHASES], "--sasl-user", "u")
      + each([PHASES], "--sasl-user", "u", env={"CHECK_SMTP_PASSWORD": ""}))

# --------------------------------------------------------------------------- thresholds

usage("range-start-above-end", "-w 5:1", "argument -w/--warning: bad threshold range '5:1'",
      each(WITH_RANGES, "-w", "5:1"))
usage("range-not-a-number", "-c x", "argument -c/--critical: bad threshold range 'x'",
      each(WITH_RANGES, "-c", "x"))
usage("phase-threshold-unknown-phase", "--phase-threshold nope=1, or without '='",
      "want PHASE=WARN[,CRIT] with PHASE one of dns, connect", [
          Run(PHASES, (*TARGET[PHASES], "--phase-threshold", "nope=1"),
              option="--phase-threshold"),
          Run(PHASES, (*TARGET[PHASES], "--phase-threshold", "banner"),
              option="--phase-threshold"),
      ])
usage("phase-threshold-bad-range", "--phase-threshold banner=x",
      "--phase-threshold 'banner=x': bad threshold range 'x'",
      each([PHASES], "--phase-threshold", "banner=x", option="--phase-threshold"))

# --------------------------------------------------------------------------- contradictions

usage("host-and-domain", "check_smtp_phases -H and -D together",
      "argument -D/--domain: not allowed with argument -H/--hostname",
      each([PHASES], "-D", "posture.test"))
usage("ipv4-and-ipv6", "-4 and -6 together", "argument -6: not allowed with argument -4",
      each(ALL, "-4", "-6"))
usage("no-starttls-and-require", "--no-starttls with --require-starttls",
      "argument --require-starttls: not allowed with argument --no-starttls",
      each([PHASES], "--no-starttls", "--require-starttls"))
usage("tls-and-no-starttls", "--tls with --no-starttls",
      "argument --no-starttls: not allowed with argument --tls",
      each([PHASES], "--tls", "--no-starttls"))
usage("expect-mx-and-state-file", "--expect-mx with --state-file",
      "--expect-mx and --state-file exclude each other",
      each([MX], "--expect-mx", "mx.posture.test", "--state-file", "/nonexistent/mx.state"))
usage("accept-changes-alone", "--accept-changes without --state-file",
      "--accept-changes needs --state-file", each([MX], "--accept-changes"))
usage("spf-expect-alone", "check_spf --expect without --ip or --check-mx",
      "--expect needs --ip or --check-mx", each([SPF], "--expect", "pass"))

# --------------------------------------------------------------------------- blocklist zones

usage("zone-bad-name", "--zone with a name that is not a DNS name",
      "argument --zone: bad zone name 'bl..posture.test'",
      each([DNSBL], "--zone", "bl..posture.test"))
usage("zone-bad-error-answer", "--zone with an error answer that is not an address",
      "argument --zone: bad error answer '127.0.0.300' for zone bl.posture.test",
      each([DNSBL], "--zone", "bl.posture.test=127.0.0.300"))
usage("list-zones-none", "--list-zones --no-default-zones (no zone selected)",
      "no zones to ask", each([DNSBL], "--list-zones", "--no-default-zones", target=False))
usage("domain-zone-without-domain", "--domain-zone without -D", "--domain-zone needs -D",
      each([DNSBL], "--domain-zone", "default"))

# --------------------------------------------------------------------------- payload bytes

row("payload-non-utf8", "arguments",
    "--payload with bytes that are not UTF-8: sent as given", "OK", "message accepted",
    [Run(PHASES, ("--payload", "Subject: 8bit\\n\\n" + NON_UTF8))])
row("payload-file-non-utf8", "arguments",
    "--payload-file not UTF-8: sent as it is", "OK", "message accepted",
    [Run(PHASES, ("--payload-file", LATIN1))])

# --------------------------------------------------------------------------- state files

_STATE = "state file PATH"
for _id, _fault, _state, _message in [
    ("state-under-a-file", "--state-file under a regular file (fails for root too)", "UNKNOWN",
     f"{_STATE}: Not a directory"),
    ("state-missing-directory", "--state-file in a directory that does not exist", "UNKNOWN",
     f"{_STATE}: No such file or directory"),
    ("state-directory", "--state-file is a directory", "UNKNOWN",
     f"{_STATE}: not a regular file"),
    ("state-fifo", "--state-file is a named pipe", "UNKNOWN", f"{_STATE}: not a regular file"),
    ("state-locked", "--state-file locked by another run (flock) past -t 1", "UNKNOWN",
     f"{_STATE} is locked by another run"),
    ("state-garbage", "--state-file holds garbage: started afresh", "WARNING",
     f"{_STATE} was corrupt and has been started afresh"),
    ("state-truncated", "--state-file holds truncated JSON: started afresh", "WARNING",
     f"{_STATE} was corrupt and has been started afresh"),
    ("state-non-utf8", "--state-file holds bytes that are not UTF-8: started afresh",
     "WARNING", f"{_STATE} was corrupt and has been started afresh"),
    ("state-not-an-object", "--state-file holds JSON that is not an object: started afresh",
     "WARNING", f"{_STATE} was corrupt and has been started afresh"),
    ("state-bad-entry", "--state-file holds an object whose MX entry is not a list of names: "
     "started afresh", "WARNING", f"{_STATE} was corrupt and has been started afresh"),
    ("state-empty", "--state-file is empty: the MX set becomes the baseline", "OK",
     "MX set recorded as baseline"),
    ("state-name-not-utf8", "--state-file name not UTF-8 in a missing directory, output "
     "strictly UTF-8 (PYTHONIOENCODING=utf-8)", "UNKNOWN", "No such file or directory"),
]:
    # a strict UTF-8 stdout, as Python has it in a UTF-8 locale other than C.UTF-8
    _env = {"PYTHONIOENCODING": "utf-8"} if _id == "state-name-not-utf8" else {}
    row(_id, "state files", _fault, _state, _message, [Run(MX, (), _env)])

#: row id -> the whole line a user reads for the fault, for each run (tests.faultmatrix)
SAYS: dict[str, tuple[str, ...]] = {
    "timeout-zero": (
        "check_smtp_phases: error: argument -t/--timeout: must be greater than zero: '0'",
        "check_mx_sanity: error: argument -t/--timeout: must be greater than zero: '0'",
        "check_dnsbl: error: argument -t/--timeout: must be greater than zero: '0'",
        "check_spf: error: argument -t/--timeout: must be greater than zero: '0'",
        "check_open_relay: error: argument -t/--timeout: must be greater than zero: '0'",
    ),
    "timeout-negative": (
        "check_smtp_phases: error: argument -t/--timeout: expected one argument",
        "check_mx_sanity: error: argument -t/--timeout: expected one argument",
        "check_dnsbl: error: argument -t/--timeout: expected one argument",
        "check_spf: error: argument -t/--timeout: expected one argument",
        "check_open_relay: error: argument -t/--timeout: expected one argument",
    ),
    "timeout-nan": (
        "check_smtp_phases: error: argument -t/--timeout: not a finite number: 'nan'",
        "check_mx_sanity: error: argument -t/--timeout: not a finite number: 'nan'",
        "check_dnsbl: error: argument -t/--timeout: not a finite number: 'nan'",
        "check_spf: error: argument -t/--timeout: not a finite number: 'nan'",
        "check_open_relay: error: argument -t/--timeout: not a finite number: 'nan'",
    ),
    "timeout-inf": (
        "check_smtp_phases: error: argument -t/--timeout: not a finite number: 'inf'",
        "check_mx_sanity: error: argument -t/--timeout: not a finite number: 'inf'",
        "check_dnsbl: error: argument -t/--timeout: not a finite number: 'inf'",
        "check_spf: error: argument -t/--timeout: not a finite number: 'inf'",
        "check_open_relay: error: argument -t/--timeout: not a finite number: 'inf'",
    ),
    "timeout-huge": (
        "check_smtp_phases: error: argument -t/--timeout: must be at most 86400 seconds: "
        "'1e11'",
        "check_mx_sanity: error: argument -t/--timeout: must be at most 86400 seconds: '1e11'",
        "check_dnsbl: error: argument -t/--timeout: must be at most 86400 seconds: '1e11'",
        "check_spf: error: argument -t/--timeout: must be at most 86400 seconds: '1e11'",
        "check_open_relay: error: argument -t/--timeout: must be at most 86400 seconds: "
        "'1e11'",
    ),
    "timeout-not-a-number": (
        "check_smtp_phases: error: argument -t/--timeout: not a number: 'abc'",
        "check_mx_sanity: error: argument -t/--timeout: not a number: 'abc'",
        "check_dnsbl: error: argument -t/--timeout: not a number: 'abc'",
        "check_spf: error: argument -t/--timeout: not a number: 'abc'",
        "check_open_relay: error: argument -t/--timeout: not a number: 'abc'",
    ),
    "query-timeout-nan": (
        "check_smtp_phases: error: argument --query-timeout: not a finite number: 'nan'",
        "check_mx_sanity: error: argument --query-timeout: not a finite number: 'nan'",
        "check_dnsbl: error: argument --query-timeout: not a finite number: 'nan'",
        "check_spf: error: argument --query-timeout: not a finite number: 'nan'",
        "check_open_relay: error: argument --query-timeout: not a finite number: 'nan'",
    ),
    "dns-server-name": (
        "check_smtp_phases: error: argument --dns-server: DNS server must be an IP "
        "address[:port]: 'ns.posture.test'",
        "check_mx_sanity: error: argument --dns-server: DNS server must be an IP "
        "address[:port]: 'ns.posture.test'",
        "check_dnsbl: error: argument --dns-server: DNS server must be an IP address[:port]: "
        "'ns.posture.test'",
        "check_spf: error: argument --dns-server: DNS server must be an IP address[:port]: "
        "'ns.posture.test'",
        "check_open_relay: error: argument --dns-server: DNS server must be an IP "
        "address[:port]: 'ns.posture.test'",
    ),
    "concurrency-zero": (
        "check_smtp_phases: error: argument --concurrency: must be at least 1: '0'",
        "check_mx_sanity: error: argument --concurrency: must be at least 1: '0'",
        "check_dnsbl: error: argument --concurrency: must be at least 1: '0'",
        "check_open_relay: error: argument --concurrency: must be at least 1: '0'",
    ),
    "host-empty": (
        "check_smtp_phases: error: argument -H/--hostname: bad host name ''",
        "check_dnsbl: error: argument -H/--hostname: bad host name ''",
        "check_open_relay: error: argument -H/--hostname: bad host name ''",
    ),
    "host-blank": (
        "check_smtp_phases: error: argument -H/--hostname: bad host name ' '",
        "check_dnsbl: error: argument -H/--hostname: bad host name ' '",
        "check_open_relay: error: argument -H/--hostname: bad host name ' '",
    ),
    "host-line-break": (
        "check_smtp_phases: error: argument -H/--hostname: bad host name "
        "'mx\\r\\nposture.test'",
        "check_dnsbl: error: argument -H/--hostname: bad host name 'mx\\r\\nposture.test'",
        "check_open_relay: error: argument -H/--hostname: bad host name "
        "'mx\\r\\nposture.test'",
    ),
    "host-non-utf8": (
        "check_smtp_phases: error: argument -H/--hostname: bad host name "
        "'mx\\udcff\\udcfe.posture.test'",
        "check_dnsbl: error: argument -H/--hostname: bad host name "
        "'mx\\udcff\\udcfe.posture.test'",
        "check_open_relay: error: argument -H/--hostname: bad host name "
        "'mx\\udcff\\udcfe.posture.test'",
    ),
    "host-empty-label": (
        "check_smtp_phases: error: argument -H/--hostname: bad host name 'a..b'",
        "check_dnsbl: error: argument -H/--hostname: bad host name 'a..b'",
        "check_open_relay: error: argument -H/--hostname: bad host name 'a..b'",
    ),
    "host-option-named": (
        "check_dnsbl: error: argument -H/--hostname: bad host name 'a..b'",
    ),
    "domain-empty-label": (
        "check_smtp_phases: error: argument -D/--domain: bad domain name 'a..b'",
        "check_mx_sanity: error: argument -D/--domain: bad domain name 'a..b'",
        "check_dnsbl: error: argument -D/--domain: bad domain name 'a..b'",
        "check_spf: error: argument -D/--domain: bad domain name 'a..b'",
        "check_open_relay: error: argument -D/--domain: bad domain name 'a..b'",
    ),
    "domain-single-label": (
        "check_smtp_phases: error: argument -D/--domain: bad domain name 'mailhost'",
        "check_mx_sanity: error: argument -D/--domain: bad domain name 'mailhost'",
        "check_dnsbl: error: argument -D/--domain: bad domain name 'mailhost'",
        "check_spf: error: argument -D/--domain: bad domain name 'mailhost'",
        "check_open_relay: error: argument -D/--domain: bad domain name 'mailhost'",
    ),
    "domain-long-label": (
        "check_smtp_phases: error: argument -D/--domain: bad domain name "
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.test'",
        "check_mx_sanity: error: argument -D/--domain: bad domain name "
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.test'",
        "check_dnsbl: error: argument -D/--domain: bad domain name "
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.test'",
        "check_spf: error: argument -D/--domain: bad domain name "
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.test'",
        "check_open_relay: error: argument -D/--domain: bad domain name "
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.test'",
    ),
    "domain-long-encoded-label": (
        "check_smtp_phases: error: argument -D/--domain: bad domain name "
        "'\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9.test'",
        "check_mx_sanity: error: argument -D/--domain: bad domain name "
        "'\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9.test'",
        "check_dnsbl: error: argument -D/--domain: bad domain name "
        "'\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9.test'",
        "check_spf: error: argument -D/--domain: bad domain name "
        "'\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9.test'",
        "check_open_relay: error: argument -D/--domain: bad domain name "
        "'\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9\xe9.test'",
    ),
    "domain-non-utf8": (
        "check_smtp_phases: error: argument -D/--domain: bad domain name "
        "'\\udcff\\udcfe.test'",
        "check_mx_sanity: error: argument -D/--domain: bad domain name '\\udcff\\udcfe.test'",
        "check_dnsbl: error: argument -D/--domain: bad domain name '\\udcff\\udcfe.test'",
        "check_spf: error: argument -D/--domain: bad domain name '\\udcff\\udcfe.test'",
        "check_open_relay: error: argument -D/--domain: bad domain name '\\udcff\\udcfe.test'",
    ),
    "domain-too-long": (
        "check_smtp_phases: error: argument -D/--domain: bad domain name "
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'",
        "check_mx_sanity: error: argument -D/--domain: bad domain name "
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'",
        "check_dnsbl: error: argument -D/--domain: bad domain name "
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'",
        "check_spf: error: argument -D/--domain: bad domain name "
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'",
        "check_open_relay: error: argument -D/--domain: bad domain name "
        "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'",
    ),
    "domain-trailing-dot": (
        "SMTP_PHASES WARNING - MX lookup failed: TIMEOUT (no answer within {N}s)",
        "MX_SANITY WARNING - posture.test: MX lookup failed: TIMEOUT (no answer within {N}s)",
        "DNSBL WARNING - MX lookup failed: TIMEOUT (no answer within {N}s)",
        "SPF WARNING - temperror: DNS failure looking up TXT posture.test: TIMEOUT (no "
        "answer within {N}s)",
        "OPEN_RELAY WARNING - MX lookup failed: TIMEOUT (no answer within {N}s)",
    ),
    "port-zero": (
        "check_smtp_phases: error: argument -p/--port: port out of range 1-65535: '0'",
        "check_open_relay: error: argument -p/--port: port out of range 1-65535: '0'",
    ),
    "port-too-big": (
        "check_smtp_phases: error: argument -p/--port: port out of range 1-65535: '65536'",
        "check_open_relay: error: argument -p/--port: port out of range 1-65535: '65536'",
    ),
    "port-not-a-number": (
        "check_smtp_phases: error: argument -p/--port: not a port number: 'x'",
        "check_open_relay: error: argument -p/--port: not a port number: 'x'",
    ),
    "ip-not-an-address": (
        "check_dnsbl: error: argument --ip: not an IP address: '192.0.2.300'",
        "check_spf: error: argument --ip: not an IP address: '192.0.2.300'",
    ),
    "address-line-break": (
        "check_smtp_phases: error: argument --from: control characters in an address: "
        "'probe@posture.test\\r\\nRSET'",
        "check_smtp_phases: error: argument --to: control characters in an address: "
        "'probe@posture.test\\r\\nRSET'",
        "check_open_relay: error: argument --rcpt: control characters in an address: "
        "'probe@posture.test\\r\\nRSET'",
        "check_open_relay: error: argument --external-from: control characters in an "
        "address: 'probe@posture.test\\r\\nRSET'",
        "check_open_relay: error: argument --external-rcpt: control characters in an "
        "address: 'probe@posture.test\\r\\nRSET'",
    ),
    "address-brackets-inside": (
        "check_smtp_phases: error: argument --from: angle brackets inside an address: "
        "'<a<b>@posture.test>'",
        "check_smtp_phases: error: argument --to: angle brackets inside an address: "
        "'a<b>@posture.test'",
        "check_open_relay: error: argument --rcpt: angle brackets inside an address: "
        "'a>b@posture.test'",
    ),
    "recipient-null": (
        "check_smtp_phases: error: argument --to: the null address <> cannot be a recipient",
        "check_open_relay: error: argument --rcpt: the null address <> cannot be a recipient",
        "check_open_relay: error: argument --external-rcpt: the null address <> cannot be a "
        "recipient",
    ),
    "spf-sender-line-break": (
        "check_spf: error: argument --sender: control characters in an address: "
        "'probe@posture.test\\r\\nRSET'",
    ),
    "helo-line-break": (
        "check_smtp_phases: error: argument --helo-name: not a host name or [address] "
        "literal: 'probe.posture.test\\r\\nMAIL FROM:<>'",
        "check_open_relay: error: argument --helo-name: not a host name or [address] "
        "literal: 'probe.posture.test\\r\\nMAIL FROM:<>'",
    ),
    "spf-helo-line-break": (
        "check_spf: error: argument --helo/--helo-name: not a host name or [address] "
        "literal: 'probe.posture.test\\r\\nx'",
    ),
    "command-line-break": (
        "check_smtp_phases: error: argument --command: a line break or NUL in a command "
        "line: 'NOOP\\r\\nMAIL FROM:<>'",
    ),
    "command-nul": (
        "check_smtp_phases: error: argument --command: a line break or NUL in a command "
        "line: 'NOOP\\x00x'",
    ),
    "command-empty": (
        "check_smtp_phases: error: argument --command: an empty command line",
    ),
    "command-non-utf8": (
        "check_smtp_phases: error: argument --command: not UTF-8 text: '\\udcff\\udcfe'",
    ),
    "payload-file-empty-name": (
        "check_smtp_phases: error: --payload-file: empty payload file name",
    ),
    "payload-without-send-data": (
        "check_smtp_phases: error: --payload/--payload-file need --send-data",
    ),
    "file-missing": (
        "check_smtp_phases: error: --payload-file: cannot read payload file {PATH}: No such "
        "file or directory",
        "check_smtp_phases: error: --sasl-password-file: cannot read password file {PATH}: "
        "No such file or directory",
        "check_dnsbl: error: --zones-file: cannot read zones file {PATH}: No such file or "
        "directory",
        "check_smtp_phases: error: --ca-file: cannot read CA file {PATH}: No such file or "
        "directory",
    ),
    "file-directory": (
        "check_smtp_phases: error: --payload-file: payload file {PATH} is not a regular file",
        "check_smtp_phases: error: --sasl-password-file: password file {PATH} is not a "
        "regular file",
        "check_dnsbl: error: --zones-file: zones file {PATH} is not a regular file",
        "check_smtp_phases: error: --ca-file: CA file {PATH} is not a regular file",
    ),
    "file-fifo": (
        "check_smtp_phases: error: --payload-file: payload file {PATH} is not a regular file",
        "check_smtp_phases: error: --sasl-password-file: password file {PATH} is not a "
        "regular file",
        "check_dnsbl: error: --zones-file: zones file {PATH} is not a regular file",
        "check_smtp_phases: error: --ca-file: CA file {PATH} is not a regular file",
    ),
    "file-not-utf8": (
        "check_smtp_phases: error: --sasl-password-file: password file {PATH} is not UTF-8 "
        "text",
        "check_dnsbl: error: --zones-file: zones file {PATH} is not UTF-8 text",
    ),
    "password-file-option-named": (
        "check_smtp_phases: error: --sasl-password-file: cannot read password file {PATH}: "
        "No such file or directory",
    ),
    "file-name-not-utf8": (
        "check_smtp_phases: error: --payload-file: cannot read payload file {PATH}: No such "
        "file or directory",
        "check_smtp_phases: error: --sasl-password-file: cannot read password file {PATH}: "
        "No such file or directory",
        "check_dnsbl: error: --zones-file: cannot read zones file {PATH}: No such file or "
        "directory",
        "check_smtp_phases: error: --ca-file: cannot read CA file {PATH}: No such file or "
        "directory",
    ),
    "cert-days-nan": (
        "check_smtp_phases: error: --cert-days takes WARN,CRIT in days (0 to 36500), not "
        "'nan,nan'",
    ),
    "cert-days-overflow": (
        "check_smtp_phases: error: --cert-days takes WARN,CRIT in days (0 to 36500), not "
        "'1e400,1'",
    ),
    "cert-days-one-number": (
        "check_smtp_phases: error: --cert-days takes WARN,CRIT in days (0 to 36500), not '5'",
    ),
    "cert-days-not-numbers": (
        "check_smtp_phases: error: --cert-days takes WARN,CRIT in days (0 to 36500), not "
        "'x,y'",
    ),
    "cert-days-exponent": (
        "check_smtp_phases: error: --cert-days takes WARN,CRIT in days (0 to 36500), not "
        "'1e-7,0'",
    ),
    "cert-days-crit-above-warn": (
        "check_smtp_phases: error: --cert-days: the critical number of days must not exceed "
        "the warning one",
    ),
    "sasl-user-empty": (
        "check_smtp_phases: error: --sasl-user is empty: give the authentication identity",
    ),
    "sasl-no-password": (
        "check_smtp_phases: error: SASL needs a password: --sasl-password-file FILE or "
        "$CHECK_SMTP_PASSWORD",
    ),
    "range-start-above-end": (
        "check_smtp_phases: error: argument -w/--warning: bad threshold range '5:1': start 5 "
        "must not be greater than end 1",
        "check_dnsbl: error: argument -w/--warning: bad threshold range '5:1': start 5 must "
        "not be greater than end 1",
        "check_spf: error: argument -w/--warning: bad threshold range '5:1': start 5 must "
        "not be greater than end 1",
        "check_open_relay: error: argument -w/--warning: bad threshold range '5:1': start 5 "
        "must not be greater than end 1",
    ),
    "range-not-a-number": (
        "check_smtp_phases: error: argument -c/--critical: bad threshold range 'x': invalid "
        "literal for int() with base 10: 'x'",
        "check_dnsbl: error: argument -c/--critical: bad threshold range 'x': invalid "
        "literal for int() with base 10: 'x'",
        "check_spf: error: argument -c/--critical: bad threshold range 'x': invalid literal "
        "for int() with base 10: 'x'",
        "check_open_relay: error: argument -c/--critical: bad threshold range 'x': invalid "
        "literal for int() with base 10: 'x'",
    ),
    "phase-threshold-unknown-phase": (
        "check_smtp_phases: error: --phase-threshold 'nope=1': want PHASE=WARN[,CRIT] with "
        "PHASE one of dns, connect, tls_handshake, banner, ehlo, starttls, ehlo_tls, auth, "
        "command, mail, rcpt, data, body, rset, quit",
        "check_smtp_phases: error: --phase-threshold 'banner': want PHASE=WARN[,CRIT] with "
        "PHASE one of dns, connect, tls_handshake, banner, ehlo, starttls, ehlo_tls, auth, "
        "command, mail, rcpt, data, body, rset, quit",
    ),
    "phase-threshold-bad-range": (
        "check_smtp_phases: error: --phase-threshold 'banner=x': bad threshold range 'x': "
        "invalid literal for int() with base 10: 'x'",
    ),
    "host-and-domain": (
        "check_smtp_phases: error: argument -D/--domain: not allowed with argument "
        "-H/--hostname",
    ),
    "ipv4-and-ipv6": (
        "check_smtp_phases: error: argument -6: not allowed with argument -4",
        "check_mx_sanity: error: argument -6: not allowed with argument -4",
        "check_dnsbl: error: argument -6: not allowed with argument -4",
        "check_spf: error: argument -6: not allowed with argument -4",
        "check_open_relay: error: argument -6: not allowed with argument -4",
    ),
    "no-starttls-and-require": (
        "check_smtp_phases: error: argument --require-starttls: not allowed with argument "
        "--no-starttls",
    ),
    "tls-and-no-starttls": (
        "check_smtp_phases: error: argument --no-starttls: not allowed with argument --tls",
    ),
    "expect-mx-and-state-file": (
        "check_mx_sanity: error: --expect-mx and --state-file exclude each other",
    ),
    "accept-changes-alone": (
        "check_mx_sanity: error: --accept-changes needs --state-file",
    ),
    "spf-expect-alone": (
        "check_spf: error: --expect needs --ip or --check-mx",
    ),
    "zone-bad-name": (
        "check_dnsbl: error: argument --zone: bad zone name 'bl..posture.test'",
    ),
    "zone-bad-error-answer": (
        "check_dnsbl: error: argument --zone: bad error answer '127.0.0.300' for zone "
        "bl.posture.test",
    ),
    "list-zones-none": (
        "check_dnsbl: error: no zones to ask (--no-default-zones without --zone or "
        "--zones-file)",
    ),
    "domain-zone-without-domain": (
        "check_dnsbl: error: --domain-zone needs -D",
    ),
    "payload-non-utf8": (
        "SMTP_PHASES OK - 127.0.27.1, banner 220, no STARTTLS, 1 RCPT accepted, message "
        "accepted: 250 2.0.0 Ok: queued as FAKE, {N}s",
    ),
    "payload-file-non-utf8": (
        "SMTP_PHASES OK - 127.0.27.1, banner 220, no STARTTLS, 1 RCPT accepted, message "
        "accepted: 250 2.0.0 Ok: queued as FAKE, {N}s",
    ),
    "state-under-a-file": (
        "MX_SANITY UNKNOWN - good.mx.lab.test: state file {PATH}: Not a directory",
    ),
    "state-missing-directory": (
        "MX_SANITY UNKNOWN - good.mx.lab.test: state file {PATH}: No such file or directory",
    ),
    "state-directory": (
        "MX_SANITY UNKNOWN - good.mx.lab.test: state file {PATH}: not a regular file",
    ),
    "state-fifo": (
        "MX_SANITY UNKNOWN - good.mx.lab.test: state file {PATH}: not a regular file",
    ),
    "state-locked": (
        "MX_SANITY UNKNOWN - good.mx.lab.test: state file {PATH} is locked by another run",
    ),
    "state-garbage": (
        "MX_SANITY WARNING - good.mx.lab.test: state file {PATH} was corrupt and has been "
        "started afresh",
    ),
    "state-truncated": (
        "MX_SANITY WARNING - good.mx.lab.test: state file {PATH} was corrupt and has been "
        "started afresh",
    ),
    "state-non-utf8": (
        "MX_SANITY WARNING - good.mx.lab.test: state file {PATH} was corrupt and has been "
        "started afresh",
    ),
    "state-not-an-object": (
        "MX_SANITY WARNING - good.mx.lab.test: state file {PATH} was corrupt and has been "
        "started afresh",
    ),
    "state-bad-entry": (
        "MX_SANITY WARNING - good.mx.lab.test: state file {PATH} was corrupt and has been "
        "started afresh",
    ),
    "state-empty": (
        "MX_SANITY OK - good.mx.lab.test: 2 MX, 3 addresses (1 IPv6), FCrDNS ok; MX set "
        "recorded as baseline",
    ),
    "state-name-not-utf8": (
        "MX_SANITY UNKNOWN - good.mx.lab.test: state file {PATH}: No such file or directory",
    ),
}


# --------------------------------------------------------------------------- running


def params(ids) -> list:
    return [pytest.param(r, id=r.id, marks=[pytest.mark.xfail(
        strict=True, reason="defect: " + DEFECTS[r.id])] if r.id in DEFECTS else [])
        for r in MATRIX if r.id in ids]


@dataclass
class Outcome:
    run: PluginRun
    stderr: str
    elapsed: float

    def error_line(self, script: str) -> str:
        lines = [ln for ln in self.run.output.splitlines()
                 if ln.startswith(f"{script}: error: ")]
        return lines[-1] if lines else ""


def execute(script: str, argv, *, env=None, timeout: float = 10.0) -> Outcome:
    """The console script with `argv` (str, surrogateescape for raw bytes) as a user runs it."""
    environ = {k: v for k, v in os.environ.items() if k != "CHECK_SMTP_PASSWORD"}
    environ.update(env or {})
    started = time.monotonic()
    done = subprocess.run([str(BIN / script), *argv], capture_output=True, env=environ,
                          timeout=timeout)
    elapsed = time.monotonic() - started
    stdout = done.stdout.decode("utf-8", "replace")
    stderr = done.stderr.decode("utf-8", "replace")
    secretguard.check(argv, environ, stdout, stderr)
    return Outcome(PluginRun(done.returncode, stdout), stderr, elapsed)


def execute_inprocess(script: str, argv) -> Outcome:
    """main(argv) in this process (conftest's run_main); a traceback would fail the test."""
    main = importlib.import_module(f"check_smtp_posture.plugins.{script}").main
    started = time.monotonic()
    result = run_main(main, argv)
    return Outcome(result, result.errors, time.monotonic() - started)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """The real paths behind MISSING, DIRECTORY, FIFO, LATIN1 and BADNAME."""
    base = tmp_path_factory.mktemp("faults-args")
    (base / "dir").mkdir()
    os.mkfifo(base / "fifo")  # nobody ever opens it for writing
    (base / "latin1").write_bytes(b"Subject: caf\xe9\n\n\xff\xfe\n")
    return {MISSING: str(base / "missing"), DIRECTORY: str(base / "dir"),
            FIFO: str(base / "fifo"), LATIN1: str(base / "latin1"),
            BADNAME: os.fsdecode(bytes(base / "missing") + b"-\xff")}


def resolve(run: Run, files: dict) -> tuple[list, str]:
    """argv with the file tokens replaced, and the path that stands for PATH in messages."""
    argv = [files.get(a, a) for a in run.argv]
    path = next((files[a] for a in run.argv if a in files), "")
    return argv, path


USAGE_ROWS = [r.id for r in MATRIX if r.area == "arguments" and r.state == "UNKNOWN"]


def usage_argv(run: Run, files: dict) -> tuple[list, str]:
    """The full argv of a usage-error run, and the path that stands for PATH in messages."""
    argv, path = resolve(run, files)
    argv = [*PREFIX, *argv]
    if FIFO in run.argv:  # a hang would be the fault: keep -t short, the timeout tight
        argv += ["-t", "3"]
    return argv, path


def in_a_process(row_id: str, run: Run) -> bool:
    """Whether the run needs a real process: what main(argv) in-process cannot show.

    Bytes that are not UTF-8 (argv as the kernel hands it over), the environment,
    a file that could hang the run (the subprocess timeout catches it), the
    stdout encoding; and the console scripts' own wiring, once for every plugin.
    """
    if run.inprocess:
        return False
    undecodable = any("\udc80" <= ch <= "\udcff" for a in run.argv for ch in a)
    return (row_id in PROCESS_ROWS or bool(run.env) or undecodable
            or any(a in (MISSING, DIRECTORY, FIFO, LATIN1, BADNAME) for a in run.argv))


#: rows run as real processes for every plugin whatever their argv
PROCESS_ROWS = {"timeout-zero", "domain-empty-label", "host-line-break", "cert-days-exponent"}


@pytest.mark.parametrize("row", params(USAGE_ROWS))
def test_usage_error(row, files, monkeypatch):
    monkeypatch.delenv("CHECK_SMTP_PASSWORD", raising=False)  # the in-process runs see it
    lines = []
    for run in RUNS[row.id]:
        argv, path = usage_argv(run, files)
        if in_a_process(row.id, run):
            out = execute(run.script, argv, env=run.env)
        else:
            out = execute_inprocess(run.script, argv)
        where = f"{run.script} {argv!r}:\n{out.run.output}{out.stderr}"
        assert "Traceback" not in out.run.output + out.stderr, where
        assert out.run.exitcode == 3, where
        assert out.run.first_line.startswith(f"usage: {run.script} "), where
        error = out.error_line(run.script)
        assert row.message.replace("PATH", path) in error, where
        lines.append((run.script, said(run.script, out.run.output)))
        if run.option:
            assert run.option in error, where
        assert out.stderr == "", where
        assert out.elapsed < QUICK, where
    check_says(SAYS, row.id, lines)


@pytest.mark.parametrize("row", params(["domain-trailing-dot"]))
def test_domain_trailing_dot(row):
    """A valid name: no usage error; the run asks DNS (silent here) and ends within -t."""
    lines = []
    for run in RUNS[row.id]:
        out = execute(run.script, [*PREFIX, *run.argv])
        where = f"{run.script}:\n{out.run.output}{out.stderr}"
        assert out.run.exitcode == 1, where
        assert out.run.first_line.startswith(f"{STATUS[run.script]} WARNING - "), where
        assert row.message in out.run.first_line, where
        assert "posture.test." not in out.run.first_line, where  # one name, normalised
        assert out.stderr == "", where
        assert out.elapsed < 0.5 + GRACE + STARTUP, where
        lines.append((run.script, said(run.script, out.run.output)))
    check_says(SAYS, row.id, lines)


@pytest.mark.parametrize("row", params(["payload-non-utf8", "payload-file-non-utf8"]))
def test_payload_bytes_sent_as_given(row, files, fake_smtp):
    server = fake_smtp("normal")
    (run,) = RUNS[row.id]
    argv, _ = resolve(run, files)
    out = execute(PHASES, ["-H", server.host, "-p", str(server.port), "--helo-name",
                           "probe.posture.test", "-t", "5", *SEND, *argv])
    assert "Traceback" not in out.run.output + out.stderr
    assert out.run.exitcode == 0, out.run.output
    assert out.run.first_line.startswith("SMTP_PHASES OK - ")
    assert row.message in out.run.first_line
    check_says(SAYS, row.id, [(PHASES, said(PHASES, out.run.output))])
    server.wait_ended()
    (session,) = server.sessions
    sent = b"\n".join(session.data)
    expected = (b"Subject: 8bit\n\n\xff\xfe" if row.id == "payload-non-utf8"
                else Path(files[LATIN1]).read_bytes().rstrip(b"\n"))
    assert sent == expected


# --------------------------------------------------------------------------- state files

STATE_DOMAIN = "good.mx.lab.test"
BASELINE = {f"mx:{STATE_DOMAIN}": ["mx1.good.mx.lab.test", "mx2.good.mx.lab.test"]}
#: row -> what is at the state file's path before the run (bytes: a file with them)
STATE_SETUP = {
    "state-garbage": b"this is not JSON\n",
    "state-truncated": b'{"mx:good.mx.lab.test": ["mx1.good.mx.l',
    "state-non-utf8": b'{"mx:good.mx.lab.test": ["\xff\xfe"]}',
    "state-not-an-object": b'["mx1.good.mx.lab.test"]',
    "state-bad-entry": b'{"mx:good.mx.lab.test": 5}',
    "state-empty": b"",
}
#: rows after which the file holds the current MX set: started afresh, or first baseline
REBUILT = set(STATE_SETUP)


def state_path(row_id: str, base: Path) -> Path:
    if row_id == "state-under-a-file":
        (base / "plain").write_text("a file, not a directory\n")
        return base / "plain" / "mx.state"
    if row_id == "state-missing-directory":
        return base / "missing" / "mx.state"
    if row_id == "state-name-not-utf8":
        return Path(os.fsdecode(bytes(base) + b"/missing-\xff/mx.state"))
    path = base / "mx.state"
    if row_id == "state-directory":
        path.mkdir()
    elif row_id == "state-fifo":
        os.mkfifo(path)
    elif row_id == "state-locked":
        path.write_text(json.dumps(BASELINE))
    else:
        path.write_bytes(STATE_SETUP[row_id])
    return path


STATE_ROWS = [r.id for r in MATRIX if r.area == "state files"]
EXIT = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


@pytest.mark.lab
@pytest.mark.parametrize("row", params(STATE_ROWS))
def test_state_file(row, lab_dns, tmp_path):
    path = state_path(row.id, tmp_path)
    timeout = 1.0 if row.id == "state-locked" else 3.0
    argv = ["-D", STATE_DOMAIN, "--dns-server", lab_dns.server_arg, "--allow-private",
            "-t", str(timeout), "--state-file", str(path)]
    (run,) = RUNS[row.id]
    locked = row.id == "state-locked"
    with open(path) if locked else contextlib.nullcontext() as holder:
        if locked:  # another run, stuck, holding the lock the core takes (flock)
            fcntl.flock(holder, fcntl.LOCK_EX)
        out = execute(run.script, argv, env=run.env)
    where = out.run.output + out.stderr
    assert "Traceback" not in where, where
    assert out.run.exitcode == EXIT[row.state], where
    assert out.run.first_line.startswith(f"MX_SANITY {row.state} - {STATE_DOMAIN}: "), where
    assert row.message.replace("PATH", str(path)) in out.run.first_line, where
    check_says(SAYS, row.id, [(run.script, said(run.script, out.run.output))])
    assert out.stderr == "", where
    assert out.elapsed < timeout + GRACE + STARTUP, where
    if row.id in REBUILT or locked:  # the current MX set; the locked file as it was
        assert json.loads(path.read_text()) == BASELINE
    elif row.id == "state-directory":
        assert path.is_dir() and not any(path.iterdir())
    elif row.id == "state-fifo":
        assert stat.S_ISFIFO(os.stat(path).st_mode)
    else:
        assert not os.path.lexists(path)
