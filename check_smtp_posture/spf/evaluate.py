"""check_host() (RFC 7208 §4-§6) over an injectable `SpfDns`.

Errors that end the evaluation (permerror, temperror) travel as `_Abort`
and come back as an `SpfResult`; nothing here raises for DNS or record
problems.
"""

from __future__ import annotations

import ipaddress

from check_smtp_posture import names
from check_smtp_posture.spf.lookup import OK, Answer, SpfDns, reverse_name
from check_smtp_posture.spf.macro import (
    EXP_LETTERS,
    MacroContext,
    MacroError,
    expand,
    tokenize,
)
from check_smtp_posture.spf.record import (
    Mechanism,
    Record,
    SpfSyntaxError,
    parse_record,
    select,
)

MAX_LOOKUPS = 10      # §4.6.4: DNS-querying terms per check_host()
MAX_VOID = 2          # §4.6.4: void lookups
MAX_NAMES = 10        # §4.6.4: MX / PTR names looked up per term
RESULTS = ("pass", "fail", "softfail", "neutral", "none", "permerror", "temperror")


class SpfResult:
    __slots__ = ("result", "domain", "ip", "mechanism", "matched_in", "explanation", "reason",
                 "dns_lookups", "void_lookups", "trace")

    def __init__(self, result: str, domain: str, ip: str, mechanism: str | None = None,
                 matched_in: str | None = None, explanation: str | None = None,
                 reason: str = "", dns_lookups: int = 0, void_lookups: int = 0,
                 trace: list | None = None):
        self.result = result
        self.domain = domain
        self.ip = ip
        self.mechanism = mechanism  # the term that matched, as written
        self.matched_in = matched_in  # the domain whose record held it
        self.explanation = explanation  # expanded exp= text, for fail only
        self.reason = reason  # why, for none/permerror/temperror
        self.dns_lookups = dns_lookups
        self.void_lookups = void_lookups
        self.trace: list = [] if trace is None else trace

    def describe(self) -> str:
        text = f"check_host({self.ip}) = {self.result}"
        if self.mechanism:
            where = f" in {self.matched_in}" if self.matched_in else ""
            text += f" (matched {self.mechanism}{where})"
        elif self.result == "neutral":
            text += " (no mechanism matched)"
        elif self.reason:
            text += f" ({self.reason})"
        return text


class _Abort(Exception):
    def __init__(self, result: str, reason: str):
        super().__init__(reason)
        self.result = result
        self.reason = reason


class _Outcome:
    __slots__ = ("result", "mechanism", "matched_in", "explanation", "reason")

    def __init__(self, result: str, mechanism: str | None = None,
                 matched_in: str | None = None, explanation: str | None = None,
                 reason: str = ""):
        self.result = result
        self.mechanism = mechanism
        self.matched_in = matched_in
        self.explanation = explanation
        self.reason = reason


def normalize_ip(ip) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address object; IPv4-mapped IPv6 (::ffff:a.b.c.d) becomes IPv4."""
    addr = ipaddress.ip_address(str(ip).strip())
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def normalize_sender(sender: str | None, fallback_domain: str) -> str:
    """<sender> as local-part@domain; 'postmaster' stands in for a missing local-part."""
    if not sender:
        return f"postmaster@{fallback_domain}"
    if "@" not in sender:
        return f"postmaster@{sender}"
    local, _, domain = sender.rpartition("@")
    return f"{local or 'postmaster'}@{domain}"


def truncate_name(name: str) -> str:
    """§7.3: drop leading labels until the name fits in 253 characters."""
    name = name[:-1] if name.endswith(".") else name
    while len(name) > 253 and "." in name:
        name = name.split(".", 1)[1]
    return name


def valid_name(name: str, *, multi_label: bool = False) -> bool:
    """Can this be looked up in DNS: non-empty labels of at most 63 octets, ≤ 253 in all."""
    name = name[:-1] if name.endswith(".") else name
    if not name or len(name.encode("utf-8", "replace")) > 253:
        return False
    labels = name.split(".")
    if multi_label and len(labels) < 2:
        return False
    return all(0 < len(label.encode("utf-8", "replace")) <= 63 for label in labels)


def check_host(dns: SpfDns, ip, domain: str, sender: str | None = None, *,
               helo: str | None = None, receiver: str = "unknown", now: float | None = None,
               max_lookups: int = MAX_LOOKUPS, max_void: int = MAX_VOID) -> SpfResult:
    """RFC 7208 check_host(<ip>, <domain>, <sender>), with `helo` for %{h}."""
    addr = normalize_ip(ip)
    domain = domain[:-1] if domain.endswith(".") else domain
    evaluator = Evaluator(dns, addr, normalize_sender(sender, domain), helo or "unknown",
                          receiver, now, max_lookups, max_void)
    try:
        outcome = evaluator.check_host(domain, top=True)
    except _Abort as abort:
        outcome = _Outcome(abort.result, reason=abort.reason)
    return SpfResult(outcome.result, domain, str(addr), outcome.mechanism, outcome.matched_in,
                     outcome.explanation, outcome.reason, evaluator.lookups, evaluator.voids,
                     evaluator.trace)


class Evaluator:
    def __init__(self, dns: SpfDns, ip, sender: str, helo: str, receiver: str = "unknown",
                 now: float | None = None, max_lookups: int = MAX_LOOKUPS,
                 max_void: int = MAX_VOID):
        self.dns = dns
        self.ip = ip
        self.sender = sender
        self.helo = helo
        self.receiver = receiver
        self.now = now
        self.max_lookups = max_lookups
        self.max_void = max_void
        self.lookups = 0
        self.voids = 0
        self.trace: list[str] = []
        self._depth = 0

    # -- helpers ---------------------------------------------------------
    def note(self, text: str) -> None:
        self.trace.append("  " * self._depth + text)

    def ctx(self, domain: str) -> MacroContext:
        return MacroContext(self.ip, self.sender, domain, self.helo, self.receiver,
                            lambda: self.validated_name(domain), self.now)

    def count_lookup(self, term: str) -> None:
        self.lookups += 1
        if self.lookups > self.max_lookups:
            raise _Abort("permerror", f"more than {self.max_lookups} DNS-querying terms "
                                      f"(limit reached at {term})")

    def query(self, name: str, rdtype: str, *, void_counts: bool = True,
              errors_fatal: bool = True) -> Answer:
        answer = self.dns.query(name, rdtype)
        if answer.error:
            self.note(f"{rdtype} {name}: DNS error {answer.detail}".rstrip())
            if errors_fatal:
                raise _Abort("temperror", f"DNS failure looking up {rdtype} {name}"
                             + (f": {answer.detail}" if answer.detail else ""))
            return answer
        if answer.void and void_counts:
            self.voids += 1
            self.note(f"{rdtype} {name}: {answer.status} (void lookup {self.voids})")
            if self.voids > self.max_void:
                raise _Abort("permerror", f"more than {self.max_void} void lookups "
                                          f"({rdtype} {name})")
        return answer

    def target(self, tokens, domain: str) -> str:
        if tokens is None:
            return domain
        return truncate_name(expand(tokens, self.ctx(domain)))

    def addresses(self, name: str) -> list:
        rdtype = "A" if self.ip.version == 4 else "AAAA"
        answer = self.query(name, rdtype)
        return _ips(answer)

    # -- check_host --------------------------------------------------------
    def check_host(self, domain: str, top: bool = False) -> _Outcome:
        if not valid_name(domain, multi_label=True):
            return _Outcome("none", reason=f"malformed domain {domain!r}")
        answer = self.dns.query(domain, "TXT")
        if answer.error:
            raise _Abort("temperror", f"DNS failure looking up TXT {domain}"
                         + (f": {answer.detail}" if answer.detail else ""))
        if answer.status != OK:
            return _Outcome("none", reason=f"no SPF record at {domain} ({answer.status})")
        kind, found = select(answer.records)
        if kind == "none":
            return _Outcome("none", reason=f"no SPF record at {domain}")
        if kind == "many":
            raise _Abort("permerror", f"{len(found)} SPF records at {domain}")
        self.note(f"{domain}: {found[0]}")
        try:
            record = parse_record(found[0])
        except SpfSyntaxError as exc:
            raise _Abort("permerror", f"{domain}: {exc}") from None
        return self.evaluate(record, domain)

    def evaluate(self, record: Record, domain: str) -> _Outcome:
        for mech in record.mechanisms:
            if self.matches(mech, domain):
                self.note(f"{mech.text}: match -> {mech.result}")
                outcome = _Outcome(mech.result, mech.text, domain)
                if outcome.result == "fail":
                    outcome.explanation = self.explanation(record, domain)
                return outcome
            self.note(f"{mech.text}: no match")
        if record.redirect is not None and not record.has_all:
            self.count_lookup(record.redirect.text)
            target = self.target(record.redirect.domain, domain)
            self.note(f"{record.redirect.text} -> {target}")
            if not valid_name(target, multi_label=True):
                raise _Abort("permerror", f"redirect to malformed domain {target!r}")
            outcome = self.check_host(target)
            if outcome.result == "none":
                raise _Abort("permerror", f"redirect target {target} has no SPF record")
            return outcome
        return _Outcome("neutral")

    def matches(self, mech: Mechanism, domain: str) -> bool:
        name = mech.name
        if name == "all":
            return True
        if name in ("ip4", "ip6"):
            return self.ip.version == mech.network.version and self.ip in mech.network
        self.count_lookup(mech.text)
        try:
            target = self.target(mech.domain, domain)
        except MacroError as exc:  # pragma: no cover - syntax was checked at parse time
            raise _Abort("permerror", str(exc)) from None
        if name == "include":
            return self.include(mech, target)
        if not valid_name(target):
            self.note(f"{mech.text}: malformed name {target!r}, treated as non-existent")
            return False
        if name == "a":
            return self.in_networks(self.addresses(target), mech)
        if name == "mx":
            return self.in_networks(self.mx_addresses(target), mech)
        if name == "exists":
            return bool(_ips(self.query(target, "A")))
        if name == "ptr":
            return any(_within(n, target) for n in self.validated_names(mech.text))
        raise _Abort("permerror", f"unknown mechanism {mech.text}")  # pragma: no cover

    def include(self, mech: Mechanism, target: str) -> bool:
        self.note(f"{mech.text} -> {target}")
        self._depth += 1
        try:
            outcome = self.check_host(target)
        finally:
            self._depth -= 1
        if outcome.result == "none":
            raise _Abort("permerror", f"{mech.text}: {outcome.reason or 'no SPF record'}")
        return outcome.result == "pass"

    def in_networks(self, ips: list, mech: Mechanism) -> bool:
        length = mech.cidr4 if self.ip.version == 4 else mech.cidr6
        for addr in ips:
            if addr.version == self.ip.version and self.ip in ipaddress.ip_network(
                    f"{addr}/{length}", strict=False):
                return True
        return False

    def mx_addresses(self, name: str) -> list:
        answer = self.query(name, "MX")
        hosts = sorted(answer.records) if answer.status == OK else []
        if len(hosts) > MAX_NAMES:
            raise _Abort("permerror", f"{name} has {len(hosts)} MX records "
                                      f"(more than {MAX_NAMES})")
        ips: list = []
        for _pref, host in hosts:
            if host in (".", ""):
                continue
            ips.extend(self.addresses(host))
        return ips

    def validated_names(self, term: str = "%{p}") -> list[str]:
        """§5.5: PTR names of <ip> whose own addresses include <ip>."""
        answer = self.query(reverse_name(self.ip), "PTR", void_counts=term != "%{p}",
                            errors_fatal=False)
        if answer.status != OK:
            return []
        rdtype = "A" if self.ip.version == 4 else "AAAA"
        names = []
        for name in list(answer.records)[:MAX_NAMES]:
            if not valid_name(name):
                continue
            forward = self.dns.query(name, rdtype)
            if forward.status == OK and self.ip in _ips(forward):
                names.append(name)
        return names

    def validated_name(self, domain: str) -> str:
        names = self.validated_names()
        for name in names:
            if name.lower() == domain.lower():
                return name
        for name in names:
            if _within(name, domain):
                return name
        return names[0] if names else "unknown"

    def explanation(self, record: Record, domain: str) -> str | None:
        """§6.2: the expanded exp= text, or None when anything about it fails."""
        if record.exp is None:
            return None
        try:
            target = self.target(record.exp.domain, domain)
            if not valid_name(target):
                return None
            answer = self.dns.query(target, "TXT")
            if answer.status != OK or len(answer.records) != 1:
                return None
            tokens = tokenize(answer.records[0], letters=EXP_LETTERS, allow_space=True)
            return expand(tokens, self.ctx(domain))
        except (MacroError, _Abort):
            return None


def _ips(answer: Answer) -> list:
    if answer.status != OK:
        return []
    ips = []
    for text in answer.records:
        try:
            ips.append(ipaddress.ip_address(text))
        except ValueError:
            continue
    return ips


def _within(name: str, domain: str) -> bool:
    """Is `name` `domain` or a subdomain of it (case-insensitive)?"""
    name, domain = names.normalize(name), names.normalize(domain)
    return name == domain or name.endswith("." + domain)
