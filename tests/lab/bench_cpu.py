"""Benchmark: what one plugin run costs, beside the peers, and how true its phase times are.

    python3 -m tests.lab.bench_cpu [-n RUNS] [--python PATH] [--skip-accuracy]

Cost. Against the lab (Postfix on 127.0.25.1-2, NSD on 127.0.25.53), every
plugin of the family, monitoring-plugins' check_smtp doing the same job, the
peers check_rbl and check_ssl_cert (Debian monitoring-plugins-contrib; a row
is skipped when the peer is not installed or cannot run), a bare
`python3 -c pass` and `python3 -c "import dns.resolver"` from the plugins'
interpreter (tests/lab/bench_kit.py says which), and the floors: the imports
no run of a kind can do without (nagiosplugin and argparse; with ssl and
cryptography.x509 for TLS; with dns.resolver for the DNS-only plugins). A
target whose floor already exceeds its limit gets a note: out of reach,
whatever the plugin does. The commands run RUNS times in turn (A, B, C, A,
B, C, ...), so that a drift of the machine's speed hits all alike; the table
shows per command the median CPU time (user + sys) of the child, its ratio
to the two Python baselines, the median wall time and the peak RSS (the
largest of a few runs under GNU time).

Timing accuracy. An SMTP server (tests/lab/bench_delay_server.py) delays its
banner, its EHLO reply and its RCPT reply by known amounts; check_smtp_phases
reports each phase's time, which should be the delay plus a loopback round
trip, and the phase times should add up to the session's `time`, once in
clear and once with STARTTLS (handshake and certificate reading included).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.lab.bench_kit import (
    Plugins,
    cannot_run,
    median,
    peak_rss_kib,
    peer,
    print_targets,
    run,
    target,
)

BENCH = "cost"
MX1 = "127.0.25.1"
DNS = "127.0.25.53"
DOMAIN = "posture.test"

PASS_ROW = "python3 -c pass"
DNS_ROW = "python3 -c 'import dns.resolver'"
#: what a run of ours cannot do without: the floor under each of the issue's targets
FLOOR_CODE = {"plain": "import nagiosplugin, argparse",
              "tls": "import nagiosplugin, argparse, ssl, cryptography.x509",
              "dns": "import nagiosplugin, argparse, dns.resolver"}
FLOOR_ROW = {kind: f"python3 -c '{code}'" for kind, code in FLOOR_CODE.items()}
PHASES_PLAIN = "check_smtp_phases -H ip --no-starttls"
PHASES_TLS = "check_smtp_phases -H ip (STARTTLS, cert)"
#: plugins that only ask DNS: each at most 1.25x `import dns.resolver`
DNS_ONLY = ("check_mx_sanity -D", "check_spf -D --ip", "check_dnsbl --ip, 1 zone")
RESOLVER = "127.0.25.54"  # the lab's validating resolver (tests/lab/unbound.py)

#: timing accuracy: seconds the server waits before each reply
DELAYS = {"banner": 0.050, "ehlo": 0.030, "rcpt": 0.080}
PHASE_TOLERANCE = 0.005
SUM_TOLERANCE = 0.002


def lab_missing() -> str | None:
    import os
    import shutil

    from tests.lab.authdns import NSD
    from tests.lab.postfix import DOVECOT, POSTFIX, POSTFIX_DAEMONS

    if os.geteuid() != 0:
        return "the lab needs root"
    for binary in (NSD, POSTFIX, f"{POSTFIX_DAEMONS}/master", DOVECOT):
        if not (shutil.which(binary) or os.path.exists(binary)):
            return f"{binary} is not installed (run `make install`)"
    return None


def commands(plugins: Plugins, ca_file: Path, sts_ca: Path | None = None
             ) -> dict[str, tuple[str, list[str] | None]]:
    """label -> (kind, argv); argv None: a peer that is not installed."""
    c = plugins.command
    check_smtp, check_rbl, check_ssl_cert = (peer(n) for n in
                                             ("check_smtp", "check_rbl", "check_ssl_cert"))

    def peer_argv(binary, *args):
        return [binary, *args] if binary else None

    dns = ("--dns-server", DNS)
    return {
        PASS_ROW: ("python", plugins.python_c("pass")),
        DNS_ROW: ("python", plugins.python_c("import dns.resolver")),
        # what every run of ours pays before a line of its own, and what TLS adds:
        # the floors of the targets (cost_targets)
        FLOOR_ROW["plain"]: ("python", plugins.python_c(FLOOR_CODE["plain"])),
        "python3 -c 'import cryptography.x509'": (
            "python", plugins.python_c("import cryptography.x509")),
        FLOOR_ROW["tls"]: ("python", plugins.python_c(FLOOR_CODE["tls"])),
        FLOOR_ROW["dns"]: ("python", plugins.python_c(FLOOR_CODE["dns"])),
        "check_smtp -H ip (monitoring-plugins)": ("peer", peer_argv(check_smtp, "-H", MX1)),
        PHASES_PLAIN: ("plugin", c("check_smtp_phases", "-H", MX1, "--no-starttls")),
        "check_smtp -H ip -S -D 30,14 (STARTTLS, cert)": (
            "peer", peer_argv(check_smtp, "-H", MX1, "-S", "-D", "30,14")),
        PHASES_TLS: ("plugin", c("check_smtp_phases", "-H", MX1, "--servername",
                                 f"mx1.{DOMAIN}", "--ca-file", ca_file)),
        "check_ssl_cert -H ip -P smtp (contrib)": (
            "peer", peer_argv(check_ssl_cert, "-H", MX1, "-p", "25", "-P", "smtp",
                              "--rootcert-file", str(ca_file), "-m", f"mx1.{DOMAIN}",
                              "--ignore-ocsp", "--ignore-sct")),
        "check_smtp_phases -D, 2 MX": ("plugin", c("check_smtp_phases", "-D", DOMAIN, *dns,
                                                   "--no-starttls")),
        "check_open_relay -H ip": ("plugin", c("check_open_relay", "-H", MX1, "-D", DOMAIN,
                                               *dns)),
        DNS_ONLY[0]: ("plugin", c("check_mx_sanity", "-D", DOMAIN, *dns, "--allow-private")),
        DNS_ONLY[1]: ("plugin", c("check_spf", "-D", DOMAIN, *dns, "--ip", MX1)),
        DNS_ONLY[2]: ("plugin", c("check_dnsbl", "--ip", MX1, "--zone", f"dnsbl.{DOMAIN}",
                                  "--no-default-zones", *dns)),
        "check_rbl -H ip, 1 zone (contrib)": (
            "peer", peer_argv(check_rbl, "-H", MX1, "-s", f"dnsbl.{DOMAIN}", "-n", DNS)),
        # the authenticated-TLS policies: DNS, STARTTLS and certificates (no peer plugin)
        "check_dane -D, 1 MX (2 handshakes)": ("plugin", c(
            "check_dane", "-D", "ee.dane.test", "--dns-server", RESOLVER, "--secure-name",
            "dane.test", "--bogus-name", "badsig.dane.test", "--helo-name", f"bench.{DOMAIN}")),
        "check_mta_sts -D, 2 MX": ("plugin", c(
            "check_mta_sts", "-D", "good.sts.test", *dns, "--ca-file", sts_ca or ca_file,
            "--helo-name", f"bench.{DOMAIN}")),
    }


def measure_costs(plugins: Plugins, rows: dict, runs: int, rss_runs: int) -> dict:
    """label -> {"runs": [Run], "rss": KiB or None, "skipped": reason or None}."""
    figures: dict = {}
    for label, (kind, argv) in rows.items():
        figures[label] = {"kind": kind, "argv": argv, "runs": [], "rss": None, "skipped": None}
        if argv is None:
            figures[label]["skipped"] = "not installed"
            continue
        warm = run(argv, plugins.env)  # page cache, .pyc files; and: does it run at all?
        if kind == "peer":
            figures[label]["skipped"] = cannot_run(warm)
    live = {label: f for label, f in figures.items() if not f["skipped"]}
    for _ in range(runs):
        for f in live.values():
            f["runs"].append(run(f["argv"], plugins.env))
    for f in live.values():
        sizes = [peak_rss_kib(f["argv"], plugins.env) for _ in range(rss_runs)]
        sizes = [s for s in sizes if s is not None]
        f["rss"] = max(sizes) if sizes else None
    return figures


def print_costs(figures: dict, runs: int) -> tuple[float, float]:
    base = median(r.cpu for r in figures[PASS_ROW]["runs"])
    dns = median(r.cpu for r in figures[DNS_ROW]["runs"])
    width = max(len(label) for label in figures)
    print(f"  {'command':<{width}}  {'CPU ms':>7} {'x pass':>7} {'x dns':>6} {'wall ms':>8} "
          f"{'peak RSS':>9}  exit")
    for label, f in figures.items():
        if f["skipped"]:
            print(f"  {label:<{width}}  skipped: {f['skipped']}")
            continue
        cpu = median(r.cpu for r in f["runs"])
        wall = median(r.wall for r in f["runs"])
        rss = f"{f['rss'] / 1024:6.1f} MiB" if f["rss"] else "      n/a"
        codes = ",".join(sorted({str(r.status) for r in f["runs"]}))
        print(f"  {label:<{width}}  {cpu * 1000:7.1f} {cpu / base:7.2f} {cpu / dns:6.2f} "
              f"{wall * 1000:8.1f} {rss:>9}  {codes}")
    print(f"  ({runs} runs each, interleaved; medians; peak RSS: the largest of the runs "
          "under GNU time)")
    return base, dns


def cost_targets(figures: dict, base: float, dns: float) -> None:
    def cpu(label):
        f = figures.get(label)
        return median(r.cpu for r in f["runs"]) if f and f["runs"] else None

    def floor_note(kind, ratio, limit, unit):
        """A note when the imports every such run needs already exceed the limit."""
        if ratio is None or ratio <= limit:
            return ""
        return (f"out of reach: `{FLOOR_CODE[kind]}` alone, which every such run needs, "
                f"is {ratio:.2f}{unit} (limit {limit}{unit})")

    for label, kind, limit in ((PHASES_PLAIN, "plain", 2.5), (PHASES_TLS, "tls", 4.0)):
        value, floor = cpu(label), cpu(FLOOR_ROW[kind])
        ratio = value / base if value is not None else None
        target(BENCH, f"{label}: CPU / python3 -c pass",
               f"{ratio:.2f}x" if ratio else "-", f"<= {limit}x",
               ratio <= limit if ratio else None,
               floor_note(kind, floor / base if floor is not None else None, limit, "x"))
    for label in (PHASES_PLAIN, PHASES_TLS):
        rss = figures[label]["rss"]
        floor = figures.get(FLOOR_ROW["tls"] if label == PHASES_TLS else FLOOR_ROW["plain"],
                            {}).get("rss")
        note = ""
        if rss and rss / 1024 >= 30 and floor:
            note = (f"the imports alone take {floor / 1024:.1f} MiB "
                    f"(`{FLOOR_CODE['tls' if label == PHASES_TLS else 'plain']}`)")
        target(BENCH, f"{label}: peak RSS", f"{rss / 1024:.1f} MiB" if rss else "-",
               "< 30 MiB", rss / 1024 < 30 if rss else None, note)
    floor = cpu(FLOOR_ROW["dns"])
    for label in DNS_ONLY:
        value = cpu(label)
        ratio = value / dns if value is not None else None
        target(BENCH, f"{label}: CPU / import dns.resolver",
               f"{ratio:.2f}x" if ratio else "-", "<= 1.25x",
               ratio <= 1.25 if ratio else None,
               floor_note("dns", floor / dns if floor is not None else None, 1.25, "x"))


# --------------------------------------------------------------------------- accuracy


def perfdata(line: str) -> dict[str, float]:
    _, _, perf = line.partition(" | ")
    values = {}
    for item in perf.split():
        label, _, rest = item.partition("=")
        number = rest.split(";")[0].rstrip("s")
        try:
            values[label.strip("'")] = float(number)
        except ValueError:
            pass
    return values


def measure_accuracy(plugins: Plugins, runs: int) -> bool:
    """Print reported vs injected phase times and sum vs `time`; record the targets."""
    from tests.lab.bench_delay_server import DelayingSmtpServer
    from tests.lab.certs import LabCA

    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-accuracy-") as tmp:
        ca = LabCA()
        ca_file = ca.write(tmp)
        cert = ca.issue(["fake.posture.test"]).write(tmp, "fake")
        cases = {"in clear": (None, ["--no-starttls"]),
                 "STARTTLS": (cert, ["--servername", "fake.posture.test",
                                     "--ca-file", str(ca_file)])}
        print("  injected delays: " + ", ".join(f"{p} {d * 1000:.0f} ms"
                                                for p, d in DELAYS.items())
              + f"; {runs} runs per case, medians (worst in brackets)")
        for case, (server_cert, extra) in cases.items():
            with DelayingSmtpServer(DELAYS, cert=server_cert) as server:
                argv = plugins.command("check_smtp_phases", "-H", server.address,
                                       "-p", server.port, "--from", "bench@posture.test",
                                       "--to", "probe@posture.test", *extra)
                done = [run(argv, plugins.env) for _ in range(runs)]
            good = [(r, perfdata(r.first_line), waits)
                    for r, waits in zip(done, server.waits) if r.status == 0]
            if len(good) < len(done):
                bad = next(r for r in done if r.status != 0)
                print(f"  {case}: {len(done) - len(good)} run(s) exited {bad.status}: "
                      f"{bad.first_line[:160]}")
                ok = False
            if not good:
                continue
            first = list(good[0][1])
            phases = [k[:-5] for k in first if k.endswith("_time")]
            print(f"  {case}, reported: " + ", ".join(
                f"{p} {median(g[f'{p}_time'] for _, g, _ in good) * 1000:.1f}" for p in phases)
                + f", time {median(g['time'] for _, g, _ in good) * 1000:.1f} ms")
            print(f"  {case}, the server's own clock: " + ", ".join(
                f"{p.lower()} {median(w[p] for _, _, w in good if p in w) * 1000:.1f}"
                for p in good[0][2]) + " ms")
            labels = [("banner", "banner"), ("ehlo", "EHLO"), ("rcpt", "RCPT")]
            if server_cert:
                labels.insert(2, ("ehlo_tls", "EHLO_TLS"))
            for label, key in labels:
                injected = DELAYS[key.split("_")[0].lower()]
                errors = [g[f"{label}_time"] - injected for _, g, _ in good]
                err, worst = median(errors), max(errors, key=abs)
                target(BENCH, f"{case}: {label} reported - injected",
                       f"{err * 1000:+.1f} ms ({worst * 1000:+.1f})",
                       f"|.| <= {PHASE_TOLERANCE * 1000:.0f} ms", abs(err) <= PHASE_TOLERANCE)
            gaps = [g["time"] - sum(v for k, v in g.items() if k.endswith("_time")
                                    and k != "dns_time") for _, g, _ in good]
            gap, worst = median(gaps), max(gaps, key=abs)
            target(BENCH, f"{case}: time - sum of phases",
                   f"{gap * 1000:+.2f} ms ({worst * 1000:+.2f})",
                   f"|.| <= {SUM_TOLERANCE * 1000:.0f} ms", abs(gap) <= SUM_TOLERANCE)
            walls = [r.wall - g["time"] for r, g, _ in good]
            print(f"  {case}: process wall - time (start-up, certificate analysis, output): "
                  f"{median(walls) * 1000:.0f} ms")
    return ok


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=11, help="runs per command (median)")
    parser.add_argument("--rss-runs", type=int, default=3,
                        help="runs per command under GNU time for the peak RSS")
    parser.add_argument("--python", help="interpreter to run the plugins with "
                                         "(default: BENCH_PYTHON, else the nagios virtualenv, "
                                         "else this one)")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args(argv)

    missing = lab_missing()
    if missing:
        print(f"  skipped: {missing}")
        return 0
    from tests.lab.nginx import LabNginx, ca_bundle
    from tests.lab.postfix import LabPostfix
    from tests.lab.sharedlock import SharedDns
    from tests.lab.unbound import SharedUnbound

    plugins = Plugins(args.python)
    print("CPU, wall time and peak memory of one run; timing accuracy of check_smtp_phases")
    print(f"  interpreter: {plugins.describe()}")
    status = 0
    try:
        with SharedDns(), LabPostfix() as lab, SharedUnbound(), LabNginx() as web:
            sts_ca = ca_bundle(Path(lab.workdir) / "bench-sts-ca.pem", lab.ca_file,
                               web.ca_file)
            sts_ca.chmod(0o644)  # the nagios venv's python reads it too
            rows = commands(plugins, lab.ca_file, sts_ca)
            figures = measure_costs(plugins, rows, max(1, args.runs), max(1, args.rss_runs))
        print()
        base, dns = print_costs(figures, max(1, args.runs))
        broken = [label for label, f in figures.items() if f["kind"] == "plugin"
                  and any(r.status not in (0, 1) for r in f["runs"])]
        for label in broken:  # a plugin that fails against the lab makes no figure
            print(f"  {label}: {figures[label]['runs'][0].first_line[:200]}")
        status |= 1 if broken else 0
        cost_targets(figures, base, dns)
        if not args.skip_accuracy:
            print()
            status |= 0 if measure_accuracy(plugins, max(3, args.runs // 2)) else 1
    finally:
        plugins.close()
    return status


if __name__ == "__main__":
    from tests.lab.bench_kit import TARGETS

    code = main()
    print()
    print_targets(TARGETS)
    sys.exit(code)
