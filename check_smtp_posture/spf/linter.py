"""Static review of a domain's SPF tree: counts, limits and policy findings.

Where check_host() stops at the first match, the linter walks every term a
non-matching sender would make the receiver evaluate -- the worst case the
§4.6.4 limits are about -- and keeps going past problems so it can report
all of them. Macros are expanded for a neutral client (192.0.2.1, the
documentation address) and the sender postmaster@<domain>.
"""

from __future__ import annotations

import ipaddress
from collections import namedtuple

from check_smtp_posture.spf.evaluate import (
    MAX_LOOKUPS,
    MAX_NAMES,
    MAX_VOID,
    truncate_name,
    valid_name,
)
from check_smtp_posture.spf.lookup import OK, SpfDns
from check_smtp_posture.spf.macro import MacroContext, MacroError, expand, has_macros
from check_smtp_posture.spf.record import SpfSyntaxError, parse_record, select

LONG_RECORD = 450     # bytes: beyond this the TXT answer risks the 512-byte UDP limit
LINT_IP = ipaddress.ip_address("192.0.2.1")
MAX_WALK = 40         # stop following a broken tree after this many DNS terms

# finding kinds
MISSING = "missing"            # the domain has no SPF record
MULTIPLE = "multiple"          # several v=spf1 records (permerror)
SYNTAX = "syntax"              # a record does not parse (permerror)
INCLUDE_NONE = "include_none"  # include/redirect target without SPF record (permerror)
LOOP = "loop"                  # include/redirect loop (permerror)
LOOKUP_LIMIT = "lookup_limit"  # more than 10 DNS-querying terms (permerror)
VOID_LIMIT = "void_limit"      # more than 2 void lookups (permerror)
MX_LIMIT = "mx_limit"          # an mx term with more than 10 MX names (permerror)
DNS_FAILURE = "dns_failure"    # a lookup failed (temperror)
PLUS_ALL = "plus_all"          # +all / ip4:0.0.0.0/0: everyone passes
NEUTRAL_ALL = "neutral_all"    # ?all as the policy
NO_ALL = "no_all"              # no all and no redirect: default neutral
PTR = "ptr"                    # ptr mechanism or %{p} macro (deprecated, §5.5)
LONG = "long_record"           # record longer than LONG_RECORD bytes
REDIRECT_IGNORED = "redirect_ignored"  # redirect next to all (§6.1): never used
MACRO_TARGET = "macro_target"  # a target depends on the sender, counted for one sample

PERMERROR_KINDS = frozenset({MULTIPLE, SYNTAX, INCLUDE_NONE, LOOP, LOOKUP_LIMIT, VOID_LIMIT,
                             MX_LIMIT})


class Finding(namedtuple("Finding", ("kind", "domain", "text"))):
    __slots__ = ()

    def __str__(self) -> str:
        return self.text


class LintReport:
    __slots__ = ("domain", "status", "record", "records", "policy", "policy_term",
                 "dns_lookups", "void_lookups", "include_depth", "policy_seen", "findings",
                 "trace")

    def __init__(self, domain: str):
        self.domain = domain
        self.status = "ok"  # ok, none, temperror (of the domain's own record)
        self.record = ""
        self.records: list = []  # (domain, record text) in walk order
        self.policy: str | None = None  # qualifier of the effective all, None if there is none
        self.policy_term: str | None = None
        self.dns_lookups = 0
        self.void_lookups = 0
        self.include_depth = 0
        self.policy_seen = False  # the walk reached the end of the effective policy
        self.findings: list = []
        self.trace: list = []

    @property
    def record_length(self) -> int:
        return len(self.record.encode("utf-8"))

    @property
    def permerror(self) -> bool:
        return any(f.kind in PERMERROR_KINDS for f in self.findings)


def lint(dns: SpfDns, domain: str, *, long_record: int = LONG_RECORD) -> LintReport:
    domain = domain[:-1] if domain.endswith(".") else domain
    walker = _Walker(dns, domain, long_record)
    walker.walk(domain, depth=0, stack=(), policy=True, via=None)
    report = walker.report
    if report.dns_lookups > MAX_LOOKUPS:
        walker.find(LOOKUP_LIMIT, domain,
                    f"{report.dns_lookups} DNS-querying terms, more than the "
                    f"{MAX_LOOKUPS} RFC 7208 allows (permerror)")
    if report.void_lookups > MAX_VOID:
        walker.find(VOID_LIMIT, domain,
                    f"{report.void_lookups} void lookups, more than the {MAX_VOID} "
                    f"RFC 7208 allows (permerror)")
    if report.policy_seen and report.policy is None:
        walker.find(NO_ALL, domain, f"{domain}: no 'all' and no redirect: mail from "
                                    "anywhere else is 'neutral'")
    elif report.policy_seen and report.policy == "?":
        walker.find(NEUTRAL_ALL, domain, f"{domain}: '{report.policy_term}' leaves "
                                         "unlisted senders 'neutral'")
    return report


class _Walker:
    def __init__(self, dns: SpfDns, domain: str, long_record: int):
        self.dns = dns
        self.report = LintReport(domain)
        self.long_record = long_record
        self.sender = f"postmaster@{domain}"

    def find(self, kind: str, domain: str, text: str) -> None:
        if not any(f.kind == kind and f.text == text for f in self.report.findings):
            self.report.findings.append(Finding(kind, domain, text))

    def note(self, depth: int, text: str) -> None:
        self.report.trace.append("  " * depth + text)

    def query(self, name: str, rdtype: str, depth: int, void_counts: bool = True):
        answer = self.dns.query(name, rdtype)
        if answer.error:
            self.find(DNS_FAILURE, name, f"DNS failure looking up {rdtype} {name}"
                      + (f": {answer.detail}" if answer.detail else ""))
            self.note(depth + 1, f"{rdtype} {name}: DNS failure")
        elif answer.void and void_counts:
            self.report.void_lookups += 1
            self.note(depth + 1, f"{rdtype} {name}: {answer.status} (void lookup "
                                 f"{self.report.void_lookups})")
        return answer

    def target(self, tokens, domain: str, term: str) -> str | None:
        if tokens is None:
            return domain
        ctx = MacroContext(LINT_IP, self.sender, domain, domain,
                           validated_name=lambda: "unknown")
        if has_macros(tokens):
            if any(getattr(t, "letter", "").lower() == "p" for t in tokens):
                self.find(PTR, domain, f"{domain}: {term} uses the %{{p}} macro "
                                       "(deprecated by RFC 7208)")
            self.find(MACRO_TARGET, domain, f"{domain}: {term} depends on the sender; "
                                            "evaluated for a sample client")
        try:
            return truncate_name(expand(tokens, ctx))
        except MacroError:
            return None

    def walk(self, domain: str, depth: int, stack: tuple, policy: bool, via: str | None):
        report = self.report
        top = via is None
        if not valid_name(domain, multi_label=True):
            if top:
                report.status = "none"
                self.find(MISSING, domain, f"{domain!r} is not a valid domain name")
            else:
                self.find(INCLUDE_NONE, domain, f"{via}: malformed domain {domain!r} "
                                                "(permerror)")
            return
        answer = self.dns.query(domain, "TXT")
        if answer.error:
            if top:
                report.status = "temperror"
            self.find(DNS_FAILURE, domain, f"DNS failure looking up TXT {domain}"
                      + (f": {answer.detail}" if answer.detail else ""))
            return
        kind, found = select(answer.records if answer.status == OK else ())
        if kind == "none":
            if top:
                report.status = "none"
                self.find(MISSING, domain, f"no SPF record at {domain}"
                          + (f" ({answer.status})" if answer.status != OK else ""))
            else:
                self.find(INCLUDE_NONE, domain, f"{via}: {domain} has no SPF record "
                                                "(permerror)")
            return
        if top:
            report.record = found[0] if kind == "one" else ""
        if kind == "many":
            self.find(MULTIPLE, domain, f"{domain} has {len(found)} SPF records (permerror)")
            return
        text = found[0]
        report.records.append((domain, text))
        self.note(depth, f"{domain}: {text}")
        if len(text.encode("utf-8")) > self.long_record:
            self.find(LONG, domain, f"{domain}: SPF record is {len(text.encode('utf-8'))} "
                                    f"bytes (over {self.long_record})")
        try:
            record = parse_record(text)
        except SpfSyntaxError as exc:
            self.find(SYNTAX, domain, f"{domain}: {exc} (permerror)")
            return
        stack = stack + (domain.lower(),)
        for mech in record.mechanisms:
            if report.dns_lookups > MAX_WALK:
                self.note(depth, "stopped: too many DNS terms")
                return
            name = mech.name
            if name == "all":
                if policy:
                    report.policy, report.policy_term = mech.qualifier, mech.text
                    report.policy_seen = True
                if mech.qualifier == "+":
                    self.find(PLUS_ALL, domain, f"{domain}: '{mech.text}' passes every "
                                                "address" + ("" if policy else
                                                             f" (reached via {via})"))
                break
            if name in ("ip4", "ip6"):
                if mech.qualifier == "+" and mech.network.prefixlen == 0:
                    self.find(PLUS_ALL, domain, f"{domain}: '{mech.text}' passes every "
                                                f"IPv{mech.network.version} address")
                continue
            report.dns_lookups += 1
            target = self.target(mech.domain, domain, mech.text)
            if target is None:
                continue
            if name == "include":
                if target.lower() in stack:
                    self.find(LOOP, domain, f"{domain}: {mech.text} loops back to "
                                            f"{target} (permerror)")
                    continue
                report.include_depth = max(report.include_depth, depth + 1)
                self.walk(target, depth + 1, stack, policy=False,
                          via=f"{domain}: {mech.text}")
            elif name == "ptr":
                self.find(PTR, domain, f"{domain}: '{mech.text}' is deprecated "
                                       "(RFC 7208 §5.5)")
            elif not valid_name(target):
                continue
            elif name in ("a", "exists"):
                self.query(target, "A", depth)
            elif name == "mx":
                answer = self.query(target, "MX", depth)
                hosts = sorted(answer.records) if answer.status == OK else []
                if len(hosts) > MAX_NAMES:
                    self.find(MX_LIMIT, domain, f"{domain}: {mech.text}: {target} has "
                                                f"{len(hosts)} MX names, more than "
                                                f"{MAX_NAMES} (permerror)")
                for _pref, host in hosts[:MAX_NAMES]:
                    if host not in (".", ""):
                        self.query(host, "A", depth)
        else:
            if record.redirect is None:
                if policy:
                    report.policy, report.policy_term = None, None
                    report.policy_seen = True
                return
        if record.redirect is not None:
            if record.has_all:
                self.find(REDIRECT_IGNORED, domain, f"{domain}: {record.redirect.text} is "
                                                    "ignored because the record has 'all'")
                return
            report.dns_lookups += 1
            target = self.target(record.redirect.domain, domain, record.redirect.text)
            if target is None:
                return
            if target.lower() in stack:
                self.find(LOOP, domain, f"{domain}: {record.redirect.text} loops back "
                                        f"to {target} (permerror)")
                return
            self.walk(target, depth, stack, policy=policy,
                      via=f"{domain}: {record.redirect.text}")
