"""check_mail_roundtrip: the probe. RoundTrip.probe() sends one probe message per MX
endpoint and looks for what comes back in the mailbox; it gathers facts, one
ProbeOutcome per endpoint and the mailbox's failure if any, for the Contexts of
roundtrip_contexts.py to judge.
"""

from __future__ import annotations

import time

import nagiosplugin

from check_smtp_posture import probemail, targets
from check_smtp_posture.deadline import Deadline
from check_smtp_posture.nagios import cli, perfdata

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing to run
if TYPE_CHECKING:
    from check_smtp_posture.plugins.check_mail_roundtrip import Options

#: seconds kept back from the wait for cleanup and the report
CLEANUP_RESERVE = 2.0

# what became of a probe (UNCHECKED: sent, but the mailbox failed before it was found;
# LOST: not back when a synchronous run ended; IN_FLIGHT: an earlier run's, not back yet,
# `age` seconds after it was sent: ProbeContext says whether that is late or lost)
BACK, JUNK, LOST, IN_FLIGHT, SENT, SEND_FAILED, UNCHECKED = (
    "back", "junk", "lost", "in flight", "sent", "send failed", "not looked for")


# -- facts -------------------------------------------------------------------------


class ProbeOutcome:
    """What became of the probe through one endpoint (or of an earlier run's probe)."""

    __slots__ = ("label", "key", "status", "token", "sent", "roundtrip", "to_second",
                 "folder", "hops", "auth", "session", "matched", "age", "given_up",
                 "signatures")

    def __init__(self, label: str, key: str, status: str, token: str | None = None,
                 sent: float | None = None):
        self.label = label
        self.key = key  # the endpoint's perfdata.endpoint_keys() key when it was sent
        self.status = status
        self.token = token
        self.sent = sent
        self.roundtrip: float | None = None
        self.to_second = False  # the roundtrip ends at a time of whole seconds
        self.folder: str | None = None
        self.hops: list = []  # received.HopDelay, oldest first
        self.auth: list = []  # authresults.Verdict
        self.session = None  # the SessionResult of the sending
        self.matched: str | None = None
        self.age: float | None = None  # async: seconds since an unanswered probe was sent
        self.given_up = False  # async: no longer looked for, the state file forgets it
        self.signatures: list = []  # (d=, s=) of the DKIM-Signature fields it came back with


class RoundTrip(nagiosplugin.Resource):
    def __init__(self, options: Options, deadline: Deadline):
        self.options = options
        self.deadline = deadline
        self.resolution: targets.Resolution | None = None
        self.outcomes: list[ProbeOutcome] = []
        self.mailbox_error = None
        self.token: str | None = None  # the OAuth access token of this run
        self.token_cached = False
        self.transcript: list = []  # the mailbox dialogue, for -vvv
        self.deleted = 0
        self.stale_deleted = 0
        self.first_run = False
        self.state_problem = None
        self.keys: dict = {}  # endpoint label -> its perfdata.endpoint_keys() key
        self.several = False  # a run over several endpoints (-D, or a --submit host's)
        self.worst: dict = {}  # metric name -> perfdata.Worst, in a run over several endpoints

    def probe(self):
        opts = self.options
        endpoints = self._endpoints()
        if self.resolution is not None:
            yield nagiosplugin.Metric("mx", self.resolution, context="mx")
        if not endpoints:
            return
        self.keys = dict(zip((e.label for e in endpoints), perfdata.endpoint_keys(endpoints)))
        self.several = len(endpoints) > 1 or not opts.submit
        if opts.oauth is not None:
            error = self._get_token()
            yield nagiosplugin.Metric("oauth", error, context="oauth")
            if error is not None:  # nothing is sent that could not be collected
                return
        box = self._open_mailbox()
        if box is None:  # nothing is sent that could not be collected
            yield nagiosplugin.Metric("mailbox", self.mailbox_error, context="mailbox")
            return
        try:
            if opts.state_file:
                yield from self._asynchronous(box, endpoints)
            else:
                yield from self._synchronous(box, endpoints)
        finally:
            box.close()
        yield nagiosplugin.Metric("mailbox", self.mailbox_error, context="mailbox")
        yield nagiosplugin.Metric("mailbox_skipped", list(box.skipped),
                                  context="mailbox_skipped")

    # -- the two modes -------------------------------------------------------------
    def _synchronous(self, box, endpoints):
        sent = self._send(endpoints)
        pending = {o.token: o for o in sent if o.status == SENT}
        self._collect(box, pending, wait=True)
        for outcome in pending.values():
            if outcome.status == SENT:
                outcome.age = time.time() - outcome.sent
                # a mailbox that failed was not looked in: the probe is not known lost
                outcome.status = UNCHECKED if self.mailbox_error else LOST
        self.outcomes = sent
        yield from self._metrics()

    def _asynchronous(self, box, endpoints):
        from check_smtp_posture.nagios.statefile import StateFile

        opts = self.options
        with StateFile(opts.state_file, self.deadline) as state:
            earlier = self._load(state)
            self.first_run = not earlier and state.problem is None and not state.data.get(
                "seen")
            pending = {token: outcome for token, outcome in earlier.items()}
            self._collect(box, pending, wait=False)
            now = time.time()
            for outcome in pending.values():
                if outcome.status == SENT:
                    outcome.age = now - outcome.sent
                    outcome.status = IN_FLIGHT
                    # looked for until the -c end (while the mailbox could be looked in):
                    # the verdict on it is ProbeContext's, this is only what is kept
                    outcome.given_up = outcome.age > opts.lost_after and \
                        self.mailbox_error is None
            # probes whose tokens cannot be kept could never be collected: none are sent
            sent = self._send(endpoints) if state.usable else []
            if state.usable:
                state.data["seen"] = True
                state.data[opts.domain] = {
                    o.token: {"label": o.label, "key": o.key, "sent": o.sent}
                    for o in list(pending.values()) + sent
                    if o.status in (SENT, IN_FLIGHT) and not o.given_up}
                self._remember_selectors(state, pending.values(), now)
        self.state_problem = state.problem
        self.outcomes = _latest_per_endpoint(list(pending.values()), sent)
        yield nagiosplugin.Metric("state_file", self.state_problem, context="state_file")
        yield from self._metrics()

    @staticmethod
    def _remember_selectors(state, outcomes, now: float) -> None:
        """The DKIM selectors the probes came back signed with, for check_dkim
        (--from-roundtrip-state): signing domain -> selector -> when last seen."""
        from check_smtp_posture.dkim import ROUNDTRIP_STATE_KEY

        seen = state.data.get(ROUNDTRIP_STATE_KEY)
        if not isinstance(seen, dict) or not all(isinstance(v, dict) for v in seen.values()):
            seen = {}
        for outcome in outcomes:
            for domain, selector in outcome.signatures:
                seen.setdefault(domain, {})[selector] = int(now)
        if seen:
            state.data[ROUNDTRIP_STATE_KEY] = seen

    def _load(self, state) -> dict:
        entries = state.data.get(self.options.domain, {})
        if not isinstance(entries, dict):
            state.discard(self.options.domain, "not a table of probes")
            return {}
        earlier = {}
        for token, entry in entries.items():
            try:
                label = str(entry["label"])
                outcome = ProbeOutcome(label, self._key(label, entry.get("key")), SENT, token,
                                       float(entry["sent"]))
            except (AttributeError, KeyError, TypeError, ValueError):
                state.discard(self.options.domain, f"probe {token!r} is malformed")
                return {}
            earlier[token] = outcome
        return earlier

    def _key(self, label: str, stored) -> str:
        """The key of an earlier run's probe: the one stored with it, else (a state file of
        a release before issue 24, which stored a label prefix with dots) the key of this
        run's endpoint of that label, else the label written as a perfdata label."""
        if stored is not None:
            return perfdata.label(str(stored)) or perfdata.label(label)
        return self.keys.get(label) or perfdata.label(label)

    # -- sending -----------------------------------------------------------------------
    def _endpoints(self) -> tuple:
        opts = self.options
        factory = lambda: cli.dns_client(opts, self.deadline)  # noqa: E731
        if opts.submit:
            host, port = opts.submit
            self.resolution = targets.resolve_target(host, None, factory, family=opts.family)
            return self.resolution.endpoints(port, host if not _is_literal(host) else None)
        self.resolution = targets.resolve_target(None, opts.domain, factory,
                                                 family=opts.family,
                                                 concurrency=opts.concurrency)
        return self.resolution.endpoints(opts.port, None)

    def _send(self, endpoints) -> list:
        from check_smtp_posture.fanout import each_endpoint

        opts = self.options
        reserve = min(self.deadline.remaining() / 2, 15.0)  # the rest is for the wait

        def send(endpoint, deadline):
            from check_smtp_posture.smtp.session import run_session

            label = endpoint.label
            sent = time.time()
            token = probemail.new_token(sent)
            outcome = ProbeOutcome(label, self.keys[label], SENT, token, sent)
            message = probemail.build(token=token, domain=opts.domain, mx_label=label,
                                      sender=opts.sender, recipient=opts.to,
                                      helo_name=opts.helo_name, sent=sent)
            outcome.session = run_session(endpoint, self._plan(message), deadline)
            result = outcome.session
            if result.failure is not None or result.stopped is not None or \
                    result.withheld is not None or "body" not in result.replies:
                outcome.status = SEND_FAILED
            return outcome

        sending = self.deadline.share(reserve)
        return each_endpoint(endpoints, send, sending, opts.concurrency)

    def _plan(self, message: bytes):
        from check_smtp_posture.smtp.session import STARTTLS_AUTO, SessionPlan

        opts = self.options
        context = None
        if opts.submit:
            from check_smtp_posture.tls import verified_context

            context = lambda: verified_context(opts.ca_file)  # noqa: E731
        sasl = opts.sasl
        if sasl is not None and sasl.mechanism in cli.OAUTH_SASL_MECHANISMS:
            sasl = sasl._replace(password=self.token)
        return SessionPlan(helo_name=opts.helo_name, starttls=STARTTLS_AUTO,
                           implicit_tls=opts.submit_implicit_tls,
                           require_tls=opts.sasl is not None, tls_context=context,
                           sasl=sasl, mail_from=opts.sender, rcpt_to=(opts.to,),
                           send_data=True, message=message)

    # -- OAuth ---------------------------------------------------------------------------
    def _get_token(self):
        """Fetch (or take from the cache) the access token; the oauth.OAuthError, or None."""
        from check_smtp_posture import oauth

        try:
            self.token, self.token_cached = oauth.token_for_run(self.options.oauth,
                                                                self.options, self.deadline)
        except oauth.OAuthError as exc:
            return exc
        self.transcript.append(oauth.transcript_line(self.options.oauth, self.token_cached))
        return None

    # -- the mailbox -------------------------------------------------------------------
    def _open_mailbox(self):
        from check_smtp_posture import mailbox

        opts = self.options
        spec = opts.mailbox
        try:
            address = None
            if spec.host is not None and not _is_literal(spec.host):
                address = self._mailbox_address(spec.host)
            oauth = opts.mailbox_auth != mailbox.PASSWORD
            return mailbox.open_mailbox(
                spec, address=address, password=self.token if oauth else opts.mailbox_password,
                auth=opts.mailbox_auth,
                ca_file=opts.mailbox_ca_file, deadline=self.deadline,
                junk_folders=opts.junk_folders, idle=opts.idle,
                poll_interval=opts.poll_interval, transcript=self.transcript)
        except mailbox.MailboxError as exc:
            self.mailbox_error = exc
            return None

    def _mailbox_address(self, host: str) -> str:
        from check_smtp_posture.failures import CONNECT
        from check_smtp_posture.mailbox import MailboxError

        opts = self.options
        found = targets.resolve_hosts(cli.dns_client(opts, self.deadline), [host],
                                      family=opts.family)[0]
        addresses = found.addresses
        if not addresses:
            problem = found.targets[0].describe_problem() if found.targets else "no address"
            raise MailboxError(CONNECT, f"{host}: {problem}")
        return addresses[0]

    def _collect(self, box, pending: dict, *, wait: bool) -> None:
        """Find pending probes (and stale ones of ours); record, then delete them."""
        from check_smtp_posture.mailbox import MailboxError

        opts = self.options
        needle = probemail.header_needle(opts.domain)
        stale: dict = {}
        found: list = []
        try:
            while True:
                waiting = {t for t, o in pending.items() if o.status == SENT}
                for seen in box.scan(needle, waiting):
                    facts = probemail.facts(seen.header, seen.matched)
                    outcome = pending.get(facts.token)
                    if outcome is not None and outcome.status == SENT:
                        self._record(outcome, seen, facts)
                        found.append(seen)
                    elif outcome is None and self._stale(facts):
                        stale[seen.ref] = seen
                left = self.deadline.remaining() - CLEANUP_RESERVE
                if not wait or left <= 0 or not any(o.status == SENT for o in pending.values()):
                    break
                box.wait(left)
            self.deleted = box.delete(found) if found else 0
            self.stale_deleted = box.delete(list(stale.values())) if stale else 0
        except MailboxError as exc:
            self.mailbox_error = exc

    def _stale(self, facts) -> bool:
        """Our own probe of an earlier run: our domain and sender, older than lost."""
        opts = self.options
        sent = facts.sent
        return (facts.domain == opts.domain and facts.sender == opts.sender.lower()
                and sent is not None and time.time() - sent > opts.lost_after)

    def _record(self, outcome: ProbeOutcome, seen, facts) -> None:
        from check_smtp_posture import clock, received

        outcome.status = JUNK if seen.junk else BACK
        outcome.folder = seen.folder
        outcome.matched = seen.matched
        chain = received.hops(probemail.field_values(seen.header, "Received"))
        sent_at = clock.utc(outcome.sent)
        outcome.hops = received.hop_delays(chain, sent_at)
        arrival = None
        if self.options.state_file:  # found runs after it came: when the store took it
            if seen.arrived is not None:
                arrival = clock.utc(seen.arrived)
            elif chain and chain[-1].timestamp is not None:
                arrival = chain[-1].timestamp
        if arrival is None:
            outcome.roundtrip = seen.noticed - outcome.sent
        else:  # INTERNALDATE and Received: dates are to the second
            outcome.roundtrip = received.seconds_between(sent_at, arrival)
            outcome.to_second = arrival.microsecond == 0
        if self.options.state_file:
            from check_smtp_posture import dkim

            outcome.signatures = dkim.signature_selectors(
                probemail.field_values(seen.header, "DKIM-Signature"))
        values = probemail.field_values(seen.header, "Authentication-Results")
        if values:
            from check_smtp_posture import authresults

            outcome.auth = authresults.verdicts(values)

    # -- metrics -------------------------------------------------------------------------
    def _metrics(self):
        several = self.several
        for outcome in self.outcomes:
            # one endpoint may have a lost probe and one that came back: two names
            kind = "lost" if outcome.status == LOST or outcome.given_up else \
                "send" if outcome.status == SEND_FAILED else "probe"
            yield nagiosplugin.Metric(perfdata.label(outcome.key if several else "", kind),
                                      outcome, context="probe")
        # the endpoints whose probe has a result (an asynchronous run's probe in flight
        # has none yet: a first run counts nothing)
        decided: dict = {}
        for outcome in self.outcomes:
            if outcome.status not in (SENT, IN_FLIGHT) or outcome.given_up:
                decided.setdefault(outcome.label, []).append(outcome)
        yield from perfdata.run_metrics(
            [o.label for o in self.outcomes], [measured(o) for o in self.outcomes], MEASURES,
            worst=self.worst if several else {},
            oks=[came_back(found) for found in decided.values()] if several and decided
            else None,
            keys=[o.key for o in self.outcomes] if self.options.perfdata_per_endpoint else None)


#: what check_mail_roundtrip measures of the probe through each endpoint, and the run's
#: worst: the slowest round trip (-w/-c), the most hops, the slowest hop
MEASURES = (
    perfdata.Measure("roundtrip_time", perfdata.slowest, "roundtrip", "s", 0),
    perfdata.Measure("hops", perfdata.slowest, min=0),
    perfdata.Measure("slowest_hop_time", perfdata.slowest, uom="s", min=0))


def measured(outcome: ProbeOutcome) -> dict:
    """The values of MEASURES of a probe that came back (none of one that did not)."""
    from check_smtp_posture import received

    if outcome.status not in (BACK, JUNK) or outcome.roundtrip is None:
        return {}
    values = {"roundtrip_time": round(max(0.0, outcome.roundtrip), 6),
              "hops": len(outcome.hops)}
    slowest = received.slowest(outcome.hops)
    if slowest is not None and slowest.delay is not None:
        values["slowest_hop_time"] = round(max(0.0, slowest.delay), 6)
    return values


def came_back(outcomes) -> bool:
    """The probes with a result of one endpoint: one came back to the inbox, none was
    lost or failed to go."""
    return any(o.status == BACK for o in outcomes) and not any(
        o.status in (LOST, SEND_FAILED) or o.given_up for o in outcomes)


def _latest_per_endpoint(earlier: list, sent: list) -> list:
    """What an asynchronous run reports: per endpoint, the newest probe that came back
    and the newest one given up; a probe in flight where none came back; this run's
    sending failures; and this run's probes where nothing else is known (the first run)."""

    def newest(outcomes, statuses, given_up=False):
        chosen: dict = {}
        for outcome in sorted(outcomes, key=lambda o: o.sent):
            if outcome.status in statuses and outcome.given_up == given_up:
                chosen[outcome.label] = outcome
        return chosen

    back = newest(earlier, (BACK, JUNK))
    lost = newest(earlier, (IN_FLIGHT,), given_up=True)
    flying = {label: o for label, o in newest(earlier, (IN_FLIGHT,)).items()
              if label not in back}
    known = set(back) | set(lost) | set(flying)
    return (list(back.values()) + list(lost.values()) + list(flying.values())
            + [o for o in sent if o.status == SEND_FAILED or o.label not in known])


def _is_literal(host: str) -> bool:
    from check_smtp_posture.names import is_ip_literal

    return is_ip_literal(host)
