"""check_mail_roundtrip: what the facts of RoundTrip.probe() mean (the Contexts), and how
they read (RoundTripSummary and the long output).
"""

from __future__ import annotations

import nagiosplugin

from check_smtp_posture.nagios import states
from check_smtp_posture.nagios.contexts import OptionsContext
from check_smtp_posture.nagios.summary import ResourceSummary
from check_smtp_posture.plugins.roundtrip_probe import (
    BACK,
    IN_FLIGHT,
    JUNK,
    LOST,
    SEND_FAILED,
    SENT,
    ProbeOutcome,
)
from check_smtp_posture.sanitize import one_line, printable

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing to run
if TYPE_CHECKING:
    from check_smtp_posture.plugins.check_mail_roundtrip import Options

# -- contexts ------------------------------------------------------------------------


class ProbeContext(OptionsContext):
    """A probe that did not come back, landed in junk, or could not be sent."""

    context_name = "probe"

    def evaluate(self, metric, resource):
        outcome: ProbeOutcome = metric.value
        opts = self.options
        where = outcome.label
        if outcome.status == SEND_FAILED:
            return self._send_failure(outcome, metric)
        if outcome.status == JUNK:
            return self.result_cls(nagiosplugin.Warn, f"probe via {where} landed in junk "
                                   f"folder {printable(outcome.folder, 40)}", metric)
        if outcome.status == LOST:  # a synchronous run ended without it
            return self.result_cls(nagiosplugin.Critical, f"probe via {where} not back "
                                   f"within {outcome.age:.1f}s", metric)
        if outcome.status == IN_FLIGHT and lost(outcome, opts, resource):
            return self.result_cls(nagiosplugin.Critical, f"probe via {where} lost: not "
                                   f"back after {outcome.age:.0f}s", metric)
        if outcome.status == IN_FLIGHT and opts.late_after is not None \
                and outcome.age > opts.late_after:
            return self.result_cls(nagiosplugin.Warn, f"probe via {where} not back after "
                                   f"{outcome.age:.0f}s", metric)
        return self.result_cls(nagiosplugin.Ok, "", metric)

    def _send_failure(self, outcome, metric):
        result = outcome.session
        where = outcome.label
        if result.failure is not None:
            exc = result.failure
            return self.result_cls(states.failure_state(exc.kind, self.options.unreachable_state),
                                   f"sending via {where} {exc.phase}: {one_line(exc.detail)}",
                                   metric)
        if result.withheld is not None:
            return self.result_cls(nagiosplugin.Critical, f"sending via {where}: no TLS, so "
                                   "the password was not sent", metric)
        phase = result.stopped or "data"
        reply = result.replies.get(phase)
        if phase == "rcpt" and result.rcpt_replies:
            reply = result.rcpt_replies[-1][1]
        said = one_line(str(reply), 80) if reply is not None else "not offered"
        return self.result_cls(nagiosplugin.Critical, f"sending via {where} refused at "
                               f"{phase}: {said}", metric)


def lost(outcome: ProbeOutcome, options: Options, resource) -> bool:
    """-c: an earlier run's probe not back by the end of the -c range is lost, unless the
    mailbox failed this run (it was not looked for)."""
    return outcome.age > options.lost_after and resource.mailbox_error is None


class MailboxContext(OptionsContext):
    """The mailbox could not be used: unreachable (--unreachable-state), else CRITICAL."""

    context_name = "mailbox"

    def evaluate(self, metric, resource):
        error = metric.value
        if error is None:
            return self.result_cls(nagiosplugin.Ok, "", metric)
        label = self.options.mailbox.label
        state = states.failure_state(error.kind, self.options.unreachable_state)
        return self.result_cls(state, f"mailbox {label}: {one_line(error.detail, 120)}", metric)


class SkippedContext(OptionsContext):
    """Entries of the mailbox that are no message it can read (a named pipe, a symbolic
    link loop in a Maildir): skipped, never opened; WARNING, since a probe could hide
    behind such a store."""

    context_name = "mailbox_skipped"

    def evaluate(self, metric, resource):
        skipped = metric.value
        if not skipped:
            return self.result_cls(nagiosplugin.Ok, "", metric)
        more = f" (+{len(skipped) - 1} more)" if len(skipped) > 1 else ""
        return self.result_cls(nagiosplugin.Warn, f"mailbox {self.options.mailbox.label}: "
                                                  f"{one_line(skipped[0], 120)}, skipped{more}",
                               metric)


# -- summary ---------------------------------------------------------------------------


class RoundTripSummary(ResourceSummary):
    def headline(self, results):
        res = self.resource
        outcomes = res.outcomes
        if not outcomes:
            return ""
        opts = res.options
        back = [o for o in outcomes if o.status == BACK]
        labels = {o.label for o in outcomes}
        through = f"through {opts.submit[0]} (submission: no per-MX split)" \
            if opts.submit else f"via {len(labels)} MX endpoints of {opts.domain}" \
            if len(labels) > 1 else f"via {outcomes[0].label}"
        if opts.state_file and not back:
            flying = sum(o.status in (SENT, IN_FLIGHT) for o in outcomes)
            if res.first_run:
                return f"first run: {flying} probes sent {through}, results on the next run"
            return f"{flying} probes in flight {through}"
        slowest = max(back, key=lambda o: o.roundtrip) if back else None
        if len(outcomes) == 1 and slowest is not None:
            return f"probe back {through} {_with_note(*took(slowest, 'in '))}, " \
                   f"{len(slowest.hops)} hops"
        count = f"{len(back)} probes" if len(back) == len(outcomes) else \
            f"{len(back)} of {len(outcomes)} probes"
        if slowest is None:
            return f"no probe back {through}"
        return f"{count} back {through}, slowest {slowest.label} " \
               f"{_with_note(*took(slowest))}"

    def details(self, results):
        res = self.resource
        lines = []
        if res.options.helo_note:
            lines.append(f"note: {res.options.helo_note}")
        if res.options.submit:
            lines.append("note: sent through submission, so the probe's MX is the domain's "
                         "choice: no per-MX result")
        for outcome in res.outcomes:
            lost_now = outcome.status == IN_FLIGHT and lost(outcome, res.options, res)
            lines.extend(describe_outcome(outcome, self.verbosity, LOST if lost_now else None))
        if res.deleted or res.stale_deleted:
            lines.append(f"mailbox {res.options.mailbox.label}: deleted {res.deleted} "
                         f"probe(s) found" + (f" and {res.stale_deleted} stale probe(s) of "
                                              "earlier runs" if res.stale_deleted else ""))
        if self.verbosity >= 3 and res.transcript:
            lines.append("mailbox dialogue:")
            lines.extend("  " + printable(line, 200) for line in res.transcript)
        return lines


def took(outcome: ProbeOutcome, lead: str = "") -> tuple:
    """(how long the probe took, a note on it or None), never a negative time.

    `lead` ("in ") goes before a duration. An arrival dated to the second (IMAP
    INTERNALDATE, a Received date) in the second the probe was sent in is
    "within 1s"; one dated before that second is the clocks' doing.
    """
    seconds = outcome.roundtrip
    if not outcome.to_second:
        return f"{lead}{seconds:.3f}s", None
    if seconds < 0:
        return f"dated {-seconds:.0f}s before it was sent", "clock skew"
    if seconds < 1:
        return "within 1s", "the mailbox dates arrivals to the second"
    return f"{lead}{seconds:.0f}s", None


def _with_note(text: str, note: str | None) -> str:
    return f"{text} ({note})" if note else text


def describe_outcome(outcome: ProbeOutcome, verbosity: int, status: str | None = None) -> list:
    """The long output's lines on a probe; `status` says what became of it where the
    Contexts, not the probe, decided it (LOST)."""
    from check_smtp_posture import received

    head = f"{outcome.label}: {status or outcome.status}"
    if outcome.status in (BACK, JUNK) and outcome.roundtrip is not None:
        text, note = took(outcome, "in ")
        head += f" {text} ({printable(outcome.folder or '', 40)}"
        head += f"; {note}" if note else ""
        head += ", found by the token in the text)" if outcome.matched != "header" else ")"
        head += f", {len(outcome.hops)} hops"
        skewed = [d for d in outcome.hops if d.skewed]
        if skewed:
            head += f", clock skew at {len(skewed)} hop(s)"
    elif outcome.age is not None:
        head += f" ({outcome.age:.0f}s since sent)"
    lines = [head]
    if outcome.auth:
        from check_smtp_posture import authresults

        lines.append("  Authentication-Results: " + printable(authresults.describe(outcome.auth),
                                                              200))
    if verbosity >= 2:
        for delay in outcome.hops:
            lines.append("  hop " + received.describe_hop(delay))
    if verbosity >= 3 and outcome.session is not None:
        lines.append("  SMTP transcript:")
        lines.extend("    " + line for line in outcome.session.transcript.lines())
    return lines
