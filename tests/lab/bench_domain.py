"""Benchmark: check_smtp_phases -D wall time against the number of MX endpoints.

Runs the plugin as a process of its own (as Icinga would; the interpreter of
tests/lab/bench_kit.py) for the
domains n1, n2, n4, n8 and n16 of the zone scale.bench.test, which have 1, 2,
4, 8 and 16 MX hosts. Each MX host has one A record (no AAAA, so the plugin
asks A and AAAA for each) pointing to its own fake SMTP server on
127.0.26.1 .. 127.0.26.16, all on one port, each delaying its banner by 200 ms.
Every DNS answer comes from the lab NSD (127.0.26.53) through the delaying
forwarder of tests/lab/dnsdelay.py (127.0.26.54), 100 ms per answer. The runs
are interleaved (1, 2, 4, 8, 16, then again ...) so that a drift of the
machine's speed hits every N alike; the table shows the median wall time per N
and its ratio to N=1.

    python -m tests.lab.bench_domain [--repeat 5] [--delay 0.1] [--banner-delay 0.2]
                                     [--concurrency N] [--python PATH]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys

from tests.lab.bench_kit import Plugins, run, target

ZONE = "scale.bench.test"
COUNTS = (1, 2, 4, 8, 16)
SMTP_ADDRESSES = tuple(f"127.0.26.{i}" for i in range(1, max(COUNTS) + 1))
NSD_ADDRESS = "127.0.26.53"
FORWARDER_ADDRESS = "127.0.26.54"
PLUGIN_TIMEOUT = 10.0
BENCH = "check_smtp_phases -D"
#: the issue's target: N endpoints take at most this times one endpoint's wall time
MAX_RATIO = 1.3


def domain(n: int) -> str:
    return f"n{n}.{ZONE}"


def scale_zone() -> str:
    """Domain nN has N MX hosts mx1..mxN, host i on SMTP_ADDRESSES[i-1], A only."""
    lines = []
    for n in COUNTS:
        for i in range(1, n + 1):
            lines.append(f"n{n}          MX {10 * i} mx{i}.n{n}")
            lines.append(f"mx{i}.n{n}     A  {SMTP_ADDRESSES[i - 1]}")
    return "\n".join(lines) + "\n"


def free_tcp_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def start_smtp_servers(banner_delay: float, attempts: int = 5) -> list:
    """One FakeSmtpServer per address in SMTP_ADDRESSES, all on one free port."""
    from tests.lab.fakesmtp import Delayed, FakeSmtpServer

    script = {"banner": Delayed(banner_delay, "220 scale.bench.test ESMTP")}
    for _ in range(attempts):
        port = free_tcp_port(SMTP_ADDRESSES[0])
        servers = []
        try:
            for address in SMTP_ADDRESSES:
                servers.append(FakeSmtpServer(script, address=address, port=port,
                                              hostname=f"{address}.scale.bench.test").start())
            return servers
        except OSError:  # the port was taken on one of the addresses meanwhile
            stop_all(servers)
    raise RuntimeError(f"no TCP port free on all of {SMTP_ADDRESSES[0]}..{SMTP_ADDRESSES[-1]}")


def stop_all(servers: list) -> None:
    for server in servers:
        server.stop()


def run_check(plugins: Plugins, n: int, server_arg: str, port: int,
              concurrency: int | None) -> tuple[float, int | str, str]:
    """(wall seconds, exit status or 'hung', first line of output) of one run."""
    cmd = plugins.command("check_smtp_phases", "-D", domain(n), "--dns-server", server_arg,
                          "-p", port, "--no-starttls", "-t", f"{PLUGIN_TIMEOUT:g}")
    if concurrency is not None:
        cmd += ["--concurrency", str(concurrency)]
    # a plugin that ignores its own -t is killed and reported as "hung"
    done = run(cmd, plugins.env, timeout=PLUGIN_TIMEOUT + 20)
    lines = done.output.splitlines()
    if lines and lines[0].startswith("Traceback"):  # no plugin output: the last line says why
        lines = lines[-1:]
    return done.wall, done.status, (lines or ["(no output)"])[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs per N (default: 5)")
    parser.add_argument("--delay", type=float, default=0.1,
                        help="seconds of latency per DNS answer (default: 0.1)")
    parser.add_argument("--banner-delay", type=float, default=0.2,
                        help="seconds each SMTP server waits before its banner (default: 0.2)")
    parser.add_argument("--concurrency", type=int,
                        help="passed to the plugin (default: the plugin's own default)")
    parser.add_argument("--python", help="interpreter to run the plugin with (bench_kit.py)")
    args = parser.parse_args(argv)
    repeat = max(1, args.repeat)

    from tests.lab.authdns import LabDns, free_udp_port
    from tests.lab.dnsdelay import DelayingDns, measure_latency

    plugins = Plugins(args.python)
    print(f"check_smtp_phases -D benchmark: 1..{max(COUNTS)} MX endpoints, "
          f"{args.delay * 1000:.0f} ms per DNS answer, "
          f"{args.banner_delay * 1000:.0f} ms per SMTP banner")
    print(f"  interpreter: {plugins.describe()}")
    print("  concurrency: "
          + (str(args.concurrency) if args.concurrency is not None else "plugin default"))
    print("  queries per run: MX of the domain, then A and AAAA of each MX host "
          "(1 + 2N); one SMTP session per endpoint (--no-starttls)")

    nsd = LabDns(NSD_ADDRESS, free_udp_port(NSD_ADDRESS))
    nsd.add_zone(ZONE, scale_zone())
    servers: list = []
    forwarder = None
    runs: dict[int, list] = {n: [] for n in COUNTS}
    try:
        nsd.start()
        forwarder = DelayingDns((FORWARDER_ADDRESS, free_udp_port(FORWARDER_ADDRESS)),
                                (nsd.address, nsd.port), delay=args.delay).start()
        servers = start_smtp_servers(args.banner_delay)
        port = servers[0].port
        latency = measure_latency(forwarder.listen, f"mx1.{domain(1)}")
        print(f"  measured round trip of one query through the lab DNS: {latency * 1000:.0f} ms")
        # warm-up, not counted: page cache, .pyc files
        run_check(plugins, 1, forwarder.server_arg, port, args.concurrency)
        for _ in range(repeat):
            for n in COUNTS:
                runs[n].append(run_check(plugins, n, forwarder.server_arg, port,
                                         args.concurrency))
        sessions = sum(len(s.sessions) for s in servers)
    finally:
        stop_all(servers)
        if forwarder is not None:
            forwarder.stop()
        nsd.stop()
        plugins.close()

    expected = repeat * sum(COUNTS) + 1  # and the warm-up's
    print(f"  {repeat} run(s) per N, interleaved; SMTP sessions served: {sessions} "
          f"(expected {expected})")
    print()
    print(f"  {'N':>3}  {'median':>8}  {'min':>7}  {'max':>7}  {'ratio':>6}  "
          f"{'1+2N answers in a row':>21}  exit")
    # Times of runs that exited 0 only: a broken plugin exits in a fraction of
    # a second, and mixing such runs in would make the figures meaningless.
    good = {n: [r[0] for r in runs[n] if r[1] == 0] for n in COUNTS}
    medians = {n: statistics.median(good[n]) for n in COUNTS if good[n]}
    for n in COUNTS:
        counts = {}
        for r in runs[n]:
            counts[str(r[1])] = counts.get(str(r[1]), 0) + 1
        statuses = " ".join(f"{status}x{count}" if len(counts) > 1 else status
                            for status, count in sorted(counts.items()))
        dns_serial = f"{(1 + 2 * n) * latency:20.2f}s"
        if n not in medians:
            print(f"  {n:>3}  {'-':>8}  {'-':>7}  {'-':>7}  {'-':>6}  {dns_serial}  {statuses}")
            continue
        ratio = f"{medians[n] / medians[COUNTS[0]]:5.2f}x" if COUNTS[0] in medians else "    -"
        print(f"  {n:>3}  {medians[n]:7.2f}s  {min(good[n]):6.2f}s  {max(good[n]):6.2f}s  "
              f"{ratio}  {dns_serial}  {statuses}")
    print()
    for n in COUNTS:  # one good run's first line (status part), and one bad run's if any
        shown = [r for r in runs[n] if r[1] == 0][:1] + [r for r in runs[n] if r[1] != 0][:1]
        for _, status, line in shown:
            text, _, perfdata = line.partition(" | ")
            values = f"   (+ {len(perfdata.split())} perfdata values)" if perfdata else ""
            print(f"  N={n:<2} exit {status}: "
                  f"{text[:200] + ('...' if len(text) > 200 else '')}{values}")
    print()
    first, last = COUNTS[0], COUNTS[-1]
    if first in medians and last in medians:
        print(f"  {last} endpoints / {first} endpoint = {medians[last] / medians[first]:.2f}x")
    else:
        print(f"  {last} endpoints / {first} endpoint = n/a (no run exited 0 for one of them)")
    worst = max((n for n in COUNTS if n in medians), default=None,
                key=lambda n: medians[n])
    if first in medians and all(n in medians for n in COUNTS):
        ratio = medians[worst] / medians[first]
        target(BENCH, f"-D wall, N endpoints / 1, N <= {last}, 100 ms DNS (worst N={worst})",
               f"{ratio:.2f}x", f"<= {MAX_RATIO}x", ratio <= MAX_RATIO)
    else:
        target(BENCH, f"-D wall, N endpoints / 1, N <= {last}, 100 ms DNS", "-",
               f"<= {MAX_RATIO}x", False)
    bad = [n for n in COUNTS if any(r[1] != 0 for r in runs[n])]
    if bad:
        print(f"  plugin runs did not exit 0 for N = {', '.join(map(str, bad))}; "
              "times above are of the runs that did")
    return 1 if bad else 0

if __name__ == "__main__":
    sys.exit(main())
