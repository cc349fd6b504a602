"""The DNS layer: dnspython behind typed results and the run's deadline.

A negative answer (NXDOMAIN, no data) is a fact about the monitored domain and
comes back as a `DnsAnswer`; so does a failure to get any answer (timeout,
SERVFAIL, refused), with `status` saying which. Callers decide what a status
means for the check; nothing here raises for DNS outcomes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.reversename

from check_smtp_posture import names
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.fanout import all_at_once
from check_smtp_posture.sanitize import one_line

NOERROR = "NOERROR"
NXDOMAIN = "NXDOMAIN"
NODATA = "NODATA"
TIMEOUT = "TIMEOUT"
SERVFAIL = "SERVFAIL"
ERROR = "ERROR"

#: seconds of the remaining budget a query leaves for the run to finish after it
LIFETIME_MARGIN = 0.2

#: RFC 8914 codes of a validation failure: DNSSEC Bogus, signature expired or not yet
#: valid, DNSKEY, RRSIGs or NSEC missing, no zone key bit
DNSSEC_FAILURE_CODES = frozenset(range(6, 13))

#: statuses that say nothing about the domain, only that no answer was had
FAILURES = frozenset({TIMEOUT, SERVFAIL, ERROR})

#: types whose records a caller judges one by one: a record of them that dnspython cannot
#: parse (a TLSA digest of the wrong length) comes back as generic data, RFC 3597
#: "\# length hex", instead of costing the whole answer
LENIENT_TYPES = frozenset({"TLSA"})


@dataclass(frozen=True)
class DnsAnswer:
    """The outcome of one query.

    `records` are the answer's rdata as text in presentation format (for TXT:
    the character-strings joined without separator, as RFC 7208 §3.3 wants;
    `strings` keeps them apart; a record of LENIENT_TYPES that its type's parser
    refuses: RFC 3597 generic text, "\\# length hex"). `canonical_name` differs
    from `qname` when the name is an alias (CNAME).
    """

    qname: str
    rdtype: str
    status: str
    records: tuple = ()
    strings: tuple = ()  # TXT only: tuple of tuples of str
    canonical_name: str = ""
    authenticated: bool = False
    elapsed: float = 0.0
    detail: str = ""
    ttl: int | None = None
    out_of_time: bool = False  # a timeout because the run's -t ran out, not the server
    # DNSSEC (DnsClient(dnssec=True)): the resolver's RFC 8914 extended error of a failed
    # answer ("DNSSEC Bogus (6): ..."), and when the earliest signature over the
    # answer's records expires (seconds since the epoch)
    extended_error: str = ""
    extended_code: int | None = None
    rrsig_expiration: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == NOERROR

    @property
    def bogus(self) -> bool:
        """The resolver failed the answer on DNSSEC grounds (RFC 8914 codes 6 to 12)."""
        return self.extended_code in DNSSEC_FAILURE_CODES

    @property
    def failed(self) -> bool:
        """No usable answer: the lookup itself failed."""
        return self.status in FAILURES

    @property
    def is_alias(self) -> bool:
        return (bool(self.canonical_name)
                and names.normalize(self.canonical_name) != names.normalize(self.qname))

    def failure(self) -> str:
        """The family's one wording of an answer that is not one: the status, then what
        went wrong and the resolver's extended error, "SERVFAIL (DNSSEC Bogus (6): ...)"."""
        extra = "; ".join(x for x in (self.detail, self.extended_error) if x)
        return self.status + (f" ({one_line(extra, 120)})" if extra else "")


@dataclass
class DnsClient:
    """Resolver bound to the run's deadline and the `--dns-server` choice.

    `servers` is a list of (address, port); None means the system resolver.
    `query_cap` bounds a single query below the remaining budget, so one dead
    server cannot eat the whole run. Thread-safe: plugins query concurrently.
    """

    deadline: Deadline
    servers: Sequence[tuple[str, int]] | None = None
    query_cap: float | None = None
    dnssec: bool = False
    queries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        if self.servers:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [addr for addr, _ in self.servers]
            ports = {port for _, port in self.servers}
            if len(ports) == 1:
                resolver.port = ports.pop()
            else:
                resolver.nameserver_ports = {addr: port for addr, port in self.servers}
        else:
            resolver = dns.resolver.Resolver(configure=True)
        resolver.cache = dns.resolver.Cache()
        # One try per server per round; the lifetime set per query is what bounds it.
        resolver.timeout = 2.0
        if self.dnssec:
            resolver.use_edns(0, dns.flags.DO, 1232)
            resolver.flags = dns.flags.RD | dns.flags.AD
        self._resolver = resolver
        self._runners = _Runners()

    def query(self, name: str, rdtype: str) -> DnsAnswer:
        """Ask for `rdtype` records of `name`; never raises for DNS outcomes."""
        with self._lock:
            self.queries += 1
        lifetime = self.deadline.remaining() - LIFETIME_MARGIN
        # Cut short by the run's deadline, a timeout says nothing about the server.
        cut_short = self.query_cap is None or lifetime < self.query_cap
        if self.query_cap is not None:
            lifetime = min(lifetime, self.query_cap)
        if lifetime <= 0:
            return DnsAnswer(name, rdtype, TIMEOUT, detail="no time left", out_of_time=True)
        if rdtype in LENIENT_TYPES:
            _parse_leniently(rdtype)
        # dnspython sleeps its retry back-off (up to 2 s) without looking at
        # the lifetime, so against a refusing server resolve() overruns it. The
        # query runs in a daemon thread that the run stops waiting for.
        started = time.monotonic()
        answer = self._runners.run(lambda: self._resolve(name, rdtype, lifetime),
                                   lifetime + LIFETIME_MARGIN / 2)
        if answer is None:
            answer = DnsAnswer(name, rdtype, TIMEOUT, elapsed=time.monotonic() - started,
                               detail=f"no answer within {lifetime:.1f}s")
        if answer.status == TIMEOUT and cut_short:
            answer = replace(answer, out_of_time=True)
        return answer

    def _resolve(self, name: str, rdtype: str, lifetime: float) -> DnsAnswer:
        started = time.monotonic()
        try:
            answer = self._resolver.resolve(name, rdtype, lifetime=lifetime,
                                            raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN as exc:
            canonical = ""
            try:
                canonical = str(exc.canonical_name)
            except Exception:
                pass
            # a denial is authenticated (DNSSEC) only if every response behind it was
            responses = list(exc.responses().values())
            authenticated = bool(responses) and all(r.flags & dns.flags.AD for r in responses)
            return DnsAnswer(name, rdtype, NXDOMAIN, canonical_name=canonical,
                             authenticated=authenticated, elapsed=time.monotonic() - started)
        except dns.resolver.LifetimeTimeout:
            return DnsAnswer(name, rdtype, TIMEOUT, elapsed=time.monotonic() - started,
                             detail=f"no answer within {lifetime:.1f}s")
        except dns.exception.Timeout:
            return DnsAnswer(name, rdtype, TIMEOUT, elapsed=time.monotonic() - started)
        except dns.resolver.NoNameservers as exc:
            detail = _no_nameservers_detail(exc)  # the rcode; said once, not "SERVFAIL (SERVFAIL)"
            code, text = _extended_error(exc)
            return DnsAnswer(name, rdtype, SERVFAIL, elapsed=time.monotonic() - started,
                             detail="" if detail == SERVFAIL else detail,
                             extended_error=text, extended_code=code)
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            return DnsAnswer(name, rdtype, ERROR, elapsed=time.monotonic() - started,
                             detail=f"{type(exc).__name__}: {exc}")
        elapsed = time.monotonic() - started
        response = answer.response
        authenticated = bool(response.flags & dns.flags.AD)
        canonical = str(answer.canonical_name)
        if answer.rrset is None:
            if _stray_records(response):
                # dnspython reads "nothing that answers the question" as NODATA; a
                # server answering another type or name is broken, not a fact.
                return DnsAnswer(name, rdtype, ERROR, elapsed=elapsed,
                                 detail="the answer does not match the question")
            return DnsAnswer(name, rdtype, NODATA, canonical_name=canonical,
                             authenticated=authenticated, elapsed=elapsed)
        records, strings = [], []
        for rdata in answer.rrset:
            if rdata.rdtype == dns.rdatatype.TXT:
                parts = tuple(s.decode("utf-8", "replace") for s in rdata.strings)
                strings.append(parts)
                records.append("".join(parts))
            else:
                records.append(rdata.to_text())
        return DnsAnswer(name, rdtype, NOERROR, tuple(records), tuple(strings),
                         canonical_name=canonical, authenticated=authenticated,
                         elapsed=elapsed, ttl=answer.rrset.ttl,
                         rrsig_expiration=_rrsig_expiration(response, answer.rrset)
                         if self.dnssec else None)

    def reverse(self, address: str) -> DnsAnswer:
        """PTR answer for an IPv4 or IPv6 address."""
        return self.query(dns.reversename.from_address(address).to_text(), "PTR")

    def prove_validation(self, secure_name: str, bogus_name: str) -> ValidatorProof:
        """Ask, at once, for a signed name and for one whose signatures are broken."""
        answers = all_at_once({"secure": lambda: self.query(secure_name, "SOA"),
                               "bogus": lambda: self.query(bogus_name, "A")})
        return ValidatorProof(answers["secure"], answers["bogus"])


class ValidatorProof:
    """Has the resolver just shown that it validates DNSSEC? Only then does its AD flag
    mean anything: a signed name must come back with the flag, and a name whose
    signatures are broken must not be answered at all."""

    __slots__ = ("secure", "bogus")

    def __init__(self, secure: DnsAnswer, bogus: DnsAnswer):
        self.secure = secure
        self.bogus = bogus

    @property
    def holds(self) -> bool:
        return not self.problem

    @property
    def problem(self) -> str:
        """Why the proof fails, or ""."""
        if self.secure.failed:
            return f"lookup of {self.secure.qname} failed: " + self.secure.failure()
        if not self.secure.authenticated:
            return f"{self.secure.qname} came back without the AD flag"
        if not self.bogus.failed:
            return f"{self.bogus.qname}, whose signatures are broken, was answered " \
                   f"({self.bogus.status})"
        return ""


class _Runners:
    """Daemon threads that run one query at a time and are kept for the next.

    Starting a thread per query cost more CPU than the query itself; a runner
    that has answered waits for the next query instead of ending, and ends
    once no query came for IDLE_SECONDS (so runs in one process, the tests',
    leave no threads behind). A runner stuck in a query is simply not reused.
    """

    IDLE_SECONDS = 1.0

    def __init__(self):
        self._lock = threading.Lock()
        self._idle: list[_Runner] = []

    def run(self, work, wait: float):
        """work() in a runner: its result, or None when it did not return within `wait`."""
        done = threading.Event()
        outcome: list = []

        def job():
            try:
                outcome.append(work())
            finally:  # an unexpected exception ends the runner; the caller wakes anyway
                done.set()

        with self._lock:
            runner = self._idle.pop() if self._idle else None
        if runner is None:
            runner = _Runner(self)
        runner.give(job)
        done.wait(wait)
        return outcome[0] if outcome else None

    def _finished(self, runner: _Runner) -> None:
        with self._lock:
            self._idle.append(runner)

    def _retire(self, runner: _Runner) -> bool:
        """True if `runner`, idle too long, may end; False if a job was handed to it meanwhile."""
        with self._lock:
            if runner in self._idle:
                self._idle.remove(runner)
                return True
            return False


class _Runner:
    def __init__(self, runners: _Runners):
        self._runners = runners
        self._job = None
        self._wake = threading.Lock()
        self._wake.acquire()  # released by give(): a lock any thread may release
        threading.Thread(target=self._loop, daemon=True).start()

    def give(self, job) -> None:
        self._job = job
        self._wake.release()

    def _loop(self) -> None:
        while True:
            if not self._wake.acquire(timeout=_Runners.IDLE_SECONDS):
                if self._runners._retire(self):
                    return
                self._wake.acquire()  # popped from the idle list just now: its job comes
            job, self._job = self._job, None
            job()
            self._runners._finished(self)


def _parse_leniently(rdtype: str) -> None:
    """Make dnspython keep a record of `rdtype` that its parser refuses as generic data.

    dnspython refuses a whole response for one record it cannot parse; over UDP it
    then waits for another reply until the lifetime ends, so one bad record among
    good ones read as a TIMEOUT that never happened. The class it parses `rdtype`
    with is replaced (once) by a subclass that falls back to GenericRdata; dnspython
    has no public way to replace the class of a type it knows.
    """
    import dns.rdata
    import dns.rdataclass

    key = (dns.rdataclass.IN, dns.rdatatype.RdataType.make(rdtype))
    strict = dns.rdata.get_rdata_class(*key)
    if getattr(strict, "lenient", False):
        return

    class Lenient(strict):
        __slots__ = ()
        lenient = True

        @classmethod
        def from_wire_parser(cls, rdclass, rdtype, parser, origin=None):
            start = parser.current
            try:
                return strict.from_wire_parser(rdclass, rdtype, parser, origin)
            except Exception:  # what dnspython would have raised as a FormError
                parser.seek(start)
                return dns.rdata.GenericRdata.from_wire_parser(rdclass, rdtype, parser)

    dns.rdata._rdata_classes[key] = Lenient


def _stray_records(response) -> bool:
    """Records in the answer section beside the alias chain of a reply without the answer."""
    aliases = (dns.rdatatype.CNAME, dns.rdatatype.DNAME, dns.rdatatype.RRSIG)
    return any(rrset.rdtype not in aliases for rrset in response.answer)


def _rrsig_expiration(response, rrset) -> int | None:
    """The earliest expiration of the signatures over `rrset` in `response`, or None."""
    expirations = [sig.expiration for sigs in response.answer
                   if sigs.rdtype == dns.rdatatype.RRSIG and sigs.name == rrset.name
                   for sig in sigs if sig.type_covered == rrset.rdtype]
    return min(expirations) if expirations else None


def _extended_error(exc: dns.resolver.NoNameservers) -> tuple[int | None, str]:
    """The first RFC 8914 extended DNS error a failing server gave: its code, and
    "Name (code): text"."""
    try:
        for *_, response in exc.kwargs.get("errors") or []:
            if isinstance(response, dns.message.Message):
                for ede in response.extended_errors():
                    label = _EDE_NAMES.get(ede.code, "extended error")
                    return int(ede.code), f"{label} ({ede.code})" + (
                        f": {ede.text}" if ede.text else "")
    except Exception:
        pass
    return None, ""


#: RFC 8914 §4 names of the extended DNS errors a validating resolver gives
_EDE_NAMES = {0: "Other", 1: "Unsupported DNSKEY Algorithm", 2: "Unsupported DS Digest Type",
              3: "Stale Answer", 5: "DNSSEC Indeterminate", 6: "DNSSEC Bogus",
              7: "Signature Expired", 8: "Signature Not Yet Valid", 9: "DNSKEY Missing",
              10: "RRSIGs Missing", 11: "No Zone Key Bit Set", 12: "NSEC Missing",
              18: "Prohibited", 20: "Not Authoritative", 22: "No Reachable Authority",
              23: "Network Error", 24: "Invalid Data"}


def _no_nameservers_detail(exc: dns.resolver.NoNameservers) -> str:
    try:
        errors = exc.kwargs.get("errors") or []
        for _server, _tcp, _port, err, *_ in errors:
            if isinstance(err, dns.message.Message):
                return dns.rcode.to_text(err.rcode())
            return str(err)
    except Exception:
        pass
    return "all servers failed"
