"""check_dmarc beside checkdmarc on the lab's DMARC zones, run by hand (not a test).

    python3 -m venv /tmp/checkdmarc-venv && /tmp/checkdmarc-venv/bin/pip install checkdmarc
    PYTHONPATH=$PWD python3 -m tests.lab.bench_checkdmarc [--dns-server ADDR] [--venv DIR]

For each name of tests/lab/dmarclab.py: check_dmarc's exit status and first line, and
what checkdmarc's check_dmarc() (run in its own virtualenv, against the same server)
says: valid or its error, where it found the record, its warnings. The DNS server must
serve the dmarclab zone: the shared lab NSD (tests/lab/world.py), or any NSD a
developer started with world.ZONES.
"""

from __future__ import annotations

import argparse
import json
import subprocess

from check_smtp_posture.plugins.check_dmarc import main
from tests.conftest import run_main
from tests.lab.world import DNS_SERVER_ARG

DOMAINS = ("good", "wild", "unauth", "gone", "nullmx", "a.b.tree", "sub.org.psd", "none",
           "quar", "testing", "nop", "legacy", "nodmarc", "syntax", "novalue", "baduri",
           "dup", "lower", "split", "huge", "binary", "binarypolicy", "many")

#: run inside the checkdmarc virtualenv: one JSON line per domain
CHECKDMARC = """
import json, sys, warnings
warnings.simplefilter("ignore")
from checkdmarc.dmarc import check_dmarc
server = sys.argv[1]
for domain in sys.argv[2:]:
    try:
        result = check_dmarc(domain, nameservers=[server], timeout=2.0)
    except Exception as exc:
        result = {"exception": f"{type(exc).__name__}: {exc}"}
    tags = result.get("tags") or {}
    print(json.dumps({"domain": domain, "valid": result.get("valid"),
                      "error": result.get("error") or result.get("exception"),
                      "location": result.get("location"),
                      "p": (tags.get("p") or {}).get("value"),
                      "sp": (tags.get("sp") or {}).get("value"),
                      "np": (tags.get("np") or {}).get("value"),
                      "warnings": result.get("warnings")}, default=str))
"""


def main_(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dns-server", default=DNS_SERVER_ARG)
    parser.add_argument("--venv", default="/tmp/checkdmarc-venv")
    args = parser.parse_args(argv)
    names = [f"{d}.dmarclab" for d in DOMAINS]
    address = args.dns_server.rsplit(":", 1)[0]
    theirs = subprocess.run([f"{args.venv}/bin/python", "-c", CHECKDMARC, address, *names],
                            capture_output=True, text=True, timeout=300)
    by_domain = {r["domain"]: r for r in map(json.loads, theirs.stdout.splitlines())}
    for name in names:
        ours = run_main(main, ["--dns-server", args.dns_server, "-D", name])
        print(f"{name}\n  check_dmarc ({ours.exitcode}): {ours.first_line.partition(' | ')[0]}")
        print(f"  checkdmarc: {json.dumps(by_domain.get(name), sort_keys=True)}")
    if theirs.stderr.strip():
        print("checkdmarc stderr:", theirs.stderr.strip()[-2000:])


if __name__ == "__main__":
    main_()
