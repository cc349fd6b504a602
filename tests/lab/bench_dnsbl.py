"""Benchmark: check_dnsbl over 30 zones x 4 addresses with 100 ms per DNS answer.

Runs the plugin as a process of its own (as Icinga would; the interpreter of
tests/lab/bench_kit.py), once with the default concurrency and once with
--concurrency 1, against the lab NSD behind the delaying forwarder
(tests/lab/dnsdelay.py), and prints the wall times side by side and their
ratio. Beside it, the peer check_rbl (Debian monitoring-plugins-contrib, when
installed) asks the same zones about the same addresses through the same
forwarder: it takes one address per run, so one check of the 4 addresses is
4 runs, one after the other.

    python -m tests.lab.bench_dnsbl [--delay 0.1] [--repeat 3] [--concurrency N ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

from tests.lab.bench_kit import Plugins, cannot_run, peer, run, target
from tests.lab.dnsbllab import (
    BENCH_ADDRESSES,
    BENCH_FORWARDER_ADDRESS,
    BENCH_NSD_ADDRESS,
    BENCH_ZONE_NAMES,
    bench_zones,
    running_lab,
)
from tests.lab.dnsdelay import measure_latency

BENCH = "check_dnsbl"
#: the issue's targets: wall time of one run, and how much faster than check_rbl
MAX_WALL = 0.6
MIN_SPEEDUP = 3.0


def run_check(plugins: Plugins, server_arg: str, concurrency: int | None,
              timeout: float) -> tuple:
    cmd = plugins.command("check_dnsbl", "--dns-server", server_arg, "-t", f"{timeout:g}",
                          "--no-default-zones")
    for address in BENCH_ADDRESSES:
        cmd += ["--ip", address]
    for zone in BENCH_ZONE_NAMES:
        cmd += ["--zone", zone]
    if concurrency is not None:
        cmd += ["--concurrency", str(concurrency)]
    done = run(cmd, plugins.env)
    return done.wall, done.status, done.first_line, done.cpu


def plugin_default(plugins: Plugins, option: str) -> str:
    """The default of `option` as the plugin's --help states it (the tree measured may
    not be this one)."""
    import re

    text = " ".join(run(plugins.command("check_dnsbl", "--help"), plugins.env).output.split())
    found = re.search(re.escape(option) + r" \S+ [^(]*\(default: (\w+)\)", text)
    return found.group(1) if found else "default"


def run_check_rbl(binary: str, forwarder) -> tuple:
    """check_rbl once per address, one after the other: (wall, CPU, statuses, first lines,
    why it cannot run or None)."""
    address, port = forwarder.listen
    # check_rbl's -n takes an address only; Net::DNS reads the port from RES_OPTIONS
    env = {**os.environ, "RES_OPTIONS": f"port:{port}"}
    wall = cpu = 0.0
    statuses, lines, unusable = [], [], None
    for subject in BENCH_ADDRESSES:
        cmd = [binary, "-H", subject, "-n", address, "-t", "30"]
        for zone in BENCH_ZONE_NAMES:
            cmd += ["-s", zone]
        done = run(cmd, env)
        wall += done.wall
        cpu += done.cpu
        statuses.append(done.status)
        lines.append(done.first_line)
        unusable = unusable or cannot_run(done)
    return wall, cpu, statuses, lines, unusable


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.1,
                        help="seconds of latency per DNS answer (default: 0.1)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per setting (median)")
    parser.add_argument("--python", help="interpreter to run the plugin with (bench_kit.py)")
    parser.add_argument("--concurrency", type=int, action="append",
                        help="settings to compare (default: the plugin's default, and 1)")
    args = parser.parse_args(argv)
    settings = args.concurrency or [None, 1]

    queries = len(BENCH_ZONE_NAMES) * (len(BENCH_ADDRESSES) + 1) + 1
    print(f"check_dnsbl benchmark: {len(BENCH_ZONE_NAMES)} zones x {len(BENCH_ADDRESSES)} "
          f"addresses, {args.delay * 1000:.0f} ms per DNS answer")
    print(f"  {queries} queries per run: one A per zone and address, one RFC 5782 test "
          "entry per zone, one TXT for the single listing")
    plugins = Plugins(args.python)
    default_concurrency = plugin_default(plugins, "--concurrency")
    check_rbl = peer("check_rbl")
    print(f"  interpreter: {plugins.describe()}")
    repeat = max(1, args.repeat)
    results, rbl_runs = {}, []
    with running_lab(bench_zones(), BENCH_NSD_ADDRESS, BENCH_FORWARDER_ADDRESS,
                     delay=args.delay) as forwarder:
        latency = measure_latency(forwarder.listen, f"2.0.0.127.{BENCH_ZONE_NAMES[0]}")
        print(f"  measured round trip of one query through the lab DNS: {latency * 1000:.0f} ms")
        run_check(plugins, forwarder.server_arg, None, 10.0)  # warm-up: page cache, .pyc
        for setting in settings:
            timeout = max(10.0, queries * (args.delay + 0.05) * 2 / (setting or 1))
            # the slow setting once: its figure is there to compare, not to split hairs
            runs = [run_check(plugins, forwarder.server_arg, setting, timeout)
                    for _ in range(repeat if setting is None or setting > 1 else 1)]
            wall = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[3] for r in runs)
            label = f"check_dnsbl --concurrency {setting or default_concurrency}" + (
                " (default)" if setting is None else "")
            results[setting] = wall
            print(f"  {label:<40} wall {wall:6.2f} s  CPU {cpu:5.2f} s  exit {runs[0][1]}  "
                  f"{runs[0][2][:150]}")
        if check_rbl:
            rbl_runs = [run_check_rbl(check_rbl, forwarder) for _ in range(repeat)]
    if rbl_runs and rbl_runs[0][4]:  # its Perl modules missing, say
        print(f"  check_rbl {rbl_runs[0][4]}")
        rbl_runs = []
    elif rbl_runs:
        wall = statistics.median(r[0] for r in rbl_runs)
        cpu = statistics.median(r[1] for r in rbl_runs)
        print(f"  {'check_rbl, 4 runs of 30 zones (contrib)':<40} wall {wall:6.2f} s  "
              f"CPU {cpu:5.2f} s  exit {','.join(map(str, rbl_runs[0][2]))}  "
              f"{rbl_runs[0][3][0][:110]}")
    elif not check_rbl:
        print("  check_rbl (monitoring-plugins-contrib): not installed, skipped")
    if len(results) >= 2:
        fast, slow = min(results.values()), max(results.values())
        print(f"  slowest / fastest setting: {slow / fast:.1f}x")
    default = results.get(None)
    if default is not None:
        target(BENCH, "check_dnsbl 30 zones x 4 addresses, 100 ms DNS: wall",
               f"{default:.2f} s", f"< {MAX_WALL} s", default < MAX_WALL)
        speedup = statistics.median(r[0] for r in rbl_runs) / default if rbl_runs else None
        target(BENCH, "check_rbl wall / check_dnsbl wall, same zones and addresses",
               f"{speedup:.1f}x" if speedup else "-", f">= {MIN_SPEEDUP:g}x",
               speedup >= MIN_SPEEDUP if speedup else None)
    plugins.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
