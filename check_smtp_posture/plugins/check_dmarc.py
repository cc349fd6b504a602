"""check_dmarc: does a domain publish one sound DMARC policy (RFC 9989), and do its
report destinations take the reports?

Probe, decide, phrase: `DmarcResource.probe()` walks the DNS tree for the policy
(check_smtp_posture.dmarc), looks up each report destination's authorisation and MX
(the family's MX verdict), probes the report addresses at RCPT with
--probe-destinations, and compares the policy with the last run's (--state-file);
the Contexts decide; `DmarcSummary` phrases.
"""

from __future__ import annotations

import re
import time
from collections import namedtuple

import nagiosplugin
from nagiosplugin.state import Critical, Ok, Warn

from check_smtp_posture import clock, dmarc, targets
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.nagios import cli, runner, states
from check_smtp_posture.nagios.contexts import (
    DEFAULT,
    MxContext,
    StateFileContext,
    TimeContext,
    seconds,
)
from check_smtp_posture.nagios.statefile import StateFile
from check_smtp_posture.nagios.summary import FamilySummary
from check_smtp_posture.sanitize import one_line

NAME = "DMARC"
DAY = 86400


# -- configuration -----------------------------------------------------------------


class Options(namedtuple("Options", cli.CommonOptions._fields + (
        "domain", "missing", "accept_none", "probe_destinations", "state_file",
        "accept_changes"))):
    """What the run was asked to do, parsed and checked (cli.CommonOptions first)."""

    __slots__ = ()


def build_parser() -> cli.PluginArgumentParser:
    parser = cli.PluginArgumentParser(
        prog="check_dmarc",
        description="Check a domain's DMARC policy (RFC 9989): discovered by the DNS tree "
                    "walk, exactly one valid record, a policy that is enforced, report "
                    "destinations authorised and accepting mail (RFC 9990, 9991), and "
                    "no downgrade since the last run.")
    parser.add_argument("-D", "--domain", required=True, type=cli.domain_name,
                        help="the domain whose DMARC policy to check")
    cli.add_common_options(parser)
    cli.add_dns_options(parser)
    cli.add_family_options(parser)
    cli.add_helo_option(parser)
    cli.add_threshold_options(parser, what="none_age_days (days since p=none was first "
                                           "seen; needs --state-file)")
    parser.add_argument("--missing", choices=("ok", "warning", "critical"),
                        default="critical", help="state when the domain has no DMARC "
                                                 "record (default: critical)")
    parser.add_argument("--accept-none", action="store_true",
                        help="p=none (monitoring only) is OK instead of WARNING")
    parser.add_argument("--probe-destinations", action="store_true",
                        help="ask each mailto: report destination's MX whether it accepts "
                             "the address (MAIL and RCPT, never DATA)")
    cli.add_baseline_options(parser, "the policy", "a downgrade")
    cli.add_unreachable_option(parser)
    return parser


def options_from(args) -> Options | str:
    """Options from parsed arguments, or a usage error message."""
    if args.accept_changes and not args.state_file:
        return "--accept-changes needs --state-file"
    if (args.warning or args.critical) and not args.state_file:
        return "-w and -c (none_age_days) need --state-file"
    if (args.family or args.helo_name) and not args.probe_destinations:
        return "-4, -6 and --helo-name only apply with --probe-destinations"
    return Options(
        *cli.common_options(args, default_helo=args.probe_destinations), domain=args.domain,
        missing=args.missing, accept_none=args.accept_none,
        probe_destinations=args.probe_destinations, state_file=args.state_file,
        accept_changes=args.accept_changes)


# -- facts -------------------------------------------------------------------------


class ProbeFact:
    """What the destination's MX said to MAIL and RCPT for the report address."""

    __slots__ = ("address", "host", "result")

    def __init__(self, address: str, host: str = "", result=None):
        self.address = address
        self.host = host  # the MX host asked, "" when there was none to ask
        self.result = result  # smtp.session.SessionResult, None: no MX address


class History:
    """The policy compared with the baseline in the state file."""

    __slots__ = ("baseline", "downgrades", "recorded", "none_since", "now")

    def __init__(self, baseline=None, downgrades=(), recorded=False, none_since=None,
                 now=0.0):
        self.baseline = baseline  # the stored {"p", "sp", "np", "t", "seen"}, or None
        self.downgrades = tuple(downgrades)  # phrases: "p reject -> none", "t=y set"
        self.recorded = recorded  # the baseline was (re)written this run
        self.none_since = none_since  # epoch seconds p=none was first seen, or None
        self.now = now

    @property
    def none_age_days(self) -> int:
        if self.none_since is None:
            return 0
        return max(0, int((self.now - self.none_since) // DAY))


def policy_of(found: dmarc.Discovery) -> dict:
    record = found.record
    return {"p": found.domain_policy, "sp": record.sp, "np": record.np,
            "t": record.testing}


def downgrades(old: dict, new: dict) -> list:
    """What is weaker now than in `old`: "p reject -> none", "t=y set"."""
    out = [f"{tag} {old[tag]} -> {new[tag]}" for tag in ("p", "sp", "np")
           if dmarc.RANK.get(new[tag], 0) < dmarc.RANK.get(old.get(tag), 0)]
    if new["t"] and not old.get("t"):
        out.append("t=y set (policy not applied)")
    return out


# -- probe -------------------------------------------------------------------------


class DmarcResource(nagiosplugin.Resource):
    """Asks DNS (and, when told, the destinations' MX); decides nothing."""

    def __init__(self, options: Options, client, deadline: Deadline, now=time.time):
        self.options = options
        self.client = client
        self.deadline = deadline
        self.now = now

    def probe(self):
        opts = self.options
        started = time.monotonic()
        found = dmarc.discover(self.client, opts.domain)
        yield nagiosplugin.Metric("record", found, context="record")
        record = found.record
        usable = record is not None and record.valid and not found.several
        if usable:
            yield nagiosplugin.Metric("notes", record, context="notes")
            yield nagiosplugin.Metric("policy_rank", dmarc.RANK[found.domain_policy],
                                      min=0, max=2, context=DEFAULT)
            for dest in dmarc.destinations(self.client, record, found.policy.domain,
                                           found.organisational):
                yield nagiosplugin.Metric(f"destination {dest.uri.address}", dest,
                                          context="destination")
            yield from self._mail_checks(record)
            if opts.state_file:
                history, problem = self._history(found)
                yield nagiosplugin.Metric("state_file", problem, context="state_file")
                if history is not None:
                    yield nagiosplugin.Metric("history", history, context="history")
                    yield nagiosplugin.Metric("none_age_days", history.none_age_days, "d",
                                              min=0, context="none_age_days")
        yield nagiosplugin.Metric("dns_queries", found.queries, min=0, context=DEFAULT)
        yield seconds("dns_time", time.monotonic() - started, "dns_time")

    def _mail_checks(self, record: dmarc.Record):
        """Each mailto destination domain's MX verdict, and the RCPT probes if asked."""
        addresses = list(dict.fromkeys(u.address for u in record.uris if u.scheme == "mailto"))
        domains = list(dict.fromkeys(a.rpartition("@")[2].lower() for a in addresses))
        resolutions = {d: targets.resolve_mx(self.client, d, family=self.options.family)
                       for d in domains}
        for domain, resolution in resolutions.items():
            yield nagiosplugin.Metric(f"mx {domain}", resolution, context="destination_mx")
        if self.options.probe_destinations:
            for address in addresses:
                resolution = resolutions[address.rpartition("@")[2].lower()]
                yield nagiosplugin.Metric(f"probe {address}", self._probe(address, resolution),
                                          context="destination_probe")

    def _probe(self, address: str, resolution: targets.Resolution) -> ProbeFact:
        """MAIL and RCPT at the most preferred MX address that answers; never DATA."""
        from check_smtp_posture.smtp.session import Probe, SessionPlan, run_session

        plan = SessionPlan(helo_name=self.options.helo_name,
                           probes=(Probe("report", f"postmaster@{self.options.domain}",
                                         address),))
        fact = ProbeFact(address)
        for endpoint in resolution.endpoints(25):
            fact.host, fact.result = endpoint.name, run_session(endpoint, plan, self.deadline)
            if fact.result.probe_results and fact.result.probe_results[0].answered:
                break
            if self.deadline.expired:
                break
        return fact

    def _history(self, found: dmarc.Discovery):
        now = self.now()
        current = policy_of(found)
        key = f"dmarc:{found.domain}"
        history = None
        with StateFile(self.options.state_file, self.deadline) as state:
            entry = state.data.get(key) if state.usable else None
            if entry is not None and not _entry_ok(entry):
                state.discard(key, f"entry {key!r} is not a DMARC policy record")
                entry = None
            if state.usable:
                entry = entry or {}
                baseline = entry.get("baseline")
                found_down = downgrades(baseline, current) if baseline else []
                recorded = baseline is None or self.options.accept_changes
                if recorded or not found_down:  # a stronger policy needs no acknowledgement
                    entry["baseline"] = dict(current, seen=now)
                none_since = entry.get("none_since") if current["p"] == "none" else None
                if current["p"] == "none" and none_since is None:
                    none_since = now
                entry["none_since"] = none_since
                state.data[key] = entry
                history = History(baseline, [] if recorded else found_down, recorded,
                                  none_since, now)
        return (history if state.usable else None), state.problem


def _entry_ok(entry) -> bool:
    if not isinstance(entry, dict):
        return False
    baseline = entry.get("baseline")
    since = entry.get("none_since")
    return (baseline is None or (isinstance(baseline, dict) and all(
        baseline.get(tag) in dmarc.POLICIES for tag in ("p", "sp", "np")))) and (
        since is None or isinstance(since, (int, float)))


# -- contexts ----------------------------------------------------------------------


class RecordContext(nagiosplugin.Context):
    """The discovery: no record, a failed lookup, several records, syntax errors, p=none."""

    def __init__(self, *, missing=Critical, unreachable=Critical, accept_none=False):
        super().__init__("record")
        self.missing = missing
        self.unreachable = unreachable
        self.accept_none = accept_none

    def evaluate(self, metric, resource):
        found = metric.value
        if found.failure is not None:
            lookup = found.failure
            return self.result_cls(self.unreachable, f"DMARC lookup of {lookup.name} failed: "
                                   f"{lookup.answer.failure()}", metric)
        if found.policy is None:
            text = f"no DMARC record for {found.domain} ({found.queries} tree-walk queries)"
            miss = next((lookup for lookup in found.lookups if lookup.near_misses), None)
            if miss is not None:
                text += (f"; {miss.name} has {one_line(miss.near_misses[0], 40)!r}, which "
                         "receivers discard (it must begin with v=DMARC1)")
            return self.result_cls(self.missing, text, metric)
        where = found.policy.name
        if found.several:
            return self.result_cls(Critical, f"{where} has {found.several} DMARC records "
                                   "(receivers apply none)", metric)
        record = found.record
        if not record.valid:
            return self.result_cls(Critical, f"{where}: " + "; ".join(record.errors[:3]),
                                   metric)
        if found.domain_policy == "none" and not self.accept_none:
            return self.result_cls(Warn, f"{found.domain}: policy none (monitoring only)",
                                   metric)
        return self.result_cls(Ok, None, metric)


class NotesContext(nagiosplugin.Context):
    """Tags RFC 9989 ignores: unknown ones, and pct, rf, ri that it removed. OK, said."""

    def __init__(self):
        super().__init__("notes")

    def evaluate(self, metric, resource):
        record = metric.value
        parts = []
        if record.removed:
            parts.append("removed tag " + ", ".join(f"{t}={v}" for t, v, _ in record.removed)
                         + " (RFC 9989)")
        if record.unknown:
            parts.append("unknown tag " + ", ".join(record.unknown) + " ignored")
        return self.result_cls(Ok, "; ".join(parts) or None, metric)


class DestinationContext(nagiosplugin.Context):
    """An external report destination must authorise the reports."""

    def __init__(self, *, unreachable=Critical):
        super().__init__("destination")
        self.unreachable = unreachable

    def evaluate(self, metric, resource):
        dest = metric.value
        if dest.authorised:
            return self.result_cls(Ok, None, metric)
        name = dest.authorisation_name
        if dest.failed:
            return self.result_cls(self.unreachable, f"authorisation lookup {name} failed: "
                                   f"{dest.authorisation.failure()}", metric)
        return self.result_cls(Warn, f"report destination {dest.uri.address} not authorised "
                               f"(no v=DMARC1 at {name})", metric)


class DestinationMxContext(MxContext):
    """The family's MX verdict for a report destination's domain, named as such."""

    def __init__(self, *, unreachable="critical"):
        super().__init__("destination_mx", unreachable=unreachable, expect_mail=True)

    def evaluate(self, metric, resource):
        result = super().evaluate(metric, resource)
        if result.state == Ok:
            return self.result_cls(Ok, None, metric)
        state = Warn if result.state == Critical else result.state
        return self.result_cls(state, f"report domain {metric.value.domain}: {result.hint}",
                               metric)


class DestinationProbeContext(nagiosplugin.Context):
    """The report address refused at RCPT (or MAIL): WARNING; no MX reached: unreachable."""

    def __init__(self, *, unreachable="critical"):
        super().__init__("destination_probe")
        self.unreachable = unreachable

    def evaluate(self, metric, resource):
        fact = metric.value
        result = fact.result
        if result is None:
            return self.result_cls(Ok, None, metric)  # no MX address: the MX verdict says so
        outcome = result.probe_results[0] if result.probe_results else None
        if outcome is not None and outcome.answered:
            reply = outcome.verdict
            if reply.positive:
                return self.result_cls(Ok, None, metric)
            return self.result_cls(Warn, f"report address {fact.address} refused by "
                                   f"{fact.host}: {one_line(str(reply), 100)}", metric)
        if result.failure is not None:
            state = states.failure_state(result.failure.kind, self.unreachable)
            return self.result_cls(state, f"report address {fact.address}: {fact.host} "
                                   f"{one_line(str(result.failure), 100)}", metric)
        reply = result.closed_by_server or next(iter(reversed(result.replies.values())), None)
        return self.result_cls(Warn, f"report address {fact.address}: {fact.host} ended the "
                               f"session before RCPT ({one_line(str(reply), 80)})", metric)


class HistoryContext(nagiosplugin.Context):
    """A downgrade since the baseline: WARNING until --accept-changes."""

    def __init__(self):
        super().__init__("history")

    def evaluate(self, metric, resource):
        history = metric.value
        if history.recorded:
            return self.result_cls(Ok, "policy recorded as baseline", metric)
        if history.downgrades:
            since = clock.minute(history.baseline.get("seen", 0))
            return self.result_cls(Warn, "policy downgraded since " + since + ": "
                                   + ", ".join(history.downgrades), metric)
        return self.result_cls(Ok, None, metric)


class NoneAgeContext(nagiosplugin.ScalarContext):
    def evaluate(self, metric, resource):
        result = super().evaluate(metric, resource)
        if result.state != Ok:
            return self.result_cls(result.state, f"p=none for {metric.value} days "
                                   f"(threshold {result.hint})", metric)
        return result


# -- summary -----------------------------------------------------------------------


class DmarcSummary(FamilySummary):
    def __init__(self, domain: str, verbosity: int = 0):
        super().__init__(verbosity)
        self.domain = domain

    @staticmethod
    def _found(results) -> dmarc.Discovery | None:
        try:
            return results["record"].metric.value
        except (KeyError, AttributeError):
            return None

    def headline(self, results):
        found = self._found(results)
        if found is None or found.record is None or found.several:
            return ""
        text = (f"{found.domain}: policy {found.domain_policy}, non-existent subdomains "
                f"{found.nonexistent_policy}")
        if found.inherited:
            text += f" (from {found.policy.name})"
        if found.record.testing:
            text += ", t=y (testing)"
        count = sum(1 for r in results if r.metric and r.metric.context == "destination")
        if count:
            text += f", {count} report destination{'s' if count != 1 else ''}"
        return text

    def problem(self, results):
        text = super().problem(results)
        if not re.search(rf"(^|\s){re.escape(self.domain)}([\s:;,]|$)", text):
            text = f"{self.domain}: {text}"
        return text

    def details(self, results):
        found = self._found(results)
        if found is None:
            return []
        lines = [f"tree walk: {lookup.name} {_outcome(lookup)}" for lookup in found.lookups]
        lines.append(f"organisational domain: {found.organisational}" + (
            f" (walk stopped at {found.org_failure.name}: "
            f"{found.org_failure.answer.failure()})" if found.org_failure else ""))
        record = found.record
        if record is not None:
            lines.append(f"record: {one_line(record.text, 300)}")
            lines += [f"error: {e}" for e in record.errors]
            lines += [f"removed tag {t}={v}: {note}" for t, v, note in record.removed]
            lines += [f"other scheme ignored: {one_line(u.text, 80)}" for u in record.uris
                      if u.scheme != "mailto"]
        for r in results:
            if r.metric is not None and r.metric.context == "destination":
                dest = r.metric.value
                how = "inside the organisational domain" if not dest.external else (
                    "authorised" if dest.authorised else "not authorised")
                lines.append(f"{'/'.join(dest.kinds)} {dest.uri.address}: {how}")
        return lines


def _outcome(lookup: dmarc.Lookup) -> str:
    if lookup.failed:
        return lookup.answer.failure()
    if lookup.texts:
        return f"{len(lookup.texts)} DMARC record{'s' if len(lookup.texts) != 1 else ''}"
    return f"no record ({lookup.answer.status})"


# -- main --------------------------------------------------------------------------


def build_check(options: Options, deadline: Deadline, now=time.time) -> nagiosplugin.Check:
    """The check main() runs; `now` (epoch seconds) is the clock of the state file."""
    unreachable = states.state(options.unreachable_state)
    return runner.new_check(
        DmarcResource(options, cli.dns_client(options, deadline), deadline, now),
        RecordContext(missing=states.state(options.missing), unreachable=unreachable,
                      accept_none=options.accept_none),
        NotesContext(),
        DestinationContext(unreachable=unreachable),
        DestinationMxContext(unreachable=options.unreachable_state),
        DestinationProbeContext(unreachable=options.unreachable_state),
        HistoryContext(),
        StateFileContext(),
        NoneAgeContext("none_age_days", options.warning, options.critical),
        TimeContext("dns_time"),
        DmarcSummary(options.domain, options.verbose),
        name=NAME,
    )


def main(argv=None, now=time.time) -> int:
    return runner.plugin_main(argv, build_parser, options_from,
                              lambda options, deadline: build_check(options, deadline, now))


def console_main() -> None:
    runner.console(main)


if __name__ == "__main__":  # pragma: no cover
    console_main()
