"""A whole SMTP session against one endpoint, planned up front, returned as facts.

The plan says what to try (STARTTLS, AUTH, MAIL/RCPT, DATA, extra commands);
the result records what happened: every reply, every phase time, the TLS
facts, where the dialogue stopped and why. Nothing here judges: a check's
Contexts decide what a 454 to STARTTLS or a missing AUTH means.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from check_smtp_posture.deadline import Deadline
from check_smtp_posture.smtp.dialogue import Extensions, SmtpDialogue
from check_smtp_posture.smtp.errors import SmtpError, SmtpProtocolError
from check_smtp_posture.smtp.reply import Reply
from check_smtp_posture.smtp.transcript import Transcript
from check_smtp_posture.targets import Endpoint

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (or ssl) to run
if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable

STARTTLS_AUTO, STARTTLS_NEVER = "auto", "never"
# what SessionResult.withheld says the client kept back for want of TLS
WITHHELD_AUTH = "auth"  # AUTH: the password would have crossed the network in clear
WITHHELD_ALL = "all"  # everything after EHLO (the plan requires TLS)


@dataclass(frozen=True)
class SaslCredentials:
    mechanism: str
    user: str
    password: str = field(repr=False)
    authzid: str = ""


@dataclass(frozen=True)
class Probe:
    """A mail transaction that never reaches DATA: MAIL, RCPT if MAIL was accepted, RSET.

    `sender` and `recipient` are sent exactly as given, in one pair of brackets:
    relay probes depend on odd paths reaching the server byte for byte.
    """

    name: str
    sender: str
    recipient: str


@dataclass
class ProbeResult:
    probe: Probe
    connection: int  # 1 for the first connection of the endpoint, 2 after a reconnect...
    mail: Reply | None = None
    rcpt: Reply | None = None
    rset: Reply | None = None

    @property
    def answered(self) -> bool:
        """The server gave its verdict: RCPT answered, or MAIL refused."""
        return self.rcpt is not None or (self.mail is not None and not self.mail.positive)

    @property
    def verdict(self) -> Reply | None:
        """The reply that decides: RCPT's, or MAIL's when MAIL was refused."""
        return self.rcpt if self.rcpt is not None else self.mail


@dataclass(frozen=True)
class SessionPlan:
    helo_name: str
    starttls: str = STARTTLS_AUTO  # auto: use when offered; never: don't
    implicit_tls: bool = False
    require_tls: bool = False  # without TLS, stop after EHLO: nothing more goes out in clear
    plaintext_auth: bool = False  # send AUTH even without TLS
    tls_context: Callable[[], ssl.SSLContext] | None = None
    sasl: SaslCredentials | None = None
    commands: tuple[str, ...] = ()
    mail_from: str | None = None  # None: no mail transaction
    rcpt_to: tuple[str, ...] = ()
    send_data: bool = False
    message: bytes = b""
    proxy: object = None  # proxy.ProxySpec: send a PROXY header first
    probes: tuple[Probe, ...] = ()  # after the commands, each ended with RSET
    connection: int = 1  # which connection to the endpoint this is (for ProbeResult)


@dataclass
class SessionResult:
    endpoint: Endpoint
    transcript: Transcript
    times: dict = field(default_factory=dict)
    replies: dict = field(default_factory=dict)  # phase -> last Reply of that phase
    rcpt_replies: list = field(default_factory=list)  # [(recipient, Reply)]
    command_replies: list = field(default_factory=list)  # [(command, Reply)]
    probe_results: list = field(default_factory=list)  # [ProbeResult], in order
    closed_by_server: Reply | None = None  # a 421: the server said it was closing
    withheld: str | None = None  # WITHHELD_AUTH or WITHHELD_ALL: not sent without TLS
    failure: SmtpError | None = None  # no reply could be had (phase inside)
    stopped: str | None = None  # phase whose reply ended the dialogue early
    extensions: Extensions | None = None  # before TLS (or of the implicit-TLS session)
    extensions_tls: Extensions | None = None
    helo_fallback: bool = False
    starttls_attempted: bool = False
    tls: object = None  # tls.TlsSession when TLS was up
    peer_chain: list = field(default_factory=list)
    quit_failure: SmtpError | None = None

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
    transcript = Transcript()
    result = SessionResult(endpoint, transcript)
    dialogue = SmtpDialogue(endpoint.address, endpoint.port, deadline, transcript=transcript)
    started = time.monotonic()
    try:
        dialogue.connect(proxy=plan.proxy)
        if plan.implicit_tls:
            dialogue.start_tls(lambda: _context(plan), endpoint.name)
        _converse(dialogue, plan, result)
        # QUIT only after a dialogue that ended on a reply: after a transport
        # failure or a 421 there is nobody left to say goodbye to.
        if result.closed_by_server is None:
            try:
                result.replies["quit"] = dialogue.quit()
            except SmtpProtocolError as exc:
                result.failure = exc  # replies out of step: nothing read before is trusted
            except SmtpError as exc:
                result.quit_failure = exc
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
    smtpd_hard_error_limit); the probes left, the unanswered one first, go to a
    new connection. One session per connection, in order. Reconnecting stops
    when a connection answered no probe, or the deadline is reached.
    """
    sessions: list[SessionResult] = []
    left = plan.probes
    while True:
        result = run_session(endpoint, replace(plan, probes=left, connection=len(sessions) + 1),
                             deadline)
        sessions.append(result)
        answered = 0
        for outcome in result.probe_results:
            if not outcome.answered:
                break
            answered += 1
        left = left[answered:]
        hung_up = result.closed_by_server is not None or (
            result.failure is not None and result.failure.kind == "closed")
        if not left or not answered or not hung_up or deadline.expired:
            return sessions


def _converse(dialogue: SmtpDialogue, plan: SessionPlan, result: SessionResult) -> None:
    """The dialogue up to (not including) QUIT; returns early on a refusing reply."""

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
        return
    if not step("ehlo", dialogue.ehlo(plan.helo_name)):
        return
    result.extensions = dialogue.extensions
    if plan.starttls != STARTTLS_NEVER and not plan.implicit_tls and result.starttls_offered:
        result.starttls_attempted = True
        if not step("starttls", dialogue.starttls()):
            return
        dialogue.start_tls(lambda: _context(plan), result.endpoint.name)
        if not step("ehlo_tls", dialogue.ehlo(plan.helo_name)):
            return
        result.extensions_tls = dialogue.extensions
    if dialogue.tls is None and plan.require_tls:
        result.withheld = WITHHELD_ALL
        return
    if plan.sasl is not None and dialogue.tls is None and not plan.plaintext_auth:
        # The password would cross the network readable by anyone on the path.
        result.withheld = WITHHELD_AUTH
        return
    if plan.sasl is not None:
        offered = result.final_extensions.auth_mechanisms if result.final_extensions else ()
        if plan.sasl.mechanism.upper() not in offered:
            result.stopped = "auth"
            return
        creds = plan.sasl
        if not step("auth", dialogue.auth(creds.mechanism, creds.user, creds.password,
                                          creds.authzid)):
            return
    for command in plan.commands:
        result.command_replies.append((command, dialogue.command("command", command)))
        if closing(result.command_replies[-1][1]):
            return
    for probe in plan.probes:
        outcome = ProbeResult(probe, plan.connection)
        result.probe_results.append(outcome)  # before asking: a failure keeps what came
        outcome.mail = dialogue.mail(probe.sender)
        if outcome.mail.positive:
            outcome.rcpt = dialogue.rcpt(probe.recipient)
        if closing(outcome.verdict):
            return
        outcome.rset = dialogue.rset()
        if closing(outcome.rset):
            return
    if plan.mail_from is None:
        return
    if not step("mail", dialogue.mail(plan.mail_from)):
        if result.closed_by_server is None:
            result.replies["rset"] = dialogue.rset()
        return
    accepted = 0
    for recipient in plan.rcpt_to:
        reply = dialogue.rcpt(recipient)
        result.rcpt_replies.append((recipient, reply))
        result.replies["rcpt"] = reply
        accepted += reply.positive
        if not reply.positive and result.stopped is None:
            result.stopped = "rcpt"
        if closing(reply):
            return
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


def _context(plan: SessionPlan) -> ssl.SSLContext:
    if plan.tls_context is not None:
        return plan.tls_context()
    from check_smtp_posture.smtp import tls

    return tls.client_context()
