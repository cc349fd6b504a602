"""A scripted hostile DNS server, for answers no real server gives on demand.

A `FakeDns` answers over UDP and TCP, on the same ephemeral port of 127.0.27.53
(the scripted fakes' range of tests/lab/world.py), from a `World`: zone data
(`records`, owner -> [(type, rdata)]) and per-name misbehaviour (`rules`).
Without a rule it answers like an authoritative server of every name it has:
the records, CNAME chains followed (a CNAME loop is answered as far as it goes,
both CNAMEs, as NSD and BIND do), NXDOMAIN for a name it does not have, an
empty answer (NODATA) for a type it does not have, both with a SOA. A UDP
answer longer than the query allows (512 bytes without EDNS) goes out empty
with the TC bit, so the client must ask again over TCP.

A rule is keyed by ``name``, ``name/TYPE``, ``*.suffix`` or ``*.suffix/TYPE``
(the most specific wins) and is one of

  NXDOMAIN, NODATA   that answer, whatever the data says
  SERVFAIL, REFUSED  that rcode
  SILENT             the query is read and never answered (UDP and TCP)
  TRUNCATE           over UDP an empty answer with TC set; over TCP the full answer
  WRONG_TYPE         records of another type than asked, owned by the name asked
                     (TXT for A/AAAA/PTR, A for MX and TXT)
  OTHER_NAME         records of the type asked, owned by another name (not-NAME)
  WRONG_ID           the right answer with another message ID
  GARBAGE            the query's ID, a reply header, then bytes that are no DNS

Every query is recorded in `queries` as (transport, name, type). `FAULT_WORLD`
is the world of the DNS fault matrix (tests/test_faults_dns.py); serve it by
hand to reproduce a row:

    python3 -m tests.lab.fakedns --listen 127.0.27.53:5300 &
    check_mx_sanity -D wrongtype.dnsfault.test --dns-server 127.0.27.53:5300
"""

from __future__ import annotations

import argparse
import signal
import socket
import struct
import threading
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from tests.lab.threadedserver import ThreadedServer

DEFAULT_ADDRESS = "127.0.27.53"

NXDOMAIN = "NXDOMAIN"
NODATA = "NODATA"
SERVFAIL = "SERVFAIL"
REFUSED = "REFUSED"
SILENT = "SILENT"
TRUNCATE = "TRUNCATE"
WRONG_TYPE = "WRONG_TYPE"
OTHER_NAME = "OTHER_NAME"
WRONG_ID = "WRONG_ID"
GARBAGE = "GARBAGE"
RULES = (NXDOMAIN, NODATA, SERVFAIL, REFUSED, SILENT, TRUNCATE, WRONG_TYPE, OTHER_NAME,
         WRONG_ID, GARBAGE)

#: what WRONG_TYPE answers instead of the type asked: (type, rdata)
WRONG_TYPE_ANSWER = {"MX": ("A", "192.0.2.66"), "TXT": ("A", "192.0.2.66")}
WRONG_TYPE_DEFAULT = ("TXT", '"an answer of the wrong type"')
#: what OTHER_NAME answers, by the type asked (owned by another name)
OTHER_NAME_ANSWER = {"A": "127.0.0.2", "AAAA": "2001:db8::66", "MX": "10 mx1.dnsfault.test.",
                     "TXT": '"v=spf1 +all"', "PTR": "mx1.dnsfault.test."}


def _name(text: str) -> str:
    return text.lower().rstrip(".")


@dataclass
class World:
    """Zone data and misbehaviour: what the fake server knows and how it lies."""

    records: dict = field(default_factory=dict)  # owner -> [(type, rdata text)]
    rules: dict = field(default_factory=dict)  # name[/TYPE] or *.suffix[/TYPE] -> rule

    def __post_init__(self):
        self.records = {_name(k): [(t.upper(), r) for t, r in v] for k, v in self.records.items()}
        rules = {}
        for key, rule in self.rules.items():
            if rule not in RULES:
                raise ValueError(f"unknown rule {rule!r} for {key}")
            name, _, rdtype = key.partition("/")
            rules[(_name(name), rdtype.upper())] = rule
        self.rules = rules

    def rule(self, qname: str, rdtype: str) -> str | None:
        name = _name(qname)
        for key in ((name, rdtype), (name, "")):
            if key in self.rules:
                return self.rules[key]
        labels = name.split(".")
        for i in range(1, len(labels)):  # the longest suffix first
            suffix = "*." + ".".join(labels[i:])
            for key in ((suffix, rdtype), (suffix, "")):
                if key in self.rules:
                    return self.rules[key]
        return None


class FakeDns(ThreadedServer):
    """`FakeDns(world).start()`; `server_arg` for --dns-server; `stop()`."""

    thread_name = "fakedns"

    def __init__(self, world: World, address: str = DEFAULT_ADDRESS, port: int = 0):
        self.world = world
        self.address = address
        self.port = port
        self.queries: list[tuple[str, str, str]] = []
        super().__init__()
        self._udp: socket.socket | None = None

    @property
    def server_arg(self) -> str:
        return f"{self.address}:{self.port}"

    def asked(self, name: str, rdtype: str | None = None, transport: str | None = None,
              since: int = 0) -> bool:
        """Whether a query for `name` (of `rdtype`, over `transport`) arrived, after the
        first `since` queries."""
        with self._lock:
            return any(n == _name(name) and rdtype in (None, t) and transport in (None, tr)
                       for tr, n, t in self.queries[since:])

    # -- life --------------------------------------------------------------
    def start(self) -> FakeDns:
        for _ in range(20):  # UDP and TCP on one port: retry when the TCP one is taken
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            udp.bind((self.address, self.port))
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                tcp.bind((self.address, udp.getsockname()[1]))
            except OSError:
                udp.close()
                tcp.close()
                if self.port:
                    raise
                continue
            break
        else:
            raise RuntimeError("no free port for UDP and TCP")
        tcp.listen(16)
        udp.settimeout(0.1)
        tcp.settimeout(0.1)
        self._udp = udp
        self.port = udp.getsockname()[1]
        self._spawn(self._udp_loop)
        self._listen(tcp)
        return self

    def stop(self) -> None:
        self._stop_threads(self._udp)
        self._udp = None

    # -- transports --------------------------------------------------------
    def _udp_loop(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._udp.recvfrom(65535)
            except (socket.timeout, OSError):
                continue
            reply = self.answer(data, "udp")
            if reply is not None:
                try:
                    self._udp.sendto(reply, peer)
                except OSError:
                    pass

    def _serve(self, conn: socket.socket, peer) -> None:  # DNS over TCP
        conn.settimeout(0.1)
        buffer = b""
        try:
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65535)
                except socket.timeout:
                    continue
                if not chunk:
                    return
                buffer += chunk
                while len(buffer) >= 2:
                    (length,) = struct.unpack("!H", buffer[:2])
                    if len(buffer) < 2 + length:
                        break
                    data, buffer = buffer[2:2 + length], buffer[2 + length:]
                    reply = self.answer(data, "tcp")
                    if reply is not None:  # SILENT: read on, say nothing
                        conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            pass

    # -- answers -----------------------------------------------------------
    def answer(self, data: bytes, transport: str) -> bytes | None:
        """The wire reply to one query (None: no reply at all)."""
        try:
            query = dns.message.from_wire(data)
            question = query.question[0]
        except (dns.exception.DNSException, IndexError, ValueError):
            return None  # not a query: a real server drops it too
        qname = _name(question.name.to_text())
        rdtype = dns.rdatatype.to_text(question.rdtype)
        with self._lock:
            self.queries.append((transport, qname, rdtype))
        rule = self.world.rule(qname, rdtype)
        if rule == SILENT:
            return None
        if rule == GARBAGE:
            # looks like the reply to this query (its ID, QR, one question, one
            # answer) until the first label, which is of a type that does not exist
            return data[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + b"\xff" * 24
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if rule in (SERVFAIL, REFUSED):
            response.set_rcode(dns.rcode.from_text(rule))
        elif rule == NXDOMAIN:
            response.set_rcode(dns.rcode.NXDOMAIN)
            response.authority.append(_soa(qname))
        elif rule == NODATA:
            response.authority.append(_soa(qname))
        elif rule == WRONG_TYPE:
            wrong, rdata = WRONG_TYPE_ANSWER.get(rdtype, WRONG_TYPE_DEFAULT)
            response.answer.append(dns.rrset.from_text(qname + ".", 300, "IN", wrong, rdata))
        elif rule == OTHER_NAME:
            owner = "not-" + qname + "."
            response.answer.append(dns.rrset.from_text(
                owner, 300, "IN", rdtype, OTHER_NAME_ANSWER.get(rdtype, "127.0.0.2")))
        else:
            self._lookup(response, qname, rdtype)
        if rule == WRONG_ID:
            response.id = (query.id + 1) & 0xFFFF
        if transport == "udp":
            limit = max(512, query.payload) if query.edns >= 0 else 512
            if rule == TRUNCATE:
                return _truncated(query)
            try:
                return response.to_wire(max_size=limit)
            except dns.exception.TooBig:
                return _truncated(query)
        return response.to_wire(max_size=65535)

    def _lookup(self, response: dns.message.Message, qname: str, rdtype: str) -> None:
        """What an authoritative server of every name in `records` answers."""
        records = self.world.records
        name, seen = qname, set()
        while True:
            rrs = records.get(name)
            if rrs is None:
                if name == qname:
                    response.set_rcode(dns.rcode.NXDOMAIN)
                response.authority.append(_soa(name))
                return
            seen.add(name)
            matches = [r for t, r in rrs if t == rdtype]
            if matches:
                response.answer.append(dns.rrset.from_text_list(
                    name + ".", 300, "IN", rdtype, matches))
                return
            cname = [r for t, r in rrs if t == "CNAME"]
            if not cname or rdtype == "CNAME":
                response.authority.append(_soa(name))
                return
            response.answer.append(dns.rrset.from_text(name + ".", 300, "IN", "CNAME",
                                                       cname[0]))
            name = _name(cname[0])
            if name in seen:  # a loop: the chain as far as it goes
                return


def _soa(name: str) -> dns.rrset.RRset:
    apex = ".".join(name.split(".")[-2:]) + "."
    return dns.rrset.from_text(apex, 300, "IN", "SOA",
                               f"ns.{apex} hostmaster.{apex} 1 3600 600 86400 300")


def _truncated(query: dns.message.Message) -> bytes:
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA | dns.flags.TC
    return response.to_wire()


# --------------------------------------------------------------------------- the matrix's world

FAULT_DOMAIN = "dnsfault.test"
SMTP_ADDRESS = "127.0.27.1"  # where tests/lab/fakesmtp.py listens
LISTED = "192.0.2.99"  # the address the fake blocklists list

#: forty domain-verification tokens: about 4 KB of TXT beside the SPF record
_TOKENS = [f"verification-token-{i:02d}={'%064x' % (0x5eed * (i + 1) ** 7)}" for i in range(40)]
_SPF = "v=spf1 ip4:192.0.2.0/24 ip4:127.0.27.0/24 -all"


def _blocklist(zone: str) -> dict:
    return {f"99.2.0.192.{zone}": [("A", "127.0.0.2"), ("TXT", '"listed by the fake"')]}


FAULT_WORLD_RECORDS: dict = {
    # hosts
    "mx1.dnsfault.test": [("A", "192.0.2.10")],
    "mx2.dnsfault.test": [("A", "192.0.2.11")],
    "smtp.dnsfault.test": [("A", SMTP_ADDRESS)],
    "a-servfail.dnsfault.test": [("AAAA", "2001:db8::25")],
    "loop1.dnsfault.test": [("CNAME", "loop2.dnsfault.test.")],
    "loop2.dnsfault.test": [("CNAME", "loop1.dnsfault.test.")],
    "10.2.0.192.in-addr.arpa": [("PTR", "mx1.dnsfault.test.")],
    "11.2.0.192.in-addr.arpa": [("PTR", "mx2.dnsfault.test.")],
    "1.27.0.127.in-addr.arpa": [("PTR", "smtp.dnsfault.test.")],
    # domains: MX and SPF, each faulted by the rule of the same name below
    **{f"{fault}.dnsfault.test": [("MX", "10 smtp.dnsfault.test."), ("TXT", f'"{_SPF}"')]
       for fault in ("servfail", "refused", "silent", "truncated", "wrongtype", "othername",
                     "wrongid", "garbage")},
    "nodata.dnsfault.test": [("AAAA", "2001:db8::25")],
    "huge.dnsfault.test": [("MX", "10 smtp.dnsfault.test."), ("TXT", f'"{_SPF}"')]
    + [("TXT", f'"{token}"') for token in _TOKENS],
    # MX sets with one bad target
    "mixed.dnsfault.test": [("MX", "10 smtp.dnsfault.test."),
                            ("MX", "20 servfail-host.dnsfault.test."), ("TXT", f'"{_SPF}"')],
    "servfail-host.dnsfault.test": [("A", "192.0.2.12")],
    "target-servfail.dnsfault.test": [("MX", "10 a-servfail.dnsfault.test.")],
    "target-silent.dnsfault.test": [("MX", "10 silent-host.dnsfault.test.")],
    "silent-host.dnsfault.test": [("A", "192.0.2.13")],
    "target-loop.dnsfault.test": [("MX", "10 loop1.dnsfault.test.")],
    "ptr-servfail.dnsfault.test": [("MX", "10 mx2.dnsfault.test.")],
    "ptr-nxdomain.dnsfault.test": [("MX", "10 noptr-host.dnsfault.test.")],
    "noptr-host.dnsfault.test": [("A", "192.0.2.14")],  # no PTR: NXDOMAIN
    # SPF includes of faulty targets
    **{f"include-{fault}.dnsfault.test": [("TXT", f'"v=spf1 include:{target} -all"')]
       for fault, target in (("servfail", "servfail.dnsfault.test"),
                             ("silent", "silent.dnsfault.test"),
                             ("loop", "loop1.dnsfault.test"),
                             ("nxdomain", "nowhere.dnsfault.test"))},
    # blocklists: each lists 192.0.2.99, and misbehaves as its name says
    **{k: v for fault in ("ok", "truncated", "servfail", "silent", "wrongtype", "othername",
                          "garbage")
       for k, v in _blocklist(f"bl-{fault}.dnsfault.test").items()},
}

FAULT_WORLD_RULES: dict = {
    "servfail.dnsfault.test": SERVFAIL,
    "refused.dnsfault.test": REFUSED,
    "silent.dnsfault.test": SILENT,
    "truncated.dnsfault.test": TRUNCATE,
    "wrongtype.dnsfault.test": WRONG_TYPE,
    "othername.dnsfault.test": OTHER_NAME,
    "wrongid.dnsfault.test": WRONG_ID,
    "garbage.dnsfault.test": GARBAGE,
    "servfail-host.dnsfault.test": SERVFAIL,
    "a-servfail.dnsfault.test/A": SERVFAIL,
    "silent-host.dnsfault.test": SILENT,
    "11.2.0.192.in-addr.arpa": SERVFAIL,
    "*.bl-truncated.dnsfault.test": TRUNCATE,
    "*.bl-servfail.dnsfault.test": SERVFAIL,
    "*.bl-silent.dnsfault.test": SILENT,
    "*.bl-wrongtype.dnsfault.test": WRONG_TYPE,
    "*.bl-othername.dnsfault.test": OTHER_NAME,
    "*.bl-garbage.dnsfault.test": GARBAGE,
}


def fault_world() -> World:
    return World(FAULT_WORLD_RECORDS, FAULT_WORLD_RULES)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default=f"{DEFAULT_ADDRESS}:5300",
                        help="ADDR:PORT for UDP and TCP (default: %(default)s)")
    args = parser.parse_args(argv)
    address, _, port = args.listen.rpartition(":")
    server = FakeDns(fault_world(), address, int(port)).start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"ready {server.server_arg}", flush=True)
    done.wait()
    server.stop()


if __name__ == "__main__":
    main()
