"""`make demo`: start the lab, run every installed plugin against it, stop the lab.

    python3 -m tests.lab.demo            # all runs
    python3 -m tests.lab.demo dnsbl      # only runs whose plugin name contains "dnsbl"

DEMO_RUNS is the list to extend: one argument list per run, the plugin's name
first. Placeholders filled in from the running lab: {domain} {dns} {ca}
{sasl_user} {sasl_password_file} {mailbox_password_file} {sts_ca} (the Postfix and
the nginx lab CAs). A
plugin whose module is not importable yet is skipped with a note; one whose console
script is not on PATH (the package not reinstalled since the entry point was added)
runs from its module.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

#: the validator proof in the lab: a signed name, and one whose signature is broken
#: (tests/lab/danelab.py SECURE_PROBE, BOGUS_PROBE)
DANE_PROOF = ["--secure-name", "dane.test", "--bogus-name", "badsig.dane.test"]

#: the round-trip lab's monitor mailbox (tests/lab/roundtriplab.py), and how to reach it
MAILBOX = ["--mailbox", "imaps://monitor%40monitor.test@mail.monitor.test/INBOX",
           "--mailbox-ca-file", "{ca}", "--mailbox-password-file", "{mailbox_password_file}",
           "--dns-server", "{dns}", "--helo-name", "monitor.posture.test"]

DEMO_RUNS: list[list[str]] = [
    # every MX of the lab domain, phase by phase, STARTTLS verified with the lab CA
    ["check_smtp_phases", "-D", "{domain}", "--dns-server", "{dns}", "--ca-file", "{ca}", "-v"],
    # submission: STARTTLS required, then AUTH CRAM-MD5
    ["check_smtp_phases", "-H", "submit.posture.test", "-p", "587", "--dns-server", "{dns}",
     "--ca-file", "{ca}", "--require-starttls", "--sasl-mechanism", "CRAM-MD5",
     "--sasl-user", "{sasl_user}", "--sasl-password-file", "{sasl_password_file}", "-v"],
    # implicit TLS on 465
    ["check_smtp_phases", "-H", "submit.posture.test", "-p", "465", "--tls",
     "--dns-server", "{dns}", "--ca-file", "{ca}", "-v"],
    # a server that offers AUTH before STARTTLS (a finding) and one without STARTTLS
    ["check_smtp_phases", "-H", "authfirst.posture.test", "--dns-server", "{dns}",
     "--ca-file", "{ca}", "-v"],
    ["check_smtp_phases", "-H", "notls.posture.test", "--dns-server", "{dns}",
     "--ca-file", "{ca}", "-v"],
    ["check_mx_sanity", "-D", "{domain}", "--dns-server", "{dns}", "--allow-private", "-v"],
    ["check_dnsbl", "-D", "{domain}", "--dns-server", "{dns}", "--no-default-zones",
     "--zone", "dnsbl.posture.test", "-v"],
    # the conventional test entry 127.0.0.2 is listed on the lab blocklist
    ["check_dnsbl", "--ip", "127.0.0.2", "--dns-server", "{dns}", "--no-default-zones",
     "--zone", "dnsbl.posture.test", "-v"],
    ["check_spf", "-D", "{domain}", "--dns-server", "{dns}", "-v"],
    ["check_open_relay", "-D", "{domain}", "--dns-server", "{dns}", "-v"],
    # a lab MX that relays only the percent hack: CRITICAL, naming that probe
    ["check_open_relay", "-D", "{domain}", "-H", "percentrelay.posture.test",
     "--dns-server", "{dns}"],
    # the mail loop: a probe through both loop.test MX, forwarded to the monitor mailbox
    # (IMAPS, IDLE); then a domain whose probe address is filed into Junk (WARNING)
    ["check_mail_roundtrip", "-D", "loop.test", "--to", "probe@loop.test", *MAILBOX, "-vv"],
    ["check_mail_roundtrip", "-D", "junky.test", "--to", "probe@junky.test", *MAILBOX],
    # check_host() for every MX address of the lab domain: each must pass
    ["check_spf", "-D", "{domain}", "--dns-server", "{dns}", "--check-mx", "-vvv"],
    # the MTA-STS policy of a lab domain from the lab nginx, covering both lab MX
    ["check_mta_sts", "-D", "good.sts.test", "--dns-server", "{dns}", "--ca-file", "{sts_ca}",
     "-v"],
    # DANE through the lab's validating resolver: the lab domain is not signed (DANE not
    # applicable); the signed DANE lab domains authenticate, or not
    ["check_dane", "-D", "{domain}", "--dns-server", "{resolver}", *DANE_PROOF],
    ["check_dane", "-D", "ee.dane.test", "--dns-server", "{resolver}",
     *DANE_PROOF, "-v"],
    ["check_dane", "-D", "dual.dane.test", "--dns-server", "{resolver}",
     *DANE_PROOF, "-v"],
    # the DKIM keys of two lab selectors (Ed25519 beside RSA), then a 1024-bit key
    ["check_dkim", "-D", "dkim.test", "--selector", "ed", "--selector", "rsa2048",
     "--dns-server", "{dns}", "-v"],
    ["check_dkim", "-D", "dkim.test", "--selector", "rsa1024", "--dns-server", "{dns}"],
    # DMARC: a good policy whose report addresses are probed at RCPT (never DATA); the
    # tree walk two labels up; an outside destination that authorised nothing
    ["check_dmarc", "-D", "good.dmarclab", "--dns-server", "{dns}", "--probe-destinations",
     "-v"],
    ["check_dmarc", "-D", "a.b.tree.dmarclab", "--dns-server", "{dns}", "-v"],
    ["check_dmarc", "-D", "unauth.dmarclab", "--dns-server", "{dns}"],
]

RUN_TIMEOUT = 60.0
MODULE = "check_smtp_posture.plugins.{}"


def _command(plugin: str) -> list[str] | None:
    """How to run `plugin`: its console script, else its module; None if not written yet."""
    try:
        found = importlib.util.find_spec(MODULE.format(plugin))
    except ModuleNotFoundError:
        found = None
    if found is None:
        return None
    script = shutil.which(plugin)
    if script:
        return [script]
    return [sys.executable, "-c",
            f"import sys; from {MODULE.format(plugin)} import main; sys.exit(main())"]


def run_demo(selection: list[str] | None = None, out=None) -> int:
    from tests.lab.postfix import LabPostfix, available
    from tests.lab.sharedlock import SharedDns
    from tests.lab.world import LAB_DOMAIN

    out = out or sys.stdout
    reason = available()
    if reason:
        print(f"demo: cannot start the lab: {reason}", file=out)
        return 1
    runs = [r for r in DEMO_RUNS if not selection or any(s in r[0] for s in selection)]
    results = []
    with ExitStack() as stack:
        t0 = time.monotonic()
        dns = stack.enter_context(SharedDns())
        postfix = stack.enter_context(LabPostfix())
        print(f"lab up in {time.monotonic() - t0:.1f}s: DNS {dns.server_arg}, Postfix "
              + ", ".join(f"{e.hostname}={e.address}:{e.port}"
                          for e in postfix.endpoints.values()), file=out)
        from tests.lab.nginx import LabNginx, ca_bundle

        web = stack.enter_context(LabNginx())
        from tests.lab.unbound import SharedUnbound

        resolver = stack.enter_context(SharedUnbound())
        sts_ca = ca_bundle(Path(postfix.workdir) / "demo-sts-ca.pem", postfix.ca_file,
                           web.ca_file)
        secret = Path(postfix.workdir) / "demo-sasl-password"
        secret.write_text(postfix.sasl_password + "\n")
        os.chmod(secret, 0o600)
        from tests.lab.roundtriplab import MONITOR_PASSWORD

        mailbox_secret = Path(postfix.workdir) / "demo-mailbox-password"
        mailbox_secret.write_text(MONITOR_PASSWORD + "\n")
        os.chmod(mailbox_secret, 0o600)
        values = {"domain": LAB_DOMAIN, "dns": dns.server_arg, "ca": str(postfix.ca_file),
                  "mailbox_password_file": str(mailbox_secret),
                  "sasl_user": postfix.sasl_user, "sasl_password_file": str(secret),
                  "sts_ca": str(sts_ca), "resolver": resolver.server_arg}
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parents[2])]
            + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
        for run in runs:
            plugin, args = run[0], [a.format(**values) for a in run[1:]]
            print(f"\n$ {plugin} {shlex.join(args)}", file=out)
            command = _command(plugin)
            if command is None:
                print(f"  (skipped: {MODULE.format(plugin)} is not written yet)", file=out)
                results.append((plugin, "skipped", args))
                continue
            started = time.monotonic()
            try:
                proc = subprocess.run(command + args, capture_output=True, text=True,
                                      timeout=RUN_TIMEOUT, env=env)
                output, status = proc.stdout + proc.stderr, proc.returncode
            except subprocess.TimeoutExpired as exc:
                partial = exc.stdout or b""
                output = partial.decode("utf-8", "replace") if isinstance(partial, bytes) \
                    else partial
                output += f"\n(demo: killed after {RUN_TIMEOUT:g}s)"
                status = "timeout"
            print(output.rstrip("\n"), file=out)
            print(f"[exit status {status}, {time.monotonic() - started:.2f}s]", file=out)
            results.append((plugin, status, args))
    print("\nsummary:", file=out)
    names = {0: "OK", 1: "WARNING", 2: "CRITICAL", 3: "UNKNOWN", "skipped": "skipped"}
    for plugin, status, args in results:
        label = names.get(status, f"exit {status}")
        print(f"  {label:<9} {plugin} {' '.join(a for a in args if a != '-v')[:90]}", file=out)
    crashed = [p for p, s, _ in results if s not in names]
    return 1 if crashed else 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return run_demo(argv or None)


if __name__ == "__main__":
    sys.exit(main())
