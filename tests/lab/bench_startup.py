"""CPU time and peak memory of one plugin invocation, beside check_smtp and bare Python.

    python3 -m tests.lab.bench_startup [-n RUNS]

Starts the lab Postfix, then runs each command RUNS times in turn (A, B, C,
A, B, C, ...) so that a drift of the machine's speed hits all alike, and
prints per command the median user+sys CPU seconds, the median wall time and
the largest peak RSS, measured with getrusage(RUSAGE_CHILDREN) and wait4().
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

MX1 = "127.0.25.1"


def measure(argv: list[str]) -> tuple[float, float, int, int]:
    """(cpu seconds, wall seconds, peak RSS KiB, exit status) of one run."""
    started = time.monotonic()
    # A child forked from this interpreter would count the interpreter's pages
    # in its peak RSS; exec'ing through a small shell keeps the figure the
    # command's own (the shell's ~1 MB is below every command measured).
    child = subprocess.Popen(["/bin/sh", "-c", 'exec "$@"', "sh", *argv],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    return usage.ru_utime + usage.ru_stime, wall, usage.ru_maxrss, os.waitstatus_to_exitcode(status)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=15)
    args = parser.parse_args()

    from tests.lab.postfix import LabPostfix

    ours = shutil.which("check_smtp_phases")
    theirs = "/usr/lib/nagios/plugins/check_smtp"
    commands = {
        "python3 -c pass": [sys.executable, "-c", "pass"],
        "check_smtp -H ip (monitoring-plugins)": [theirs, "-H", MX1],
        "check_smtp_phases -H ip --no-starttls": [ours, "-H", MX1, "--no-starttls"],
        "check_smtp_phases -H ip (STARTTLS, cert)": [ours, "-H", MX1],
    }
    with LabPostfix() as lab:
        commands["check_smtp_phases -H ip (STARTTLS, cert)"] += [
            "--servername", "mx1.posture.test", "--ca-file", str(lab.ca_file)]
        samples: dict[str, list] = {name: [] for name in commands}
        for argv in commands.values():  # warm-up: page cache, .pyc files
            measure(argv)
        for _ in range(args.runs):
            for name, argv in commands.items():
                samples[name].append(measure(argv))
    base = statistics.median(s[0] for s in samples["python3 -c pass"])
    print(f"{'command':42} {'cpu s':>8} {'x python':>9} {'wall s':>8} {'peak RSS':>10} exit")
    for name, runs in samples.items():
        cpu = statistics.median(r[0] for r in runs)
        wall = statistics.median(r[1] for r in runs)
        rss = max(r[2] for r in runs)
        codes = sorted({r[3] for r in runs})
        print(f"{name:42} {cpu:8.4f} {cpu / base:9.2f} {wall:8.4f} {rss / 1024:8.1f}MB "
              f"{','.join(map(str, codes))}")
    print(f"({args.runs} runs each, interleaved; medians; peak RSS is the largest seen)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
