"""`make bench`: run the lab benchmarks one after the other and print their figures.

Each entry of BENCHES is a module with `main(argv) -> int`; add yours.
"""

from __future__ import annotations

import importlib
import sys

BENCHES = [
    "tests.lab.bench_dnsbl",  # check_dnsbl: 30 zones x 4 addresses, 100 ms per answer
    "tests.lab.bench_domain",  # check_smtp_phases -D: 1..16 MX endpoints, 100 ms DNS, 200 ms banner
]


def main(argv=None) -> int:
    status = 0
    for name in BENCHES:
        print(f"== {name}", flush=True)
        status |= importlib.import_module(name).main([]) or 0
    return status


if __name__ == "__main__":
    sys.exit(main())
