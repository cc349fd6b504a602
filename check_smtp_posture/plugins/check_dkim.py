"""check_dkim: are the DKIM keys of the selectors a domain signs with published, strong and
usable? (RFC 6376 key records, RFC 8301 key sizes, RFC 8463 Ed25519)

Probe, decide, phrase: `DkimResource.probe()` asks for every named selector's key
record at once (check_smtp_posture.dkim; a CNAME is followed as providers
publish them) and, with --state-file, compares each key's fingerprint with the
one seen before; it yields facts. The Contexts judge them (key sizes, revoked
and test keys, a rotation, a key too old, a selector gone); `DkimSummary`
phrases. It never guesses selectors: without --selector it cannot judge DKIM
and says so.
"""

from __future__ import annotations

import argparse
import time
from collections import namedtuple

import nagiosplugin
from nagiosplugin.state import Critical, Ok, Unknown, Warn

from check_smtp_posture import names
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.nagios import cli, runner, states
from check_smtp_posture.nagios.contexts import DEFAULT, StateFileContext, TimeContext, seconds
from check_smtp_posture.nagios.summary import FamilySummary
from check_smtp_posture.sanitize import one_line

NAME = "DKIM"
#: RFC 8301 §3.2: signers MUST use RSA keys of at least 1024 bits, SHOULD use 2048
RSA_MINIMUM_BITS = 1024
RSA_RECOMMENDED_BITS = 2048
DAY = 86400.0
NO_SELECTORS = ("DKIM cannot be judged without selectors: name the ones the domain signs "
                "with (--selector)")
NONE_RECORDED = ("DKIM cannot be judged without selectors: the round-trip state file has "
                 "seen no signature of the domain yet; name them with --selector")


# -- configuration -----------------------------------------------------------------


class Options(namedtuple("Options", cli.CommonOptions._fields + (
        "domain", "selectors", "state_file", "max_key_age", "from_roundtrip_state"))):
    """What the run was asked to do, parsed and checked (cli.CommonOptions first)."""

    __slots__ = ()


def selector_name(text: str) -> str:
    """A selector: one or more DNS labels (RFC 6376 §3.1), normalised."""
    if not names.is_hostname(text):
        raise argparse.ArgumentTypeError(f"bad selector {text!r}")
    return names.normalize(text)


def build_parser() -> cli.PluginArgumentParser:
    parser = cli.PluginArgumentParser(
        prog="check_dkim",
        description="Check the DKIM keys (RFC 6376) a domain publishes for the selectors "
                    "it signs with: present, valid, not revoked, not in test mode, RSA of "
                    "at least 2048 bits (RFC 8301) or Ed25519 (RFC 8463) beside RSA; with "
                    "--state-file, warn about rotations, old keys and vanished selectors. "
                    "It never guesses selectors.")
    parser.add_argument("-D", "--domain", required=True, type=cli.domain_name,
                        help="the signing domain (the d= of its signatures)")
    parser.add_argument("--selector", type=selector_name, action="append", default=[],
                        metavar="S", help="a selector the domain signs with (the s= of its "
                                          "signatures; repeatable)")
    cli.add_common_options(parser)
    cli.add_dns_options(parser)
    parser.add_argument("--state-file", metavar="PATH",
                        help="remember each selector's key, to warn once when it changes, "
                             "to measure its age and to see a selector disappear")
    parser.add_argument("--max-key-age", type=cli.whole_number(1), metavar="DAYS",
                        help="WARNING when a key has been seen unchanged for longer (needs "
                             "--state-file)")
    parser.add_argument("--from-roundtrip-state", metavar="PATH",
                        help="also check the selectors check_mail_roundtrip saw the domain "
                             "sign its probes with (the DKIM-Signature d= and s= it records "
                             "in its --state-file)")
    cli.add_unreachable_option(parser)
    return parser


def options_from(args) -> Options | str:
    """Options from parsed arguments, or a usage error message."""
    if args.max_key_age is not None and not args.state_file:
        return "--max-key-age needs --state-file"
    if args.state_file is not None and not args.state_file:
        return "--state-file: empty path"
    if args.from_roundtrip_state is not None and not args.from_roundtrip_state:
        return "--from-roundtrip-state: empty path"
    return Options(
        *cli.common_options(args), domain=args.domain,
        selectors=tuple(dict.fromkeys(args.selector)), state_file=args.state_file,
        max_key_age=args.max_key_age, from_roundtrip_state=args.from_roundtrip_state)


# -- facts -------------------------------------------------------------------------


class SelectorFacts:
    """One selector: its key lookup and, with a state file, what was seen before."""

    __slots__ = ("lookup", "first_seen", "previous", "known")

    def __init__(self, lookup, *, first_seen=None, previous=None, known=None):
        self.lookup = lookup  # dkim.KeyLookup
        self.first_seen = first_seen  # when this key was first seen (epoch), None: no state
        self.previous = previous  # the fingerprint it replaced this run, or None
        self.known = known  # the fingerprint the state file has for it, or None

    @property
    def key(self):
        return self.lookup.key


def remembered(entry) -> bool:
    """Is a state file entry of the shape this plugin writes: selector -> {fingerprint,
    first_seen}?"""
    return isinstance(entry, dict) and all(
        isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("fingerprint"), str)
        and isinstance(v.get("first_seen"), (int, float)) for k, v in entry.items())


def compare(lookups: list, stored: dict, now: float) -> tuple[list, dict]:
    """Each lookup's SelectorFacts against the `stored` keys, and the keys to store."""
    from check_smtp_posture import dkim

    facts, keep = [], dict(stored)
    for lookup in lookups:
        entry = stored.get(lookup.selector)
        known = entry["fingerprint"] if entry else None
        fingerprint = lookup.key.fingerprint if lookup.status == dkim.FOUND else None
        if fingerprint is None:  # no key now: what was there stays remembered
            facts.append(SelectorFacts(lookup, known=known))
            continue
        if known == fingerprint:
            facts.append(SelectorFacts(lookup, first_seen=entry["first_seen"], known=known))
            continue
        keep[lookup.selector] = {"fingerprint": fingerprint, "first_seen": int(now)}
        facts.append(SelectorFacts(lookup, first_seen=int(now), previous=known, known=known))
    return facts, keep


class DkimResource(nagiosplugin.Resource):
    """Looks up the selectors' keys and compares them with the state file; decides nothing."""

    def __init__(self, domain: str, selectors, client, deadline, *, state_file=None,
                 roundtrip_state=None, clock=time.time):
        self.domain = domain
        self.selectors = selectors
        self.client = client
        self.deadline = deadline
        self.state_file = state_file
        self.roundtrip_state = roundtrip_state
        self.roundtrip_problem = None
        self.clock = clock
        self.state_problem = None

    def probe(self):
        from check_smtp_posture import dkim
        from check_smtp_posture.fanout import all_at_once

        selectors = self.selectors
        if self.roundtrip_state:
            from check_smtp_posture.nagios.statefile import read_state

            data, problem = read_state(self.roundtrip_state, self.deadline)
            self.roundtrip_problem = problem
            yield nagiosplugin.Metric("roundtrip_state", problem, context="roundtrip_state")
            recorded = dkim.recorded_selectors(data, self.domain)
            selectors = tuple(dict.fromkeys(selectors + tuple(recorded)))
        yield nagiosplugin.Metric("selectors", len(selectors), min=0, context="selectors")
        if not selectors:
            return
        found = all_at_once({s: (lambda s=s: dkim.lookup_key(self.client, self.domain, s))
                             for s in selectors})
        lookups = [found[s] for s in selectors]
        facts = self._history(lookups) if self.state_file else [SelectorFacts(x)
                                                                for x in lookups]
        for fact in facts:
            yield nagiosplugin.Metric(f"selector {fact.lookup.selector}", fact, context="key")
        usable = [f.key for f in facts if f.key is not None and f.key.usable]
        yield nagiosplugin.Metric("key_types", tuple(k.key_type for k in usable),
                                  context="key_types")
        yield nagiosplugin.Metric("selectors_ok", tuple(facts), context="selectors_ok")
        bits = [f.key.rsa_bits for f in facts if f.key is not None and f.key.rsa_bits]
        if bits:
            yield nagiosplugin.Metric("rsa_bits_min", min(bits), min=0, context=DEFAULT)
        ages = [self.clock() - f.first_seen for f in facts if f.first_seen is not None]
        if ages:
            yield nagiosplugin.Metric("key_age_days_max", int(max(0.0, max(ages)) // DAY),
                                      min=0, context="key_age")
        if self.state_file:
            yield nagiosplugin.Metric("state_file", self.state_problem, context="state_file")
        yield seconds("dns_time", max(x.answer.elapsed for x in lookups), "dns_time")

    def _history(self, lookups: list) -> list:
        from check_smtp_posture.nagios.statefile import StateFile

        key = f"dkim:{self.domain}"
        with StateFile(self.state_file, self.deadline) as state:
            stored = state.data.get(key, {}) if state.usable else {}
            if not remembered(stored):
                state.discard(key, f"entry {key!r} is not a map of selectors to keys")
                stored = {}
            facts, keep = compare(lookups, stored, self.clock())
            if state.usable:
                state.data[key] = keep
        self.state_problem = state.problem
        return facts


# -- contexts ----------------------------------------------------------------------


class SelectorsContext(nagiosplugin.Context):
    """No selector named: DKIM cannot be judged (UNKNOWN); never a guess."""

    def __init__(self):
        super().__init__("selectors")

    def performance(self, metric, resource):
        return nagiosplugin.Performance(metric.name, metric.value, min=0)

    def evaluate(self, metric, resource):
        if metric.value:
            return self.result_cls(Ok, None, metric)
        if not resource.roundtrip_state:
            return self.result_cls(Unknown, NO_SELECTORS, metric)
        # an unreadable round-trip state file says so itself (StateFileContext)
        return self.result_cls(Unknown, None if resource.roundtrip_problem else NONE_RECORDED,
                               metric)


class KeyContext(nagiosplugin.Context):
    """One selector's key: its lookup, its record, its size, its history.

    The findings of one selector make one result, its worst state, each said once.
    """

    def __init__(self, *, unreachable="critical", max_key_age=None, clock=time.time):
        super().__init__("key")
        self.unreachable = states.state(unreachable)
        self.max_key_age = max_key_age
        self.clock = clock

    def evaluate(self, metric, resource):
        findings = self.findings(metric.value)
        worst = self.worst(findings)
        text = ", ".join(text for _, text in findings)
        selector = metric.value.lookup.selector
        return self.result_cls(worst, f"selector {selector}: {text}" if text else None, metric)

    @staticmethod
    def worst(findings: list):
        return max((state for state, _ in findings), key=int, default=Ok)

    def findings(self, fact: SelectorFacts) -> list:
        from check_smtp_posture import dkim

        lookup = fact.lookup
        if lookup.status == dkim.FAILED:
            return [(self.unreachable, f"TXT lookup of {lookup.name} failed: "
                                       f"{lookup.answer.failure()}")]
        if lookup.status == dkim.MISSING:
            if fact.known:
                return [(Critical, f"disappeared ({lookup.absence()}), was key "
                                   f"{dkim.short(fact.known)}")]
            return [(Critical, f"no DKIM key at {lookup.name} ({lookup.absence()})")]
        if lookup.status == dkim.SEVERAL:
            return [(Critical, f"several key records at {lookup.name}: verifiers' results "
                               "are undefined")]
        key = lookup.key
        found = []
        if key.problems:
            found.append((Critical, "; ".join(one_line(p, 80) for p in key.problems)))
        elif key.revoked:
            found.append((Critical, "key revoked (p= empty)"))
        elif key.key_type == dkim.RSA and key.rsa_bits < RSA_MINIMUM_BITS:
            found.append((Critical, f"RSA key of {key.rsa_bits} bits, under "
                                    f"{RSA_MINIMUM_BITS} (RFC 8301)"))
        elif key.key_type == dkim.RSA and key.rsa_bits < RSA_RECOMMENDED_BITS:
            found.append((Warn, f"RSA key of {key.rsa_bits} bits, under "
                                f"{RSA_RECOMMENDED_BITS} (RFC 8301)"))
        if not key.for_email:
            found.append((Critical, f"s={':'.join(key.services)} excludes email"))
        if key.hashes and not set(key.hashes) & dkim.ACCEPTED_HASHES:
            found.append((Warn, f"h={':'.join(key.hashes)} allows no hash verifiers accept "
                                "(RFC 8301: sha256)"))
        if key.testing:
            found.append((Warn, "test mode (t=y): verifiers treat its mail as unsigned"))
        if fact.previous:
            found.append((Warn, f"key rotated: {dkim.short(fact.previous)} -> "
                                f"{dkim.short(key.fingerprint)}"))
        elif self.max_key_age and fact.first_seen is not None:
            days = int((self.clock() - fact.first_seen) // DAY)
            if days > self.max_key_age:
                found.append((Warn, f"key unchanged for {days} days, over {self.max_key_age} "
                                    "(rotation overdue)"))
        if key.unknown_tags:
            found.append((Ok, "unknown tags " + one_line(" ".join(key.unknown_tags), 40)))
        return found


class SelectorsOkContext(nagiosplugin.Context):
    """Perfdata only: how many selectors the KeyContext finds OK."""

    def __init__(self, keys: KeyContext):
        super().__init__("selectors_ok")
        self.keys = keys

    def performance(self, metric, resource):
        ok = [f for f in metric.value if self.keys.worst(self.keys.findings(f)) == Ok]
        return nagiosplugin.Performance(metric.name, len(ok), min=0)

    def evaluate(self, metric, resource):
        return self.result_cls(Ok, None, metric)


class KeyTypesContext(nagiosplugin.Context):
    """Ed25519 keys only, no RSA beside them: verifiers without RFC 8463 fail the mail."""

    def __init__(self):
        super().__init__("key_types")

    def evaluate(self, metric, resource):
        from check_smtp_posture import dkim

        types = set(metric.value)
        if types == {dkim.ED25519}:
            return self.result_cls(Warn, "Ed25519 keys only: verifiers without RFC 8463 "
                                         "fail the mail (add an RSA selector)", metric)
        return self.result_cls(Ok, None, metric)


class KeyAgeContext(nagiosplugin.Context):
    """The oldest key's age, perfdata only (KeyContext names the overdue selector)."""

    def __init__(self, max_key_age=None):
        super().__init__("key_age")
        self.max_key_age = max_key_age

    def performance(self, metric, resource):
        return nagiosplugin.Performance(metric.name, metric.value, min=0,
                                        warn=self.max_key_age)

    def evaluate(self, metric, resource):
        return self.result_cls(Ok, None, metric)


# -- summary -----------------------------------------------------------------------


class DkimSummary(FamilySummary):
    def __init__(self, domain: str, verbosity: int = 0):
        super().__init__(verbosity)
        self.domain = domain

    @staticmethod
    def _facts(results) -> list:
        return [r.metric.value for r in results if r.metric and r.metric.context == "key"]

    def headline(self, results):
        facts = self._facts(results)
        if not facts:
            return ""
        return f"{self.domain}: " + ", ".join(
            f"{f.lookup.selector} {f.key.describe() if f.key else f.lookup.status}"
            for f in facts)

    def problem(self, results):
        text = super().problem(results)
        return text if text.startswith(self.domain) else f"{self.domain}: {text}"

    def details(self, results):
        lines = []
        for fact in self._facts(results):
            lookup = fact.lookup
            where = lookup.name + (f" -> {lookup.alias}" if lookup.alias else "")
            if lookup.key is None:
                lines.append(f"{where}: {_no_key(lookup)}")
                continue
            lines.append(f"{where}: {lookup.key.describe()}, {lookup.key.fingerprint or 'no key'}"
                         + (f", first seen {_day(fact.first_seen)}" if fact.first_seen else ""))
            if self.verbosity >= 2:
                lines.append("  record: " + one_line(lookup.key.text, 1000))
            if fact.known and fact.known != lookup.key.fingerprint:
                lines.append(f"  was {fact.known}")
        return lines


def _no_key(lookup) -> str:
    """Why a selector's lookup gave no key, for the long output."""
    from check_smtp_posture import dkim

    if lookup.status == dkim.FAILED:
        return f"lookup failed: {lookup.answer.failure()}"
    if lookup.status == dkim.SEVERAL:
        return f"{len(lookup.answer.records) - lookup.other_records} key records"
    return f"no key ({lookup.absence()})"


def _day(epoch: float) -> str:
    from check_smtp_posture import clock

    return clock.minute(epoch)


# -- main --------------------------------------------------------------------------


def build_check(options: Options, deadline: Deadline, clock=time.time) -> nagiosplugin.Check:
    """The check main() runs; `clock` (epoch seconds) is the tests' to set."""
    keys = KeyContext(unreachable=options.unreachable_state, max_key_age=options.max_key_age,
                      clock=clock)
    return runner.new_check(
        DkimResource(options.domain, options.selectors, cli.dns_client(options, deadline),
                     deadline, state_file=options.state_file,
                     roundtrip_state=options.from_roundtrip_state, clock=clock),
        SelectorsContext(),
        keys,
        SelectorsOkContext(keys),
        KeyTypesContext(),
        KeyAgeContext(options.max_key_age),
        StateFileContext(),
        StateFileContext("roundtrip_state"),
        TimeContext("dns_time"),
        DkimSummary(options.domain, options.verbose),
        name=NAME,
    )


main, console_main = runner.entry_points(build_parser, options_from, build_check)


if __name__ == "__main__":  # pragma: no cover
    console_main()
