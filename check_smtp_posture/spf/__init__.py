"""SPF (RFC 7208): record parser, macro expander, check_host() and a linter.

Pure logic over an injectable DNS interface (`SpfDns`); no nagiosplugin here.

    from check_smtp_posture.spf import ZoneDns, check_host, lint
    dns = ZoneDns({"example.com": [("TXT", "v=spf1 ip4:192.0.2.0/24 -all")]})
    check_host(dns, "192.0.2.7", "example.com").result    # 'pass'
"""

from check_smtp_posture.spf.evaluate import RESULTS, SpfResult, check_host
from check_smtp_posture.spf.linter import Finding, LintReport, lint
from check_smtp_posture.spf.lookup import Answer, SpfDns, ZoneDns
from check_smtp_posture.spf.record import SpfSyntaxError, parse_record

__all__ = ["RESULTS", "Answer", "Finding", "LintReport", "SpfDns", "SpfResult",
           "SpfSyntaxError", "ZoneDns", "check_host", "lint", "parse_record"]
