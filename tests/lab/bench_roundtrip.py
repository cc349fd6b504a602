"""check_mail_roundtrip in the lab: the round trip it measures, and how long after a
probe lands in the mailbox the plugin notices it, with IMAP IDLE against polling.

    python3 -m tests.lab.bench_roundtrip [--runs N] [--poll-interval S]

Round trip: the plugin run N times against loop.test (two MX, IMAPS with IDLE); the
per-MX `roundtrip_time` it reports. Notice delay: the plugin's mailbox client
(check_smtp_posture.mailbox, as the plugin drives it: scan, wait, scan) waits for a
message that another thread delivers to mx.monitor.test at a random moment; the
delay is the client's `noticed` time minus the delivered file's modification time
in the monitor Maildir (the moment Postfix's virtual agent wrote it). Both clocks are
this machine's. Dovecot 2.3 holds IDLE's EXISTS back ~0.5 s after a change (it batches
inotify events), which the IDLE figure includes.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import smtplib
import statistics
import subprocess
import sys
import threading
import time

from tests.lab import roundtriplab as rt


def _deliver(token: str, delay: float) -> None:
    time.sleep(delay)
    message = (f"From: <{rt.MONITOR_USER}>\r\nTo: <{rt.MONITOR_USER}>\r\n"
               f"Subject: bench {token}\r\nX-Smtp-Posture-Probe: token={token}; "
               f"domain=bench.test; mx=bench\r\n\r\nprobe token: {token}\r\n")
    with smtplib.SMTP(rt.MONITOR_MX[1], 25, local_hostname="bench.posture.test",
                      timeout=10) as client:
        client.sendmail("bench@posture.test", [rt.MONITOR_USER], message.encode())


def _file_time(maildir, token: str) -> float | None:
    for sub in ("new", "cur"):
        folder = maildir / sub
        for name in os.listdir(folder):
            path = folder / name
            try:
                with open(path, "rb") as f:
                    if token.encode() in f.read():
                        return os.stat(path).st_mtime
            except FileNotFoundError:
                continue
    return None


def notice_delays(postfix, dns_arg: str, kind: str, runs: int, poll: float) -> list:
    from check_smtp_posture.deadline import Deadline
    from check_smtp_posture.mailbox import open_mailbox, parse_url

    user = rt.MONITOR_USER.replace("@", "%40")
    urls = {"imap-idle": f"imaps://{user}@{rt.MAILBOX_HOST}/INBOX",
            "imap-poll": f"imaps://{user}@{rt.MAILBOX_HOST}/INBOX",
            "pop3-poll": f"pop3s://{user}@{rt.MAILBOX_HOST}",
            "maildir-poll": f"maildir:{postfix.monitor_maildir()}"}
    spec = parse_url(urls[kind])
    delays = []
    for _ in range(runs):
        deadline = Deadline(30)
        box = open_mailbox(spec, address=rt.MAILBOX_ADDRESS, password=rt.MONITOR_PASSWORD,
                           ca_file=str(postfix.ca_file), deadline=deadline,
                           idle=kind == "imap-idle", poll_interval=poll)
        token = f"posture-{int(time.time())}-{random.getrandbits(48):012x}"
        needle = ("X-Smtp-Posture-Probe", "domain=bench.test;")
        sender = threading.Thread(target=_deliver, args=(token, random.uniform(0.2, 1.5)))
        sender.start()
        found = []
        try:
            while not found and not deadline.expired:
                found = [s for s in box.scan(needle, {token}) if token.encode() in s.header]
                if not found:
                    box.wait(deadline.remaining())
            sender.join()
            arrived = _file_time(postfix.monitor_maildir(), token)
            if found and arrived is not None:
                delays.append(found[0].noticed - arrived)
            box.delete(found)
        finally:
            box.close()
    return delays


def roundtrips(postfix, dns_arg: str, runs: int, python: str) -> list:
    times = []
    env = dict(os.environ, CHECK_MAILBOX_PASSWORD=rt.MONITOR_PASSWORD)
    for _ in range(runs):
        proc = subprocess.run(
            [python, "-m", "check_smtp_posture.plugins.check_mail_roundtrip", "-D",
             rt.LOOP_DOMAIN, "--to", f"probe@{rt.LOOP_DOMAIN}", "--mailbox",
             f"imaps://{rt.MONITOR_USER.replace('@', '%40')}@{rt.MAILBOX_HOST}/INBOX",
             "--mailbox-ca-file", str(postfix.ca_file), "--dns-server", dns_arg,
             "--helo-name", "bench.posture.test", "-t", "30"],
            capture_output=True, text=True, env=env, timeout=60)
        times += [float(v) for v in re.findall(r"roundtrip_time'=([0-9.]+)s", proc.stdout)]
    return times


def _row(name: str, values: list) -> str:
    if not values:
        return f"  {name:<34} no data"
    return (f"  {name:<34} n={len(values):<3} median {statistics.median(values):.3f}s  "
            f"min {min(values):.3f}s  max {max(values):.3f}s")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args(argv)
    from tests.lab.postfix import LabPostfix
    from tests.lab.sharedlock import SharedDns

    with SharedDns() as dns, LabPostfix() as postfix:
        print(f"check_mail_roundtrip, lab loop.test ({args.runs} runs each, poll interval "
              f"{args.poll_interval:g}s)")
        print(_row("roundtrip_time per MX (IMAPS+IDLE)",
                   roundtrips(postfix, dns.server_arg, args.runs, args.python)))
        for kind in ("imap-idle", "imap-poll", "pop3-poll", "maildir-poll"):
            print(_row(f"arrival -> noticed, {kind}",
                       notice_delays(postfix, dns.server_arg, kind, args.runs,
                                     args.poll_interval)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
