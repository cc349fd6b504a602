"""check_mta_sts: what the facts MtaSts.probe() gathered mean (the Contexts), and how
they read (StsSummary and the long output).

The RFC 8461 rules themselves (what senders accept, how long they cache) are
mtasts.py's; here they become states and phrases.
"""

from __future__ import annotations

from nagiosplugin.state import Critical, Ok, Warn

from check_smtp_posture import clock, mtasts, targets
from check_smtp_posture.nagios import states
from check_smtp_posture.nagios.contexts import OptionsContext
from check_smtp_posture.nagios.summary import ResourceSummary, capped
from check_smtp_posture.sanitize import one_line

# -- contexts ------------------------------------------------------------------------


class FactContext(OptionsContext):
    """A Context judging the StsFacts with `judge() -> (state, hint)` (options: the plugin's
    Options)."""

    def evaluate(self, metric, resource):
        state, hint = self.judge(metric.value)
        return self.result_cls(state, hint or None, metric)

    def judge(self, facts):  # pragma: no cover - abstract
        raise NotImplementedError


class StsRecordContext(FactContext):
    """The `_mta-sts` TXT record: missing --missing; failed lookup --unreachable-state;
    several or invalid CRITICAL (senders then apply no policy)."""

    context_name = "sts_record"

    def judge(self, facts):
        sts = facts.sts
        if sts.answer.failed:
            return (states.state(self.options.unreachable_state),
                    f"{sts.name} TXT lookup failed: {_dns_failure(sts.answer)}")
        record = sts.record
        if record.count == 0:
            why = "NXDOMAIN" if sts.answer.status == "NXDOMAIN" else record.problem
            return states.state(self.options.missing), f"no MTA-STS record at {sts.name} " \
                                                       f"({why})"
        if not record.ok:
            return Critical, f"{sts.name}: {one_line(record.problem, 100)} (senders apply " \
                             "no policy)"
        return Ok, ""


class PolicyContext(FactContext):
    """The fetch and the policy: anything a sender would refuse is CRITICAL, an unreachable
    policy host --unreachable-state; mode none and unknown keys are notes."""

    context_name = "policy"

    def judge(self, facts):
        fetch = facts.fetch
        if fetch is None:
            return Ok, ""
        failed = self.failed(fetch)
        if failed:
            return failed
        problem = mtasts.response_problem(fetch.host, fetch.response, fetch.cert)
        if problem:
            return Critical, problem
        policy = fetch.policy
        if not policy.valid:
            listed = "; ".join(capped(list(policy.problems), 2))
            return Critical, f"policy invalid: {one_line(listed, 160)}"
        notes = []
        if policy.mode == mtasts.NONE:
            notes.append("mode none: senders apply no policy")
        if policy.unknown_keys:
            notes.append("unknown policy keys ignored: "
                         + one_line(", ".join(policy.unknown_keys), 80))
        return Ok, "; ".join(notes)

    def failed(self, fetch) -> tuple:
        """(state, phrase) when no response came, or (): no address for the policy host
        (a failed lookup --unreachable-state), or no connection or answer from it."""
        res = fetch.resolution
        if res is None or not res.addresses:
            target = res.targets[0] if res is not None and res.targets else None
            if target is not None and target.problem == targets.LOOKUP_FAILED:
                return (states.state(self.options.unreachable_state),
                        f"policy host {one_line(target.describe_problem(), 120)}")
            why = target.problem if target is not None and target.problem else "no address"
            return Critical, f"policy host {fetch.host}: {why}"
        if fetch.error is not None:
            return (states.failure_state(fetch.error.kind, self.options.unreachable_state),
                    f"policy host {fetch.host}[{fetch.address}] {fetch.error.phase}: "
                    f"{one_line(fetch.error.detail, 100)}")
        return ()


class CoverageContext(FactContext):
    """Every live MX named by a policy pattern with a valid STARTTLS certificate:
    enforce CRITICAL, testing WARNING, none a note; an MX not reached --unreachable-state."""

    context_name = "coverage"

    def judge(self, facts):
        policy = facts.usable_policy
        if policy is None:
            return Ok, ""
        unreachable = [(mx, e) for mx in facts.mx for e in mx.unreachable]
        hints = []
        for mx in facts.mx:
            if mx.pattern is None:
                hints.append(f"{mx.name} not covered by the policy")
                continue
            for e in mx.endpoints:
                if e not in mx.unreachable and not e.delivers:
                    hints.append(f"{e.endpoint.label} {endpoint_problem(e)}")
        state = {mtasts.ENFORCE: Critical, mtasts.TESTING: Warn}.get(policy.mode, Ok)
        if hints:
            text = "; ".join(capped(hints, 2))
            if state == Ok:
                return Ok, f"{text} (not enforced)"
            return state, f"{policy.mode} policy: {text}"
        if unreachable:
            mx, e = unreachable[0]
            more = f" (+{len(unreachable) - 1} more)" if len(unreachable) > 1 else ""
            failure = e.session.failure
            return (states.failure_state(failure.kind, self.options.unreachable_state),
                    f"{e.endpoint.label} {failure.phase}: {one_line(failure.detail, 80)}{more}")
        return Ok, ""


class TlsRptContext(FactContext):
    """TLS-RPT: absent a note; several records, a bad rua, a mailto domain without MX
    WARNING (reports get lost, mail does not); failed lookup --unreachable-state."""

    context_name = "tlsrpt"

    def judge(self, facts):
        rpt = facts.tlsrpt
        answer = rpt.records.answer
        name = rpt.records.name
        if answer.failed:
            return (states.state(self.options.unreachable_state),
                    f"{name} TXT lookup failed: {_dns_failure(answer)}")
        record = rpt.records.record
        if record.count == 0:
            return Ok, "no TLS-RPT record"
        if not record.ok:
            return Warn, f"TLS-RPT {name}: {one_line(record.problem, 100)}"
        bad = [f"{one_line(u.uri, 60) or 'empty'}: {u.problem}" for u in rpt.uris if u.problem]
        for domain, res in sorted(rpt.mailto_mx.items()):
            if res.kind in (targets.MX, targets.IMPLICIT):
                continue
            if res.kind == targets.FAILED:
                continue  # undecided: said in the long output
            bad.append(f"report domain {domain} takes no mail ({_mx_kind(res)})")
        if bad:
            return Warn, "TLS-RPT rua " + "; ".join(capped(bad, 2))
        return Ok, ""


class DaneContext(FactContext):
    """TLSA records at an MX: a note (RFC 8461 §2: senders doing both apply DANE)."""

    context_name = "dane"

    def judge(self, facts):
        with_tlsa = [mx.name for mx in facts.mx if mx.tlsa]
        if not with_tlsa:
            return Ok, ""
        return Ok, f"DANE TLSA at {', '.join(capped(with_tlsa, 2))} (takes precedence over " \
                   "MTA-STS)"


class HistoryContext(FactContext):
    """--state-file findings: an older policy senders may still cache that differs from
    the current one in a way that matters, WARNING, until the date it names."""

    context_name = "history"

    def judge(self, facts):
        findings = history_findings(facts.history) if facts.history else []
        if findings:
            return Warn, "; ".join(capped(findings, 2))
        return Ok, ""


def history_findings(history: mtasts.History) -> list:
    """The cached older policies that differ from the current one, phrased."""
    out = []
    for cached in history.cached:
        until = clock.minute(cached.until)
        if cached.same_id:
            out.append(f"policy changed but its id {cached.id} did not: senders keep "
                       f"the old one until {until}")
        if cached.downgraded_to:
            out.append(f"policy downgraded from enforce (id {cached.id}) to "
                       f"{cached.downgraded_to}; the enforce policy may be cached until "
                       f"{until}")
        if cached.uncovered:
            out.append(f"{', '.join(cached.uncovered)} not in the older policy id "
                       f"{cached.id} ({cached.mode}) senders may cache until {until}")
    return out


def history_notes(history: mtasts.History) -> list:
    """What the history says that is no finding: the MX set changed, a policy kept."""
    out = []
    if history.mx_added or history.mx_gone:
        out.append("MX set changed since the last run: "
                   + ", ".join([f"+{m}" for m in history.mx_added]
                               + [f"-{m}" for m in history.mx_gone]))
    if history.kept is not None:
        out.append(f"senders that cached policy id {history.kept.id} keep it until "
                   f"{clock.minute(history.kept.until)}")
    return out


def endpoint_problem(e) -> str:
    """Why a sender enforcing MTA-STS would not deliver to an EndpointTls ('' when it
    would)."""
    s = e.session
    if s.failure is not None:
        return f"{s.failure.phase}: {one_line(s.failure.detail, 80)}"
    if s.stopped is not None:
        return f"{s.stopped}: {one_line(str(s.replies.get(s.stopped)), 60)}"
    if s.tls is None:
        return "no STARTTLS"
    bad = mtasts.certificate_problems(e.cert)
    return "certificate " + ", ".join(bad) if bad else ""


def _dns_failure(answer) -> str:
    return one_line(answer.failure(), 80)


def _mx_kind(res: targets.Resolution) -> str:
    return {targets.NULL: "null MX", targets.NXDOMAIN: "NXDOMAIN",
            targets.NO_MAIL_HOST: "no MX, no address"}.get(res.kind, res.kind)


# -- summary ---------------------------------------------------------------------------


class StsSummary(ResourceSummary):
    def headline(self, results):
        facts = self.resource.facts
        policy = facts.usable_policy
        if policy is None:
            return f"{facts.domain}: no MTA-STS policy" if facts.fetch is None else ""
        covered = sum(m.covered for m in facts.mx)
        return (f"{facts.domain}: policy id {facts.sts.record.get('id')} mode {policy.mode}, "
                f"{covered} of {len(facts.mx)} MX covered, max_age "
                f"{policy.max_age}s, fetched in {facts.fetch.elapsed:.3f}s")

    def details(self, results):
        opts = self.resource.options
        facts = self.resource.facts
        lines = []
        if opts.helo_note:
            lines.append(f"note: {opts.helo_note}")
        lines.extend(describe(facts, self.verbosity))
        return lines


def describe(facts, verbosity: int) -> list:
    """The long output: the record, the fetch, the policy, each MX, TLS-RPT, history."""
    lines = []
    sts = facts.sts
    if sts.record is not None and sts.record.text:
        lines.append(f"{sts.name} TXT: {one_line(sts.record.text, 200)}")
    fetch = facts.fetch
    if fetch is not None:
        lines.extend(_describe_fetch(fetch, verbosity))
    for mx in facts.mx:
        pattern = f"covered by {mx.pattern}" if mx.pattern else "not covered"
        dane = f", {mx.tlsa} TLSA records" if mx.tlsa else ""
        lines.append(f"MX {mx.target.preference} {mx.name}: {pattern}{dane}")
        for e in mx.endpoints:
            lines.append(f"  {e.endpoint.address}: " + _describe_endpoint(e))
            if verbosity >= 3:
                lines.extend("    " + line for line in e.session.transcript.lines())
    rpt = facts.tlsrpt
    if rpt.records.record is not None and rpt.records.record.text:
        lines.append(f"{rpt.records.name} TXT: {one_line(rpt.records.record.text, 200)}")
    for domain, res in sorted(rpt.mailto_mx.items()):
        lines.append(f"  report domain {domain}: {_mx_kind(res)}"
                     + (f" ({one_line(res.detail, 80)})" if res.detail else ""))
    for note in history_notes(facts.history) if facts.history else ():
        lines.append(f"history: {note}")
    return lines


def _describe_fetch(fetch, verbosity: int) -> list:
    lines = []
    where = f" from {fetch.address}" if fetch.address else ""
    response = fetch.response
    if response is None:
        return [f"policy {fetch.url}{where}: not fetched"]
    kind = response.header("content-type") or "no Content-Type"
    size = f"{len(response.body)}{'+' if response.truncated else ''} bytes"
    lines.append(f"policy {fetch.url}{where}: {response.status} "
                 f"{one_line(response.reason, 40)}, {one_line(kind, 60)}, {size}, "
                 f"{response.tls.describe() if response.tls else 'no TLS'}")
    cert = fetch.cert
    if cert is not None and not cert.error:
        lines.append(f"  certificate {one_line(cert.subject, 80)}, issuer "
                     f"{one_line(cert.issuer, 80)}, valid until {cert.not_after:%Y-%m-%d}"
                     + ("" if not cert.problems() else f": {', '.join(cert.problems())}"))
    policy = fetch.policy
    if policy is not None:
        lines.append(f"  policy: version {policy.version}, mode {policy.mode}, max_age "
                     f"{policy.max_age}, mx {', '.join(policy.mx) or 'none'}, "
                     f"{policy.line_ending} line endings")
        for problem in policy.problems:
            lines.append(f"  policy problem: {problem}")
    if verbosity >= 3:
        lines.extend(f"  < {one_line(k, 40)}: {one_line(v, 100)}" for k, v in response.headers)
    return lines


def _describe_endpoint(e) -> str:
    session = e.session
    if session.tls is None:
        return endpoint_problem(e) or "no TLS"
    cert = e.cert
    text = f"STARTTLS {session.tls.describe()}"
    if cert is not None and not cert.error:
        text += f", certificate {one_line(cert.subject, 60)}, valid until " \
                f"{cert.not_after:%Y-%m-%d}"
    problem = endpoint_problem(e)
    return text + (f": {problem}" if problem else ", valid for the MX name")
