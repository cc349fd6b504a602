"""`make bench`: run the lab benchmarks one after the other, print their figures,
then every target of the performance issue with the figure measured and PASS/FAIL.

Each entry of BENCHES is a module with `main(argv) -> int`; add yours. A
benchmark records its targets with tests.lab.bench_kit.target().

    python3 -m tests.lab.bench [--python PATH]
"""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHES = [
    "tests.lab.bench_cpu",  # CPU, wall, peak RSS per run beside the peers; phase-time accuracy
    "tests.lab.bench_dnsbl",  # check_dnsbl: 30 zones x 4 addresses, 100 ms per answer, check_rbl
    "tests.lab.bench_domain",  # check_smtp_phases -D: 1..16 MX endpoints, 100 ms DNS, 200 ms banner
    "tests.lab.bench_roundtrip",  # check_mail_roundtrip: lab round trip; notice delay, IDLE vs poll
    "tests.lab.bench_latency",  # every SMTP/IMAP/POP3/HTTPS plugin over a 100 ms path vs its floor
]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", help="interpreter to run the plugins with (bench_kit.py)")
    args = parser.parse_args(argv)
    from tests.lab.bench_kit import TARGETS, print_targets

    status = 0
    for name in BENCHES:
        print(f"== {name}", flush=True)
        status |= importlib.import_module(name).main(
            ["--python", args.python] if args.python else []) or 0
        print(flush=True)
    print("== targets")
    print_targets(TARGETS)
    return status


if __name__ == "__main__":
    sys.exit(main())
