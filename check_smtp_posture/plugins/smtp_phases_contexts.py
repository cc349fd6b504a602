"""check_smtp_phases: what the facts of SmtpPhases.probe() mean (the Contexts: every
state decision lives here), and how they read (PhasesSummary and the long output).
"""

from __future__ import annotations

import nagiosplugin

from check_smtp_posture.nagios import states
from check_smtp_posture.nagios.contexts import OptionsContext, reply_state
from check_smtp_posture.nagios.summary import ResourceSummary
from check_smtp_posture.sanitize import one_line
from check_smtp_posture.smtp.dialogue import PHASES
from check_smtp_posture.smtp.session import (
    WITHHELD_ALL,
    WITHHELD_AUTH,
    SaslCredentials,
    SessionResult,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing to run
if TYPE_CHECKING:
    from check_smtp_posture.plugins.check_smtp_phases import Fact, Options

def _where(fact: Fact) -> str:
    return fact.endpoint.label


class DialogueContext(OptionsContext):
    """Transport failures, refusing replies, banner/command expectations, QUIT."""

    context_name = "dialogue"

    def evaluate(self, metric, resource):
        fact: Fact = metric.value
        result = fact.result
        where = _where(fact)
        opts = self.options
        if result.failure is not None:
            exc = result.failure
            return self.result_cls(states.failure_state(exc.kind, opts.unreachable_state),
                                   f"{where} {exc.phase}: {one_line(exc.detail)}", metric)
        if result.withheld == WITHHELD_AUTH:
            return self.result_cls(nagiosplugin.Critical, f"{where} auth: AUTH not sent in "
                                   "clear text (no TLS; --allow-plaintext-auth sends it anyway)",
                                   metric)
        if result.withheld == WITHHELD_ALL:
            return self.result_cls(nagiosplugin.Ok, "", metric)  # StartTlsContext judges
        if result.stopped is not None:
            phase = result.stopped
            reply = result.replies.get(phase)
            if reply is None:  # stopped without a reply: AUTH mechanism not offered
                mech = opts.plan.sasl.mechanism if opts.plan.sasl else "?"
                return self.result_cls(nagiosplugin.Critical,
                                       f"{where} auth: {mech} not offered", metric)
            if phase == "starttls":
                return self.result_cls(nagiosplugin.Ok, "", metric)  # StartTlsContext judges
            if phase == "rcpt":
                bad = [(rcpt, r) for rcpt, r in result.rcpt_replies if not r.positive]
                rcpt, reply = bad[0]
                detail = f"RCPT <{rcpt}>: {reply}"
            else:
                detail = str(reply)
            if phase == "ehlo" and reply.code in (500, 502, 504, 550):
                detail = f"EHLO and HELO refused: {reply}"
            state = reply_state(reply, opts.transient_state)
            if phase == "ehlo" and opts.plan.proxy is not None:
                # the first reply after the header, even a 4xx, most likely answers the
                # header, not the EHLO (Haraka: 421 after its banner): said as when the
                # dialogue knows it (SmtpDialogue: a reply before EHLO, or two to it)
                phase, detail = "connect", f"PROXY header not accepted: {reply}"
                state = nagiosplugin.Critical
            return self.result_cls(state, f"{where} {phase}: {one_line(detail)}", metric)
        if opts.expect is not None:
            banner = result.replies.get("banner")
            if banner is None or opts.expect not in banner.text:
                return self.result_cls(nagiosplugin.Critical,
                                       f"{where} banner lacks {one_line(opts.expect, 40)!r}: "
                                       f"{one_line(str(banner), 80)}", metric)
        for (command, reply), wanted in zip(result.command_replies, opts.responses):
            if wanted not in str(reply):
                return self.result_cls(
                    nagiosplugin.Critical,
                    f"{where} {one_line(command, 30)}: {one_line(str(reply), 60)} "
                    f"lacks {one_line(wanted, 30)!r}", metric)
        if not opts.responses:
            for command, reply in result.command_replies:
                if not reply.positive:
                    return self.result_cls(reply_state(reply, opts.transient_state),
                                           f"{where} {one_line(command, 30)}: "
                                           f"{one_line(str(reply))}", metric)
        rset = result.replies.get("rset")
        if rset is not None and not rset.positive:  # the transaction may still be open
            return self.result_cls(reply_state(rset, opts.transient_state),
                                   f"{where} rset: {one_line(str(rset))}", metric)
        if not opts.ignore_quit_failure:
            quit_reply = result.replies.get("quit")
            if result.quit_failure is not None:
                return self.result_cls(nagiosplugin.Warn, f"{where} quit: "
                                       f"{one_line(result.quit_failure.detail)}", metric)
            if quit_reply is not None and quit_reply.category != 2:
                return self.result_cls(nagiosplugin.Warn,
                                       f"{where} quit: {one_line(str(quit_reply))}", metric)
        if result.helo_fallback:
            return self.result_cls(nagiosplugin.Warn, f"{where} EHLO refused, HELO accepted",
                                   metric)
        return self.result_cls(nagiosplugin.Ok, "", metric)


class StartTlsContext(OptionsContext):
    context_name = "starttls"

    def evaluate(self, metric, resource):
        fact: Fact = metric.value
        result = fact.result
        where = _where(fact)
        if self.options.plan.implicit_tls or result.extensions is None:
            return self.result_cls(nagiosplugin.Ok, "", metric)
        if not result.starttls_offered:  # the OK line says "no STARTTLS" already
            if self.options.require_starttls:
                return self.result_cls(nagiosplugin.Critical, f"{where} STARTTLS not offered",
                                       metric)
            return self.result_cls(nagiosplugin.Ok, "", metric)
        if not result.starttls_attempted:
            return self.result_cls(nagiosplugin.Ok, "", metric)
        if result.stopped == "starttls":
            reply = result.replies["starttls"]
            return self.result_cls(nagiosplugin.Critical,
                                   f"{where} STARTTLS refused: {one_line(str(reply))}", metric)
        return self.result_cls(nagiosplugin.Ok, "", metric)


class AuthPostureContext(nagiosplugin.Context):
    def __init__(self):
        super().__init__("auth_posture")

    def evaluate(self, metric, resource):
        fact: Fact = metric.value
        mechs = fact.result.auth_before_tls
        if mechs and fact.result.extensions is not None and fact.result.starttls_offered:
            return self.result_cls(nagiosplugin.Warn, f"{_where(fact)} offers AUTH "
                                   f"({' '.join(mechs)}) before STARTTLS", metric)
        if mechs and not fact.result.starttls_offered and fact.result.tls is None:
            return self.result_cls(nagiosplugin.Warn, f"{_where(fact)} offers AUTH "
                                   f"({' '.join(mechs)}) without TLS", metric)
        return self.result_cls(nagiosplugin.Ok, "", metric)


class TlsProtocolContext(nagiosplugin.Context):
    OLD = ("SSLv2", "SSLv3", "TLSv1", "TLSv1.1")

    def __init__(self):
        super().__init__("tls_protocol")

    def evaluate(self, metric, resource):
        fact: Fact = metric.value
        tls = fact.result.tls
        if tls.version in self.OLD:
            return self.result_cls(nagiosplugin.Warn,
                                   f"{_where(fact)} negotiated {tls.version} (below TLS 1.2)",
                                   metric)
        return self.result_cls(nagiosplugin.Ok, "", metric)


class CertificateContext(OptionsContext):
    """Validity, trust, name, key and signature of the peer certificate, in tls.py's wording.

    Unreadable, expired or not yet valid: CRITICAL. Untrusted chain or name
    mismatch: --cert-error-state (MX certificates are often private, RFC 7672).
    Weak key or signature: WARNING. The worst of these wins; all are named.
    """

    context_name = "certificate"

    def evaluate(self, metric, resource):
        from check_smtp_posture import tls

        fact, cert = metric.value
        severity = {tls.UNREADABLE: nagiosplugin.Critical, tls.EXPIRED: nagiosplugin.Critical,
                    tls.NOT_YET_VALID: nagiosplugin.Critical,
                    tls.UNTRUSTED: states.state(self.options.cert_error_state),
                    tls.NAME_MISMATCH: states.state(self.options.cert_error_state),
                    tls.WEAK_KEY: nagiosplugin.Warn, tls.WEAK_SIGNATURE: nagiosplugin.Warn}
        judged = [(severity[kind], phrase) for kind, phrase in cert.findings()]
        bad = [(state, phrase) for state, phrase in judged if state != nagiosplugin.Ok]
        if not bad:
            return self.result_cls(nagiosplugin.Ok, "", metric)
        worst = max(state for state, _ in bad)
        return self.result_cls(worst, f"{_where(fact)} certificate: "
                               + ", ".join(one_line(p, 100) for _, p in bad), metric)


class CertDaysContext(nagiosplugin.ScalarContext):
    """Days left as perfdata, with the --cert-days window as thresholds."""

    def __init__(self, options: Options):
        super().__init__("cert_days_left", warning=f"{options.cert_warn_days:g}:",
                         critical=f"{options.cert_crit_days:g}:")

    def evaluate(self, metric, resource):
        if metric.value < 0:  # expired: CertificateContext says so already
            return self.result_cls(nagiosplugin.Ok, "", metric)
        result = super().evaluate(metric, resource)
        if result.state != nagiosplugin.Ok:
            found = resource.worst.get(metric.name)
            where = found.endpoint if found else resource.results[0].endpoint.label
            return self.result_cls(result.state, f"{where} certificate: expires in "
                                   f"{metric.value:.0f} days", metric)
        return result


# -- summary -----------------------------------------------------------------------


class PhasesSummary(ResourceSummary):
    def headline(self, results):
        res = self.resource.results
        if not res:
            return ""
        if len(res) == 1:
            return describe_ok(res[0], self.resource.options.plan.sasl)
        slowest = max(res, key=lambda r: r.times.get("total", 0))
        return (f"{len(res)} endpoints OK for {self.resource.resolution.what}, slowest "
                f"{slowest.endpoint.label} {slowest.times['total']:.3f}s")

    def details(self, results):
        lines = []
        if self.resource.options.helo_note:
            lines.append(f"note: {self.resource.options.helo_note}")
        if self.resource.oauth_note and self.verbosity >= 3:
            lines.append(self.resource.oauth_note)
        for session in self.resource.results:
            lines.extend(describe_session(session, self.resource.certificate(session),
                                          self.verbosity))
        return lines


def describe_ok(result: SessionResult, sasl: SaslCredentials | None) -> str:
    banner = result.replies.get("banner")
    parts = [result.endpoint.label]
    if banner is not None:
        parts.append(f"banner {banner.code}")
    if result.tls is not None:
        parts.append(f"{'TLS' if result.extensions_tls is None else 'STARTTLS'} "
                     f"{result.tls.version}")
    elif result.extensions is not None and not result.starttls_offered:
        parts.append("no STARTTLS")
    auth = result.replies.get("auth")
    if auth is not None and auth.positive and sasl is not None:
        parts.append(f"AUTH {sasl.mechanism.upper()} ok")
    if result.rcpt_replies:
        parts.append(f"{len(result.rcpt_replies)} RCPT accepted")
    if "body" in result.replies:
        parts.append(f"message accepted: {one_line(str(result.replies['body']), 60)}")
    parts.append(f"{result.times['total']:.3f}s")
    return ", ".join(parts)


INVENTORY = ("PIPELINING", "8BITMIME", "SIZE", "SMTPUTF8", "CHUNKING", "DSN",
             "ENHANCEDSTATUSCODES", "STARTTLS", "AUTH", "REQUIRETLS")


def describe_session(result: SessionResult, cert, verbosity: int) -> list[str]:
    """Long output for one endpoint: phases, extensions, TLS, transcript at -vvv."""
    lines = [f"{result.endpoint.label} port {result.endpoint.port}:"]
    # result.times is filled as the dialogue goes, so its order is the phases' order
    phases = ", ".join(f"{p} {t:.3f}s" for p, t in result.times.items()
                       if p in PHASES)
    lines.append(f"  phases: {phases}, total {result.times['total']:.3f}s")
    banner = result.replies.get("banner")
    if banner is not None:
        lines.append(f"  banner: {one_line(str(banner), 100)}")
    ext = result.final_extensions
    if ext is not None:
        present = []
        for keyword in INVENTORY:
            if keyword in ext:
                params = " ".join(ext.auth_mechanisms) if keyword == "AUTH" \
                    else ext.params(keyword)
                present.append(f"{keyword} {params}" if params and keyword in ("SIZE", "AUTH")
                               else keyword)
        if ext.obsolete_auth:
            present.append("AUTH= (obsolete form)")
        missing = [k for k in ("PIPELINING", "8BITMIME", "SIZE", "SMTPUTF8", "CHUNKING", "DSN")
                   if k not in ext]
        lines.append(f"  extensions: {' '.join(present) or 'none'}")
        if missing:
            lines.append(f"  not offered: {' '.join(missing)}")
        if result.helo_fallback:
            lines.append("  EHLO refused; HELO accepted")
    if result.extensions is not None and result.tls is None and not result.starttls_offered \
            and not result.failure:
        lines.append("  STARTTLS not offered: mail to this endpoint travels in clear text")
    if result.tls is not None:
        lines.append(f"  tls: {result.tls.describe()}, SNI {result.tls.sni or '-'}")
    if cert is not None and not cert.error:
        lines.append(f"  certificate: subject {cert.subject}; issuer {cert.issuer}; "
                     f"valid {cert.not_before:%Y-%m-%d} to {cert.not_after:%Y-%m-%d}; "
                     f"{cert.key_type} {cert.key_bits} bits, {cert.signature_hash}")
        if cert.san_dns or cert.san_ip:
            lines.append("  names: " + " ".join(cert.san_dns + cert.san_ip))
    for recipient, reply in result.rcpt_replies:
        lines.append(f"  RCPT <{recipient}>: {one_line(str(reply), 100)}")
    for command, reply in result.command_replies:
        lines.append(f"  {one_line(command, 40)}: {one_line(str(reply), 100)}")
    if result.failure is not None:
        lines.append(f"  failed in {result.failure.phase}: {one_line(result.failure.detail)}")
    if verbosity >= 3:
        lines.append("  transcript:")
        lines.extend("    " + line for line in result.transcript.lines())
    return lines
