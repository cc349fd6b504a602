"""Benchmark: check_dnsbl over 30 zones x 4 addresses with 100 ms per DNS answer.

Runs the installed plugin as a process of its own (as Icinga would), once with
the default concurrency and once with --concurrency 1, against the lab NSD
behind the delaying forwarder (tests/lab/dnsdelay.py), and prints the wall
times side by side and their ratio.

    python -m tests.lab.bench_dnsbl [--delay 0.1] [--repeat 1] [--concurrency N ...]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from tests.lab.dnsbllab import (
    BENCH_ADDRESSES,
    BENCH_FORWARDER_ADDRESS,
    BENCH_NSD_ADDRESS,
    BENCH_ZONE_NAMES,
    bench_zones,
    running_lab,
)
from tests.lab.dnsdelay import measure_latency


def run_check(server_arg: str, concurrency: int | None, timeout: float) -> tuple:
    cmd = [sys.executable, "-m", "check_smtp_posture.plugins.check_dnsbl",
           "--dns-server", server_arg, "-t", str(timeout), "--no-default-zones"]
    for address in BENCH_ADDRESSES:
        cmd += ["--ip", address]
    for zone in BENCH_ZONE_NAMES:
        cmd += ["--zone", zone]
    if concurrency is not None:
        cmd += ["--concurrency", str(concurrency)]
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    return time.monotonic() - started, proc.returncode, proc.stdout.splitlines()[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, default=0.1,
                        help="seconds of latency per DNS answer (default: 0.1)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per setting (median)")
    parser.add_argument("--concurrency", type=int, action="append",
                        help="settings to compare (default: the plugin's default, and 1)")
    args = parser.parse_args(argv)
    settings = args.concurrency or [None, 1]

    from check_smtp_posture.cli import DEFAULT_CONCURRENCY

    queries = len(BENCH_ZONE_NAMES) * (len(BENCH_ADDRESSES) + 1) + 1
    print(f"check_dnsbl benchmark: {len(BENCH_ZONE_NAMES)} zones x {len(BENCH_ADDRESSES)} "
          f"addresses, {args.delay * 1000:.0f} ms per DNS answer")
    print(f"  {queries} queries per run: one A per zone and address, one RFC 5782 test "
          "entry per zone, one TXT for the single listing")
    with running_lab(bench_zones(), BENCH_NSD_ADDRESS, BENCH_FORWARDER_ADDRESS,
                     delay=args.delay) as forwarder:
        latency = measure_latency(forwarder.listen, f"2.0.0.127.{BENCH_ZONE_NAMES[0]}")
        print(f"  measured round trip of one query through the lab DNS: {latency * 1000:.0f} ms")
        results = {}
        for setting in settings:
            timeout = max(10.0, queries * (args.delay + 0.05) * 2 / (setting or 1))
            runs = [run_check(forwarder.server_arg, setting, timeout)
                    for _ in range(args.repeat)]
            wall = statistics.median(r[0] for r in runs)
            label = f"concurrency {setting or DEFAULT_CONCURRENCY}" + (
                " (default)" if setting is None else "")
            results[label] = wall
            print(f"  {label:<26} wall {wall:7.2f} s   exit {runs[0][1]}   {runs[0][2]}")
    labels = list(results)
    if len(labels) >= 2:
        fast, slow = min(results.values()), max(results.values())
        print("  " + "   ".join(f"{k}: {v:.2f} s" for k, v in results.items())
              + f"   ratio {slow / fast:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
