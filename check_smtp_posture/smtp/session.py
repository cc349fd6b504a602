"""A whole SMTP session against one endpoint, planned up front, returned as facts.

The plan says what to try (STARTTLS, AUTH, MAIL/RCPT, DATA, extra commands);
the result records what happened: every reply, every phase time, the TLS
facts, where the dialogue stopped and why. Nothing here judges: a check's
Contexts decide what a 454 to STARTTLS or a missing AUTH means.
"""

from __future__ import annotations

import time
from collections import namedtuple

from check_smtp_posture.deadline import Deadline
from check_smtp_posture.failures import CLOSED
from check_smtp_posture.smtp.address import path
from check_smtp_posture.smtp.dialogue import Extensions, SmtpDialogue
from check_smtp_posture.smtp.errors import SmtpError, SmtpProtocolError
from check_smtp_posture.smtp.reply import Reply
from check_smtp_posture.smtp.transcript import Transcript
from check_smtp_posture.targets import Endpoint

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (or ssl) to run
if TYPE_CHECKING:
    import ssl

STARTTLS_AUTO, STARTTLS_NEVER = "auto", "never"
# what SessionResult.withheld says the client kept back for want of TLS
WITHHELD_AUTH = "auth"  # AUTH: the password would have crossed the network in clear
WITHHELD_ALL = "all"  # everything after EHLO (the plan requires TLS)


class SaslCredentials(namedtuple("SaslCredentials", ("mechanism", "user", "password",
                                                       "authzid"), defaults=("",))):
    """Who to authenticate as; the password never shows in a repr."""

    __slots__ = ()

    def __repr__(self) -> str:
        return (f"SaslCredentials(mechanism={self.mechanism!r}, user={self.user!r}, "
                f"authzid={self.authzid!r})")


class Probe(namedtuple("Probe", ("name", "sender", "recipient"))):
    """A mail transaction that never reaches DATA: MAIL, RCPT if MAIL was accepted, RSET.

    `sender` and `recipient` are sent exactly as given, in one pair of brackets:
    relay probes depend on odd paths reaching the server byte for byte. A
    `recipient` of None asks about the sender alone: MAIL, then RSET.
    """

    __slots__ = ()


class ProbeResult:
    """What one Probe got: each reply, None for a command not (or not yet) answered."""

    __slots__ = ("probe", "connection", "mail", "rcpt", "rset")

    def __init__(self, probe: Probe, connection: int, mail: Reply | None = None,
                 rcpt: Reply | None = None, rset: Reply | None = None):
        self.probe = probe
        self.connection = connection  # 1 for the first connection of the endpoint, 2 after...
        self.mail = mail
        self.rcpt = rcpt
        self.rset = rset

    def __repr__(self) -> str:
        return (f"ProbeResult(probe={self.probe!r}, connection={self.connection!r}, "
                f"mail={self.mail!r}, rcpt={self.rcpt!r}, rset={self.rset!r})")

    @property
    def answered(self) -> bool:
        """The server gave its verdict: RCPT answered, or MAIL refused (MAIL answered, for
        a probe without recipient). A 421 is none, whatever command it came after: the
        server is closing the channel (RFC 5321 §3.8), the probe is still to be asked."""
        reply = self.verdict
        if reply is None or reply.code == 421:
            return False
        return self.rcpt is not None or not reply.positive or self.probe.recipient is None

    @property
    def verdict(self) -> Reply | None:
        """The reply that decides: RCPT's, or MAIL's when MAIL was refused."""
        return self.rcpt if self.rcpt is not None else self.mail


#: SessionPlan's fields after helo_name, with their defaults
_PLAN_DEFAULTS = {
    "starttls": STARTTLS_AUTO,  # auto: use when offered; never: don't
    "implicit_tls": False,
    "require_tls": False,  # without TLS, stop after EHLO: nothing more goes out in clear
    # QUIT as soon as TLS is up, without the EHLO after it (RFC 3207 §4.2 says SHOULD):
    # a round trip saved where the certificate is all the session is for
    "tls_only": False,
    "plaintext_auth": False,  # send AUTH even without TLS
    "tls_context": None,  # a function that makes the ssl.SSLContext; None: tls.client_context
    "sasl": None,  # SaslCredentials
    "commands": (),  # extra command lines (tuple of str)
    "mail_from": None,  # None: no mail transaction
    "rcpt_to": (),  # tuple of str
    "send_data": False,
    "message": b"",
    "proxy": None,  # proxy.ProxySpec: send a PROXY header first
    "probes": (),  # tuple of Probe: after the commands, each ended with RSET
    "pipelining": False,  # send the probes in groups when the server offers PIPELINING
    "connection": 1,  # which connection to the endpoint this is (for ProbeResult)
}

#: most commands sent in one group: their lines (a few KB) fit the server's receive
#: buffer and their replies the client's, so neither side waits on the other's
#: reading while it writes (the deadlock RFC 2920 §3.1 warns of)
PIPELINE_LIMIT = 100


class SessionPlan(namedtuple("SessionPlan", ("helo_name", *_PLAN_DEFAULTS),
                             defaults=tuple(_PLAN_DEFAULTS.values()))):
    """What one session tries, decided before it starts; `_replace()` makes a variant."""

    __slots__ = ()


class SessionResult:
    """What one session got: replies, phase times, TLS facts, where and why it stopped."""

    __slots__ = ("endpoint", "transcript", "times", "replies", "rcpt_replies",
                 "command_replies", "probe_results", "closed_by_server", "withheld",
                 "failure", "stopped", "extensions", "extensions_tls", "helo_fallback",
                 "starttls_attempted", "tls", "peer_chain", "quit_failure")

    def __init__(self, endpoint: Endpoint, transcript: Transcript):
        self.endpoint = endpoint
        self.transcript = transcript
        self.times: dict = {}
        self.replies: dict = {}  # phase -> last Reply of that phase
        self.rcpt_replies: list = []  # [(recipient, Reply)]
        self.command_replies: list = []  # [(command, Reply)]
        self.probe_results: list = []  # [ProbeResult], in order
        self.closed_by_server: Reply | None = None  # a 421: the server said it was closing
        self.withheld: str | None = None  # WITHHELD_AUTH or WITHHELD_ALL: not sent without TLS
        self.failure: SmtpError | None = None  # no reply could be had (phase inside)
        self.stopped: str | None = None  # phase whose reply ended the dialogue early
        self.extensions: Extensions | None = None  # before TLS (or of the implicit-TLS session)
        self.extensions_tls: Extensions | None = None
        self.helo_fallback = False
        self.starttls_attempted = False
        self.tls = None  # tls.TlsSession when TLS was up
        self.peer_chain: list = []
        self.quit_failure: SmtpError | None = None

    @property
    def starttls_offered(self) -> bool:
        return self.extensions is not None and "STARTTLS" in self.extensions

    @property
    def auth_before_tls(self) -> tuple[str, ...]:
        """SASL mechanisms offered in clear text, before any TLS."""
        if self.tls is not None and self.extensions_tls is None:
            return ()  # implicit TLS: nothing was offered in clear text
        return self.extensions.auth_mechanisms if self.extensions else ()

    @property
    def final_extensions(self) -> Extensions | None:
        return self.extensions_tls or self.extensions


def run_session(endpoint: Endpoint, plan: SessionPlan, deadline: Deadline) -> SessionResult:
    """Run `plan` against `endpoint` within `deadline`; never raises SmtpError."""
    if plan.implicit_tls or plan.starttls != STARTTLS_NEVER:
        # A plan that may use TLS loads ssl before the clock starts: its import (7 ms)
        # is the plugin's start-up, not a phase of the server's; without TLS, no ssl.
        import ssl  # noqa: F401
    transcript = Transcript()
    result = SessionResult(endpoint, transcript)
    dialogue = SmtpDialogue(endpoint.address, endpoint.port, deadline, transcript=transcript)
    started = time.monotonic()
    try:
        dialogue.connect(proxy=plan.proxy)
        if plan.implicit_tls:
            dialogue.start_tls(lambda: _context(plan), endpoint.name)
        quit_sent = _converse(dialogue, plan, result)
        # QUIT only after a dialogue that ended on a reply: after a transport
        # failure or a 421 there is nobody left to say goodbye to.
        if result.closed_by_server is None and not quit_sent:
            _quit(result, dialogue.quit)
    except SmtpError as exc:
        result.failure = exc
    finally:
        dialogue.close()
        # In the order the phases happened: DNS (done by the caller) first.
        result.times = {"dns": endpoint.dns_time} if endpoint.dns_time is not None else {}
        result.times.update(dialogue.times)
        result.times["total"] = time.monotonic() - started
        result.helo_fallback = dialogue.helo_fallback
        result.tls = dialogue.tls
        result.peer_chain = dialogue.peer_chain
    return result


def run_probes(endpoint: Endpoint, plan: SessionPlan, deadline: Deadline) -> list[SessionResult]:
    """`plan.probes` against `endpoint`, reconnecting when the server hangs up on them.

    Servers drop a client after a number of refusals (Postfix's
    smtpd_hard_error_limit), or say 421 where a probe's reply was due; the probes
    left, the unanswered one first, go to a new connection. One session per
    connection, in order. Reconnecting stops when a connection answered no probe,
    or the deadline is reached.
    """
    sessions: list[SessionResult] = []
    left = plan.probes
    while True:
        result = run_session(endpoint, plan._replace(probes=left, connection=len(sessions) + 1),
                             deadline)
        sessions.append(result)
        answered = 0
        for outcome in result.probe_results:
            if not outcome.answered:
                break
            answered += 1
        left = left[answered:]
        hung_up = result.closed_by_server is not None or (
            result.failure is not None and result.failure.kind == CLOSED)
        if not left or not answered or not hung_up or deadline.expired:
            return sessions


def _quit(result: SessionResult, ask) -> None:
    """QUIT's reply from `ask()`; how it failed, if it did."""
    try:
        result.replies["quit"] = ask()
    except SmtpProtocolError as exc:
        result.failure = exc  # replies out of step: nothing read before is trusted
    except SmtpError as exc:
        result.quit_failure = exc


def _converse(dialogue: SmtpDialogue, plan: SessionPlan, result: SessionResult) -> bool:
    """The dialogue up to QUIT; returns early on a refusing reply.

    True when QUIT went out with the last group of pipelined probes (and its
    reply is in), False when it is still to be sent.
    """

    def closing(reply: Reply | None) -> bool:
        # 421: the server is closing the channel (RFC 5321 §3.8): nothing more is sent,
        # not even RSET or QUIT.
        if reply is not None and reply.code == 421:
            result.closed_by_server = reply
            return True
        return False

    def step(phase: str, reply: Reply) -> bool:
        result.replies[phase] = reply
        if reply.positive:
            return True
        result.stopped = phase
        closing(reply)
        return False

    banner = dialogue.banner()
    result.replies["banner"] = banner
    if banner.code != 220:  # 221 or 250 is no greeting (RFC 5321 §4.2.5): nothing follows
        result.stopped = "banner"
        closing(banner)
        return False
    if not step("ehlo", dialogue.ehlo(plan.helo_name)):
        return False
    result.extensions = dialogue.extensions
    if plan.starttls != STARTTLS_NEVER and not plan.implicit_tls and result.starttls_offered:
        result.starttls_attempted = True
        if not step("starttls", dialogue.starttls()):
            return False
        dialogue.start_tls(lambda: _context(plan), result.endpoint.name)
        if plan.tls_only:
            return False
        if not step("ehlo_tls", dialogue.ehlo(plan.helo_name)):
            return False
        result.extensions_tls = dialogue.extensions
    if dialogue.tls is None and plan.require_tls:
        result.withheld = WITHHELD_ALL
        return False
    if plan.sasl is not None and dialogue.tls is None and not plan.plaintext_auth:
        # The password would cross the network readable by anyone on the path.
        result.withheld = WITHHELD_AUTH
        return False
    if plan.sasl is not None:
        offered = result.final_extensions.auth_mechanisms if result.final_extensions else ()
        if plan.sasl.mechanism.upper() not in offered:
            result.stopped = "auth"
            return False
        creds = plan.sasl
        if not step("auth", dialogue.auth(creds.mechanism, creds.user, creds.password,
                                          creds.authzid)):
            return False
    for command in plan.commands:
        result.command_replies.append((command, dialogue.command("command", command)))
        if closing(result.command_replies[-1][1]):
            return False
    extensions = result.final_extensions
    if plan.probes and plan.pipelining and extensions is not None and "PIPELINING" in extensions:
        return _pipelined_probes(dialogue, plan, result, closing)
    for probe in plan.probes:
        outcome = ProbeResult(probe, plan.connection)
        result.probe_results.append(outcome)  # before asking: a failure keeps what came
        outcome.mail = dialogue.mail(probe.sender)
        if outcome.mail.positive and probe.recipient is not None:
            outcome.rcpt = dialogue.rcpt(probe.recipient)
        if closing(outcome.verdict):
            return False
        outcome.rset = dialogue.rset()
        if closing(outcome.rset):
            return False
    if plan.mail_from is None:
        return False
    if not step("mail", dialogue.mail(plan.mail_from)):
        if result.closed_by_server is None:
            result.replies["rset"] = dialogue.rset()
        return False
    accepted = 0
    for recipient in plan.rcpt_to:
        reply = dialogue.rcpt(recipient)
        result.rcpt_replies.append((recipient, reply))
        result.replies["rcpt"] = reply
        accepted += reply.positive
        if not reply.positive and result.stopped is None:
            result.stopped = "rcpt"
        if closing(reply):
            return False
    if plan.send_data and plan.rcpt_to and accepted == len(plan.rcpt_to):
        data_reply, body_reply = dialogue.data(plan.message)
        result.replies["data"] = data_reply
        if body_reply is None:  # DATA not answered with 354
            result.stopped = result.stopped or "data"
        else:
            step("body", body_reply)
    else:
        # Nothing is delivered unless asked for: end the transaction politely.
        result.replies["rset"] = dialogue.rset()
    return False


def _pipelined_probes(dialogue: SmtpDialogue, plan: SessionPlan, result: SessionResult,
                      closing) -> bool:
    """The probes in groups of MAIL, RCPT and RSET (RFC 2920), judged as in lock step.

    Every probe's commands go out without waiting: RCPT with its MAIL, as RFC
    2920 lets a client do, since nothing MAIL's reply says changes what follows
    (a server that refused MAIL answers the RCPT with 503, no transaction: read,
    and not the probe's verdict, which is MAIL's refusal as in lock step). A
    group ends at PIPELINE_LIMIT commands; the last one carries QUIT when nothing
    follows the probes. What ends a group early is the server: a 421 (nothing
    after it is answered) or a closed connection, after which run_probes asks
    the probes left on a new connection. Returns True when QUIT went out.
    """
    per_group = max(1, PIPELINE_LIMIT // 3)
    groups = [plan.probes[i:i + per_group] for i in range(0, len(plan.probes), per_group)]
    for number, probes in enumerate(groups, 1):
        commands = []
        for probe in probes:
            commands.append(("mail", f"MAIL FROM:{path(probe.sender)}"))
            if probe.recipient is not None:
                commands.append(("rcpt", f"RCPT TO:{path(probe.recipient)}"))
            commands.append(("rset", "RSET"))
        ends = number == len(groups) and plan.mail_from is None
        if ends:
            commands.append(("quit", "QUIT"))
        replies = dialogue.pipeline(commands)
        for probe in probes:
            outcome = ProbeResult(probe, plan.connection)
            result.probe_results.append(outcome)
            outcome.mail = next(replies)
            if closing(outcome.mail):
                return False
            if probe.recipient is not None:
                rcpt = next(replies)
                if outcome.mail.positive:
                    outcome.rcpt = rcpt
                if closing(rcpt):
                    return False
            outcome.rset = next(replies)
            if closing(outcome.rset):
                return False
        if ends:
            _quit(result, replies.__next__)
            return True
    return False


def _context(plan: SessionPlan) -> ssl.SSLContext:
    if plan.tls_context is not None:
        return plan.tls_context()
    from check_smtp_posture import tls

    return tls.client_context()
