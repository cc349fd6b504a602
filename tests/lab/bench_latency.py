"""Benchmark: every plugin that speaks SMTP, IMAP, POP3 or HTTPS over a path with latency.

    python3 -m tests.lab.bench_latency [--rtt 0.1] [--runs 3] [--python PATH]

The lab answers in microseconds, so the other benchmarks cannot see what a
monitoring host 50 ms from an MX sees. Here each plugin runs in a network
namespace of its own (tests/lab/pathdelay.py) where every lab server -- the
Postfix endpoints, Dovecot, nginx, the NSD and the validating resolver -- sits
behind a delaying proxy on its own address and port: each chunk takes half the
round trip (--rtt) each way, DNS queries a whole one, and the plugins run with
the same options as against the lab itself.

Every row runs --runs times through a path with the round trip and as often
through one without (the same proxy, no delay), interleaved. The difference of
the median wall times, divided by the round trip, is the number of round trips
the run waited for: the interpreter's start-up and the work on this machine
(Postfix's own delivery, Dovecot's IDLE batching) are in both and drop out. The
floor beside it is what the protocol cannot do without, step by step (connect,
banner, EHLO, STARTTLS, handshake, EHLO, the work, QUIT, and the DNS questions
that must come first); steps that can overlap count once. Targets (issue 26):
check_open_relay against a PIPELINING server at most 1.0 s per endpoint at
100 ms, with the first line lock step gives; every other SMTP plugin within 2
round trips of its floor.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.bench_kit import Plugins, median, run, target

BENCH = "latency"
HELO = "bench.posture.test"
NSD = "127.0.25.53"
RESOLVER = "127.0.25.54"
MX1 = "127.0.25.1"
#: the round trip's own target for check_open_relay (seconds of wall time per endpoint)
RELAY_LIMIT = 1.0
#: how far above its floor a plugin may stay (round trips)
FLOOR_MARGIN = 2

#: an SMTP session up to its work: connect and banner are a round trip each (the
#: banner comes once the server saw the handshake's last ACK), then EHLO, STARTTLS,
#: the TLS 1.3 handshake and the EHLO that TLS resets the session to
SESSION = (("connect", 1), ("banner", 1), ("EHLO", 1), ("STARTTLS", 1),
           ("TLS handshake", 1), ("EHLO", 1))
#: what a certificate check needs: no EHLO after TLS (nothing is asked of the session)
CERT_SESSION = SESSION[:-1]
QUIT = (("QUIT", 1),)
MX_DNS = (("DNS: MX", 1), ("DNS: A and AAAA of each MX, at once", 1))
#: check_mail_roundtrip's probe to one MX, in lock step (the per-MX transcript's span)
SENDING = SESSION + (("MAIL, RCPT, DATA", 3), ("message", 1)) + QUIT


@dataclass(frozen=True)
class Row:
    label: str
    plugin: str
    args: tuple
    floor: tuple  # (step, round trips)
    endpoints: int = 1
    # floor: within FLOOR_MARGIN of it; relay: that and RELAY_LIMIT; sending: the SMTP
    # sending within FLOOR_MARGIN of SENDING's floor (the rest waits on the mailbox); "": none
    check: str = "floor"
    env: dict = field(default_factory=dict)

    @property
    def floor_trips(self) -> int:
        return sum(n for _, n in self.floor)


def rows(ca_file: Path, sts_ca: Path) -> list[Row]:
    from tests.lab import roundtriplab as rt

    dns = ("--dns-server", NSD)
    helo = ("--helo-name", HELO)
    mx1_tls = ("--servername", "mx1.posture.test", "--ca-file", str(ca_file))
    relay = ("-D", "posture.test", *helo)
    probes = (("17 probes: MAIL, RCPT, RSET each, in one group", 1),)
    mailbox_user = rt.MONITOR_USER.replace("@", "%40")
    loop = ("-D", rt.LOOP_DOMAIN, "--to", f"{rt.PROBE_LOCAL}@{rt.LOOP_DOMAIN}", *dns, *helo,
            "--mailbox-ca-file", str(ca_file), "-t", "30")
    password = {"CHECK_MAILBOX_PASSWORD": rt.MONITOR_PASSWORD}
    # IMAP or POP3 over implicit TLS, as the plugin's mailbox layer asks
    imap = (("connect", 1), ("TLS handshake", 1), ("greeting", 1), ("LOGIN", 1),
            ("LIST", 1), ("SELECT, SEARCH", 2), ("IDLE until the probe is in", 1),
            ("FETCH", 1), ("STORE, EXPUNGE", 2), ("LOGOUT", 1))
    # POP3 shows new mail only to a new session: one before the sending (the login is
    # checked before anything is sent), one after it that finds the probe and deletes it
    pop3_login = (("connect", 1), ("TLS handshake", 1), ("greeting", 1), ("USER, PASS", 2))
    pop3 = pop3_login + (("QUIT", 1),) + pop3_login + (
        ("UIDL, TOP of each message", 2), ("DELE", 1), ("QUIT", 1))
    return [
        Row("check_smtp_phases -H (STARTTLS)", "check_smtp_phases",
            ("-H", MX1, *mx1_tls, *helo), SESSION + QUIT),
        Row("check_smtp_phases -H --from --to (each phase timed)", "check_smtp_phases",
            ("-H", MX1, *mx1_tls, *helo, "--from", "bench@posture.test", "--to",
             "probe@posture.test"), SESSION + (("MAIL", 1), ("RCPT", 1), ("RSET", 1)) + QUIT),
        Row("check_smtp_phases -D, 2 MX", "check_smtp_phases",
            ("-D", "posture.test", *dns, "--ca-file", str(ca_file), *helo),
            MX_DNS + SESSION + QUIT, endpoints=2),
        Row("check_open_relay -H (PIPELINING)", "check_open_relay", ("-H", MX1, *relay),
            SESSION + probes + QUIT, check="relay"),
        Row("check_open_relay -H --no-pipelining", "check_open_relay",
            ("-H", MX1, *relay, "--no-pipelining"),
            SESSION + (("17 probes: MAIL, RCPT, RSET each, in lock step", 51),) + QUIT,
            check=""),
        Row("check_open_relay -D, 2 MX (PIPELINING)", "check_open_relay",
            (*relay, *dns), MX_DNS + SESSION + probes + QUIT, endpoints=2),
        Row("check_dane -D, 1 MX (2 handshakes)", "check_dane",
            ("-D", "dualok.dane.test", "--dns-server", RESOLVER, "--secure-name", "dane.test",
             "--bogus-name", "badsig.dane.test", *helo),
            (("DNS: validator proof and MX, at once", 1), MX_DNS[1],
             ("DNS: TLSA and _mta-sts, at once", 1))
            + CERT_SESSION + QUIT
            + (("then the other key type's session in TLS 1.2, whose handshake takes 2", 7),)),
        Row("check_mta_sts -D, 2 MX", "check_mta_sts",
            ("-D", "good.sts.test", *dns, "--ca-file", str(sts_ca), *helo),
            (("DNS: the TXT records, MX and policy host, at once", 1), MX_DNS[1],
             ("each MX's certificate (connect .. handshake, QUIT); the policy "
              "fetch (3) and TLSA beside it", 6)), endpoints=2),
        Row("check_mail_roundtrip -D, 2 MX, IMAPS + IDLE", "check_mail_roundtrip",
            (*loop, "--mailbox", f"imaps://{mailbox_user}@{rt.MAILBOX_HOST}/INBOX"),
            MX_DNS + imap[:5] + SENDING + imap[5:], endpoints=2, check="sending", env=password),
        Row("check_mail_roundtrip -D, 2 MX, POP3S", "check_mail_roundtrip",
            (*loop, "--mailbox", f"pop3s://{mailbox_user}@{rt.MAILBOX_HOST}",
             "--poll-interval", "0.5"),  # POP3 sees new mail only in a new session
            MX_DNS + pop3[:5] + SENDING + pop3[5:], endpoints=2, check="sending", env=password),
    ]


def path_services() -> tuple[list, list]:
    """Every lab server a row may reach: (TCP upstreams, UDP upstreams)."""
    from tests.lab import roundtriplab as rt
    from tests.lab.mtastslab import NGINX_ADDRESS
    from tests.lab.postfix import ENDPOINTS

    tcp = {(e.address, e.port) for e in ENDPOINTS.values()}
    tcp |= {(rt.MAILBOX_ADDRESS, port) for port in (rt.IMAP_PORT, rt.IMAPS_PORT,
                                                   rt.POP3_PORT, rt.POP3S_PORT)}
    tcp |= {(NGINX_ADDRESS, 443), (NSD, 53), (RESOLVER, 53)}
    return sorted(tcp), [(NSD, 53), (RESOLVER, 53)]


def sending_time(output: str) -> float | None:
    """check_mail_roundtrip -vvv: the longest SMTP transcript, its first to its last line."""
    spans, block = [], []
    for line in output.splitlines() + [""]:
        found = re.match(r"\s*\[(\d+\.\d+)\]\s", line)
        if found:
            block.append(float(found.group(1)))
        elif block:
            spans.append(block[-1] - block[0])
            block = []
    return max(spans) if spans else None


def timeless(line: str) -> str:
    line = line.split(" | ")[0]
    return re.sub(r"\d+\.\d+s\b", "<t>s", line)


def measure(plugins: Plugins, table: list[Row], paths: dict, runs: int) -> dict:
    """label -> {path name: [Run]}; every row, every path, interleaved."""
    results = {row.label: {name: [] for name in paths} for row in table}
    for row in table:  # warm-up, not counted: page cache, bytecode
        argv = paths["zero"].command(plugins.command(row.plugin, *row.args))
        run(argv, {**plugins.env, **row.env}, timeout=90)
    for _ in range(runs):
        for row in table:
            for name, path in paths.items():
                argv = path.command(plugins.command(row.plugin, *row.args, "-vvv"))
                results[row.label][name].append(run(argv, {**plugins.env, **row.env},
                                                    timeout=90))
    return results


def report(table: list[Row], results: dict, rtt: float) -> int:
    width = max(len(r.label) for r in table)
    print(f"  {'plugin run':<{width}}  {'EPs':>3} {'wall 0':>7} {'wall RTT':>8} "
          f"{'RTs':>5} {'floor':>5} {'over':>5}  exit")
    status = 0
    measured = {}
    for row in table:
        zero, slow = results[row.label]["zero"], results[row.label]["slow"]
        w0, w1 = median(r.wall for r in zero), median(r.wall for r in slow)
        trips = (w1 - w0) / rtt
        measured[row.label] = (w0, w1, trips)
        codes = ",".join(sorted({str(r.status) for r in zero + slow}))
        print(f"  {row.label:<{width}}  {row.endpoints:>3} {w0:6.2f}s {w1:7.2f}s "
              f"{trips:5.1f} {row.floor_trips:>5} {trips - row.floor_trips:+5.1f}  {codes}")
        if any(r.status not in (0, 1) for r in zero + slow):
            status = 1
    print()
    print(f"  (medians of each row's runs; RTs: (wall RTT - wall 0) / {rtt * 1000:.0f} ms; "
          "EPs: SMTP endpoints probed at once)")
    for row in table:
        print(f"  {row.label}: floor {row.floor_trips} = "
              + " + ".join(f"{step}" + (f" ({n})" if n != 1 else "") for step, n in row.floor))
    print()
    for row in table:
        first = results[row.label]["slow"][0].first_line
        print(f"  {row.label}: {first.split(' | ')[0][:160]}")
        if row.check == "sending":
            spans = {name: [s for s in (sending_time(r.output) for r in runs)
                            if s is not None] for name, runs in results[row.label].items()}
            floor = sum(n for _, n in SENDING)
            if spans["slow"] and spans["zero"]:
                trips = (median(spans["slow"]) - median(spans["zero"])) / rtt
                print(f"    its SMTP sending, the slowest MX's transcript: "
                      f"{median(spans['slow']):.2f}s, {trips:.1f} round trips, floor {floor} "
                      "(MAIL, RCPT, DATA, message in lock step)")
                target(BENCH, f"{row.label}: SMTP sending, round trips over its floor "
                       f"({floor})", f"{trips - floor:+.1f}", f"<= {FLOOR_MARGIN}",
                       trips - floor <= FLOOR_MARGIN)
    print()
    pipelined = [results[r.label]["slow"] for r in table if r.label.endswith("(PIPELINING)")
                 and r.endpoints == 1]
    lockstep = [results[r.label]["slow"] for r in table if r.label.endswith("--no-pipelining")]
    if pipelined and lockstep:
        same = {timeless(r.first_line) for r in pipelined[0] + lockstep[0]}
        print(f"  check_open_relay first line, pipelined and in lock step: "
              f"{'the same' if len(same) == 1 else 'DIFFERENT: ' + ' / '.join(sorted(same))}")
        target(BENCH, "check_open_relay: pipelined first line = lock step's",
               "same" if len(same) == 1 else "differs", "same", len(same) == 1)
    for row in table:
        w0, w1, trips = measured[row.label]
        if row.check == "relay":
            target(BENCH, f"{row.label}: wall at {rtt * 1000:.0f} ms RTT", f"{w1:.2f}s",
                   f"<= {RELAY_LIMIT}s", w1 <= RELAY_LIMIT)
        if row.check in ("floor", "relay"):
            over = trips - row.floor_trips
            target(BENCH, f"{row.label}: round trips over its floor ({row.floor_trips})",
                   f"{over:+.1f}", f"<= {FLOOR_MARGIN}", over <= FLOOR_MARGIN)
    return status


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt", type=float, default=0.1,
                        help="round trip of the path, seconds (default: 0.1)")
    parser.add_argument("--runs", type=int, default=3, help="runs per row and path (median)")
    parser.add_argument("--only", help="run only the rows whose label contains this")
    parser.add_argument("--python", help="interpreter to run the plugins with (bench_kit.py)")
    args = parser.parse_args(argv)

    import shutil

    from tests.lab.bench_cpu import lab_missing

    missing = lab_missing() or (None if shutil.which("ip") else "ip (iproute2) is not installed")
    if missing:
        print(f"  skipped: {missing}")
        return 0
    from tests.lab.nginx import LabNginx, ca_bundle
    from tests.lab.pathdelay import DelayedPath
    from tests.lab.postfix import LabPostfix
    from tests.lab.sharedlock import SharedDns
    from tests.lab.unbound import SharedUnbound

    plugins = Plugins(args.python)
    print(f"Wall time and round trips over a path of {args.rtt * 1000:.0f} ms round trip "
          "(tests/lab/pathdelay.py, in a network namespace)")
    print(f"  interpreter: {plugins.describe()}")
    tcp, udp = path_services()
    paths: dict = {}
    try:
        with SharedDns(), LabPostfix() as lab, SharedUnbound(), LabNginx() as web, \
                tempfile.TemporaryDirectory(prefix="bench-latency-") as tmp:
            sts_ca = ca_bundle(Path(tmp) / "sts-ca.pem", lab.ca_file, web.ca_file)
            Path(tmp).chmod(0o755)
            sts_ca.chmod(0o644)
            table = [r for r in rows(lab.ca_file, sts_ca)
                     if not args.only or args.only in r.label]
            for name, delay in (("zero", 0.0), ("slow", args.rtt / 2)):
                paths[name] = DelayedPath(delay, tcp=[(None, u) for u in tcp],
                                          udp=[(None, u) for u in udp], netns=True).start()
            results = measure(plugins, table, paths, max(1, args.runs))
    finally:
        for path in paths.values():
            path.stop()
        plugins.close()
    print(f"  {max(1, args.runs)} run(s) per row through each path, interleaved")
    return report(table, results, args.rtt)


if __name__ == "__main__":
    from tests.lab.bench_kit import TARGETS, print_targets

    code = main()
    print()
    print_targets(TARGETS)
    sys.exit(code)
