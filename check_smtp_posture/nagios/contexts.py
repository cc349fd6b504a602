"""The family's shared Contexts: verdicts more than one plugin gives, decided once.

- `MxContext`: the MX verdict, one state per case of a targets.Resolution.
  Every plugin that resolves a domain's MX judges it here, so the same domain
  gets the same answer from every plugin (the table in check_smtp_posture(7)).
- `TimeContext`: a time in seconds with optional thresholds, written in fixed
  point (perfdata parsers choke on "7.9e-05").
- `EachEndpoint`: one endpoint's value of a metric whose run-wide worst another
  Context judges (--perfdata-per-endpoint, nagios/perfdata.py).
- `StateFileContext`: what a statefile.StateProblem means.
- `OAuthContext`: what an oauth.OAuthError (no access token) means.
- `OptionsContext`: the base of a plugin's Contexts that decide from its Options.

Counts that are perfdata only need no Context of their own: their Metrics use
nagiosplugin's built-in `default` context.
"""

from __future__ import annotations

import nagiosplugin
from nagiosplugin.state import Critical, Ok, Unknown, Warn

from check_smtp_posture import targets
from check_smtp_posture.nagios import states
from check_smtp_posture.sanitize import one_line

DEFAULT = "default"  # nagiosplugin's own perfdata-only context


class MxContext(nagiosplugin.Context):
    """The MX verdict (RFC 5321 §5.1, RFC 7505, RFC 2181 §10.3):

    ============================================  ===========================
    case                                          state
    ============================================  ===========================
    MX records, every target sane                 OK
    null MX alone                                 OK, CRITICAL if expect_mail
    null MX mixed with other MX                   CRITICAL
    no MX, address records (implicit MX)          WARNING
    no MX, no address records                     CRITICAL
    domain does not exist (NXDOMAIN)              CRITICAL
    MX lookup failed (timeout, SERVFAIL)          --unreachable-state
    target an IP literal, CNAME, NXDOMAIN, or
    without address                               CRITICAL
    target's address lookup failed                --unreachable-state
    ============================================  ===========================
    """

    def __init__(self, name: str = "mx", *, unreachable: str = "critical",
                 expect_mail: bool = False):
        super().__init__(name)
        self.unreachable = states.state(unreachable)
        self.expect_mail = expect_mail

    def evaluate(self, metric, resource):
        verdicts = self.verdicts(metric.value)
        bad = sorted((v for v in verdicts if v[0] != Ok), key=lambda v: -int(v[0]))
        if not bad:
            hint = "; ".join(h for _, h in verdicts) or None
            return self.result_cls(Ok, hint, metric)
        return self.result_cls(bad[0][0], "; ".join(h for _, h in bad), metric)

    def verdicts(self, res: targets.Resolution) -> list:
        """(state, phrase) for the MX set and for each target with a problem."""
        kind = res.kind
        out = []
        if kind == targets.NULL:
            out.append((Critical if self.expect_mail else Ok,
                        f"null MX (RFC 7505): {res.domain} accepts no mail"))
        elif kind == targets.NULL_MIXED:
            out.append((Critical, "null MX mixed with other MX records"))
        elif kind == targets.IMPLICIT:
            out.append((Warn, "no MX, implicit MX from address records"))
        elif kind == targets.NO_MAIL_HOST:
            out.append((Critical, "no MX and no address records"))
        elif kind == targets.NXDOMAIN:
            out.append((Critical, f"{res.domain} does not exist (NXDOMAIN)"))
        elif kind == targets.FAILED:
            out.append((self.unreachable, f"MX lookup failed: {one_line(res.detail, 100)}"))
        for target in res.problems:
            state = self.unreachable if target.problem == targets.LOOKUP_FAILED else Critical
            out.append((state, one_line(target.describe_problem(), 160)))
        return out


class OptionsContext(nagiosplugin.Context):
    """A Context that decides from the plugin's Options (`self.options`); the subclass
    names the context its Metrics ask for in `context_name`."""

    context_name = ""

    def __init__(self, options):
        super().__init__(self.context_name)
        self.options = options


def reply_state(reply, transient: str):
    """The state of a reply that refused what was asked: 4xx --transient-state, else CRITICAL."""
    return states.state(transient) if reply is not None and reply.transient else Critical


class TimeContext(nagiosplugin.ScalarContext):
    """A time in seconds: fixed-point perfdata, and a hint naming the metric when a range fires."""

    def performance(self, metric, resource):
        perf = super().performance(metric, resource)
        return perf._replace(value=f"{metric.value:.6f}")

    def evaluate(self, metric, resource):
        result = super().evaluate(metric, resource)
        if result.state != Ok:
            return self.result_cls(result.state, f"{metric.name} {metric.value:.3f}s"
                                   f"{worst_at(metric, resource)} ({result.hint})", metric)
        return result


def worst_at(metric, resource) -> str:
    """" at <endpoint>" when `metric` is the worst value of a run over several endpoints
    (perfdata.run_metrics recorded where it came from in `resource.worst`), else ""."""
    found = getattr(resource, "worst", {}).get(metric.name)
    return f" at {found.endpoint}" if found is not None else ""


class EachEndpoint(nagiosplugin.Context):
    """One endpoint's value of a metric (--perfdata-per-endpoint): perfdata with the
    thresholds of `of`, the Context that judges the run's worst value; no state of its own
    (that worst value has it)."""

    def __init__(self, of: nagiosplugin.Context):
        from check_smtp_posture.nagios.perfdata import each

        super().__init__(each(of.name))
        self.of = of

    def evaluate(self, metric, resource):
        return self.result_cls(Ok, None, metric)

    def performance(self, metric, resource):
        return self.of.performance(metric, resource)


def per_endpoint_contexts(contexts) -> list:
    """An EachEndpoint of every Context in `contexts` that writes thresholds (a
    ScalarContext), for a Check whose Resource may yield per-endpoint metrics."""
    return [EachEndpoint(c) for c in contexts if isinstance(c, nagiosplugin.ScalarContext)]


def seconds(name: str, value: float, context: str = "time") -> nagiosplugin.Metric:
    """A Metric of a time in seconds (unit s, minimum 0) for a TimeContext."""
    return nagiosplugin.Metric(name, round(value, 6), "s", min=0, context=context)


class StateFileContext(nagiosplugin.Context):
    """A state file that failed: corrupt (started afresh) WARNING; unwritable or locked UNKNOWN.

    UNKNOWN because it is a fault of the monitoring host, not of the monitored domain.
    """

    def __init__(self, name: str = "state_file"):
        super().__init__(name)

    def evaluate(self, metric, resource):
        from check_smtp_posture.nagios.statefile import CORRUPT

        problem = metric.value
        if problem is None:
            return self.result_cls(Ok, None, metric)
        state = Warn if problem.kind == CORRUPT else Unknown
        return self.result_cls(state, one_line(problem.describe(), 200), metric)


class OAuthContext(nagiosplugin.Context):
    """No OAuth access token (metric value: an oauth.OAuthError, None when there is one):
    the IdP unreachable (--unreachable-state); the grant, client or consent gone
    (CRITICAL, "re-authorise"); anything else the IdP did (CRITICAL). `who` names the
    account the token was for."""

    def __init__(self, who: str, unreachable: str):
        super().__init__("oauth")
        self.who = who
        self.unreachable = unreachable

    def evaluate(self, metric, resource):
        from check_smtp_posture import oauth

        error = metric.value
        if error is None:
            return self.result_cls(Ok, "", metric)
        detail = one_line(error.detail, 120)
        if error.kind == oauth.REAUTHORISE:
            return self.result_cls(Critical, f"OAuth: re-authorise {self.who}: {detail}",
                                   metric)
        state = states.state(self.unreachable) if error.kind == oauth.UNREACHABLE \
            else Critical
        return self.result_cls(state, f"OAuth for {self.who}: {detail}", metric)
