"""MTA-STS (RFC 8461) and TLS-RPT (RFC 8460) records and policies as facts: pure logic.

- `sts_record(texts)`: the `_mta-sts` TXT RRset, as a sending MTA reads it
  (§3.1): records not starting with `v=STSv1` are discarded, exactly one must
  remain, with a valid `id`.
- `parse_policy(text)`: the policy body (§3.2): `key: value` lines ended by LF
  or CRLF; `version`, `mode`, `max_age` once each, `mx` one or more times
  (unless mode is none); other keys are listed, not refused (unknown fields are
  ignored by senders).
- `mx_matches(pattern, host)`: §4.1, a `*.` wildcard stands for exactly one label.
- `tlsrpt_record(texts)`: the `_smtp._tls` TXT RRset (RFC 8460 §3): exactly one
  `v=TLSRPTv1` record with `rua` URIs, `mailto:` or `https:`.
- `response_problem(host, response, cert)`: the fetch rules (§3.3): why a
  sender would not take a policy from this HTTPS response; `certificate_problems`
  the PKIX rule (§3.3, §4.2) for the policy host and the MX alike.
- `compare_history(...)` and `remember(...)`: the caching rules (§5.1): a policy
  binds the senders that fetched it until its fetch plus its max_age.

Nothing here judges; the plugin's Contexts do. Problems are short phrases.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace

from check_smtp_posture import names
from check_smtp_posture.sanitize import one_line

ENFORCE, TESTING, NONE = "enforce", "testing", "none"
MODES = (ENFORCE, TESTING, NONE)
#: §5: the modes in which senders act on the policy (enforce refuses delivery to an
#: MX it does not cover, testing delivers and reports); none binds nobody
BINDING_MODES = (ENFORCE, TESTING)
#: certificate findings (tls.CertificateFacts.findings kinds) that fail the PKIX
#: validation §3.3 and §4.2 ask for; weak keys are check_smtp_phases' matter
PKIX_FAILURES = ("unreadable", "expired", "not yet valid", "untrusted", "name mismatch")
#: entries of policy history remember() keeps
HISTORY_CAP = 10
#: §3.2: the longest max_age a policy may ask for (about a year)
MAX_AGE_LIMIT = 31557600
#: §3.3: what senders read of a policy body at most
POLICY_LIMIT = 64 * 1024
KNOWN_KEYS = ("version", "mode", "max_age", "mx")

_ID = re.compile(r"[A-Za-z0-9]{1,32}")
_EXT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_EXT_VALUE = re.compile(r"[\x21-\x3a\x3c\x3e-\x7e]+")
_POLICY_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
_POLICY_VALUE = re.compile(r"[\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*")


# --------------------------------------------------------------------------- TXT records


@dataclass(frozen=True)
class TxtRecord:
    """The one record of its kind a sender would use, or why there is none."""

    text: str = ""  # the record used (or the first of several)
    fields: tuple = ()  # (name, value) in order
    count: int = 0  # records of this version found
    problem: str = ""  # why a sender would use none of them

    @property
    def ok(self) -> bool:
        return self.count == 1 and not self.problem

    def get(self, name: str) -> str | None:
        return next((v for k, v in self.fields if k == name), None)


def _tag_fields(text: str) -> tuple[list, str]:
    """`name=value` fields separated by ';' (whitespace around allowed), and a problem."""
    fields = []
    for part in text.split(";"):
        part = part.strip(" \t")
        if not part:
            continue  # a trailing ';' (or an empty field) is harmless
        name, eq, value = part.partition("=")
        if not eq:
            return fields, f"field {part[:40]!r} has no '='"
        fields.append((name.strip(" \t"), value.strip(" \t")))
    return fields, ""


def _versioned(texts, prefix: str) -> list:
    """The records that start with `prefix` (§3.1: the others are discarded)."""
    return [t for t in texts if t == prefix or t.startswith(prefix + ";")
            or re.match(re.escape(prefix) + r"[ \t]*;", t)]


def _one_record(texts, version: str, required: str, several: str = "") -> TxtRecord:
    """The one record of `version` among the TXT strings `texts`, its fields, and the
    first problem: none or several records, a bad field list, the `required` field
    missing or given twice. `several` adds to the note on several records."""
    found = _versioned(texts, version)
    if not found:
        return TxtRecord(problem=f"no {version} record")
    if len(found) > 1:
        return TxtRecord(found[0], count=len(found),
                         problem=f"{len(found)} {version} records{several}")
    text = found[0]
    fields, problem = _tag_fields(text)
    values = [v for k, v in fields if k == required]
    if not problem and not values:
        problem = f"no {required} field"
    elif not problem and len(values) > 1:
        problem = f"{required} given twice"
    return TxtRecord(text, tuple(fields), 1, problem)


def sts_record(texts) -> TxtRecord:
    """The `_mta-sts` TXT record a sender uses, from every TXT string at that name."""
    record = _one_record(texts, "v=STSv1", "id")
    if record.problem:
        return record
    sts_id = record.get("id")
    if not _ID.fullmatch(sts_id):
        return replace(record, problem=f"bad id {sts_id[:40]!r} (1-32 letters and digits)")
    for name, value in record.fields[1:]:
        if name == "id":
            continue
        if not _EXT_NAME.fullmatch(name) or not _EXT_VALUE.fullmatch(value):
            return replace(record, problem=f"bad field {name[:32]!r}")
    return record


def tlsrpt_record(texts) -> TxtRecord:
    """The `_smtp._tls` TXT record (RFC 8460 §3); `problem` when senders would use none."""
    return _one_record(texts, "v=TLSRPTv1", "rua", " (senders use none)")


@dataclass(frozen=True)
class ReportUri:
    uri: str
    scheme: str = ""  # "mailto" or "https"
    domain: str = ""  # the mailbox's domain (mailto) or the host (https)
    problem: str = ""


def report_uris(rua: str) -> list:
    """The `rua` URIs, each checked: `mailto:local@domain` or `https://host/...`."""
    from urllib.parse import unquote, urlsplit

    out = []
    for uri in (u.strip(" \t") for u in rua.split(",")):
        if not uri:
            out.append(ReportUri(uri, problem="empty URI"))
            continue
        if any(ord(ch) <= 0x20 or ord(ch) >= 0x7f for ch in uri):
            out.append(ReportUri(uri, problem="space or non-ASCII in URI"))
            continue
        scheme, _, rest = uri.partition(":")
        scheme = scheme.lower()
        if scheme == "mailto":
            address = unquote(rest.partition("?")[0])
            local, at, domain = address.rpartition("@")
            domain = names.normalize(domain)
            if not at or not local or not names.is_hostname(domain) or "." not in domain:
                out.append(ReportUri(uri, scheme, problem="bad mailto address"))
            else:
                out.append(ReportUri(uri, scheme, domain))
        elif scheme == "https":
            try:
                parts = urlsplit(uri)
                host = parts.hostname or ""
            except ValueError:
                host = ""
            if not host or not (names.is_hostname(host) or names.is_ip_literal(host)):
                out.append(ReportUri(uri, scheme, problem="bad https URI"))
            else:
                out.append(ReportUri(uri, scheme, names.normalize(host)))
        else:
            out.append(ReportUri(uri, scheme, problem="not mailto: or https:"))
    return out


# --------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Policy:
    """A policy body as a sender reads it; `problems` make senders refuse it."""

    version: str | None = None
    mode: str | None = None
    max_age: int | None = None
    mx: tuple = ()  # patterns, normalised, in order
    unknown_keys: tuple = ()  # keys senders ignore
    problems: tuple = ()
    line_ending: str = "LF"  # "LF", "CRLF" or "mixed"
    digest: str = ""  # sha256 of the body: tells one policy text from another

    @property
    def valid(self) -> bool:
        return not self.problems

    def covers(self, host: str) -> str | None:
        """The first pattern matching MX host `host`, or None."""
        return next((p for p in self.mx if mx_matches(p, host)), None)


def parse_policy(body: bytes) -> Policy:
    """The policy in `body` (already capped at POLICY_LIMIT by the fetch)."""
    digest = hashlib.sha256(body).hexdigest()
    problems: list[str] = []
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        text = body.decode("utf-8", "replace")
        problems.append("non-ASCII bytes in the policy")
    crlf = text.count("\r\n")
    lf = text.count("\n") - crlf
    ending = "CRLF" if crlf and not lf else ("mixed" if crlf and lf else "LF")
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    seen: dict[str, list] = {}
    unknown: list[str] = []
    for number, line in enumerate(lines, 1):
        if "\r" in line:
            problems.append(f"line {number}: a bare CR")
            continue
        key, colon, value = line.partition(":")
        value = value.strip(" \t")
        if not colon or not _POLICY_KEY.fullmatch(key):
            problems.append(f"line {number} is not 'key: value'")
            continue
        if not _POLICY_VALUE.fullmatch(value):
            problems.append(f"line {number}: empty or bad value for {key}")
            continue
        if key not in KNOWN_KEYS:
            if key not in unknown:
                unknown.append(key)
            continue
        seen.setdefault(key, []).append(value)
    for key in ("version", "mode", "max_age"):
        if len(seen.get(key, ())) > 1:
            problems.append(f"{key} given {len(seen[key])} times")
    version = seen.get("version", [None])[0]
    mode = seen.get("mode", [None])[0]
    max_age_text = seen.get("max_age", [None])[0]
    if version is None:
        problems.append("no version")
    elif version != "STSv1":
        problems.append(f"version {version[:20]!r} is not STSv1")
    if mode is None:
        problems.append("no mode")
    elif mode not in MODES:
        problems.append(f"mode {mode[:20]!r} is not enforce, testing or none")
    max_age = None
    if max_age_text is None:
        problems.append("no max_age")
    elif not re.fullmatch(r"[0-9]{1,10}", max_age_text):
        problems.append(f"max_age {max_age_text[:20]!r} is not a number of seconds")
    else:
        max_age = int(max_age_text)
        if max_age > MAX_AGE_LIMIT:
            problems.append(f"max_age {max_age} is over {MAX_AGE_LIMIT} (a year)")
    patterns = []
    for value in seen.get("mx", ()):
        problem = mx_pattern_problem(value)
        if problem:
            problems.append(problem)
        else:
            patterns.append(names.normalize(value))
    if not seen.get("mx") and mode in (ENFORCE, TESTING):
        problems.append(f"no mx in a {mode} policy")
    return Policy(version, mode, max_age, tuple(dict.fromkeys(patterns)), tuple(unknown),
                  tuple(problems), ending, digest)


def mx_pattern_problem(pattern: str) -> str:
    """Why `pattern` is no MX pattern (§3.2: a host name, or `*.` and a host name), or ''."""
    if names.is_ip_literal(pattern.strip("[]")):
        return f"mx {pattern[:60]!r} is an IP address (only names match)"
    rest = pattern[2:] if pattern.startswith("*.") else pattern
    if not names.is_hostname(rest) or "*" in rest:
        return f"mx {pattern[:60]!r} is not a host name or *.name pattern"
    return ""


def mx_matches(pattern: str, host: str) -> bool:
    """Does MX pattern `pattern` match MX host `host`? (§4.1; case-insensitive)"""
    pattern, host = names.normalize(pattern), names.normalize(host)
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return pattern == host


# --------------------------------------------------------------------------- fetch


def certificate_problems(cert) -> list:
    """The phrases of the findings that fail PKIX validation (tls.CertificateFacts)."""
    return [phrase for kind, phrase in cert.findings() if kind in PKIX_FAILURES]


def response_problem(host: str, response, cert) -> str:
    """Why a sender would not take a policy from `response` (https.HttpsResponse, from
    `host`, with certificate facts `cert`), or '' (§3.3: a valid certificate, status
    200, no redirects followed, text/plain, at most POLICY_LIMIT bytes)."""
    bad = certificate_problems(cert)
    if bad:
        return f"policy host {host} certificate {', '.join(bad)}"
    if 300 <= response.status < 400:
        location = one_line(response.header("location") or "nowhere", 80)
        return f"policy fetch answered {response.status} redirect to {location} " \
               "(senders do not follow redirects)"
    if response.status != 200:
        return f"policy fetch answered {response.status} {one_line(response.reason, 40)}"
    if response.media_type != "text/plain":
        return f"policy served as {one_line(response.media_type or 'no type', 40)}, " \
               "not text/plain"
    if response.truncated:
        return f"policy larger than {POLICY_LIMIT // 1024} KiB"
    return ""


# --------------------------------------------------------------------------- history
#
# A history is a list of entries, newest first, as remember() writes them:
# {"id", "digest", "mode", "max_age", "mx": [patterns], "seen": epoch}.


@dataclass(frozen=True)
class CachedPolicy:
    """An older policy senders may still cache, and how it differs from the current one."""

    id: str
    mode: str
    until: float  # epoch: its last fetch plus its max_age
    same_id: bool = False  # the current policy has its id but another text
    downgraded_to: str = ""  # it was enforce: the current policy's mode, when not enforce
    uncovered: tuple = ()  # current MX hosts it does not name (in a binding mode)


@dataclass(frozen=True)
class History:
    """What the policies seen before say about now (compare_history)."""

    mx_added: tuple = ()  # MX hosts since the last run (empty on the first run)
    mx_gone: tuple = ()
    cached: tuple = ()  # CachedPolicy, older policies that differ from the current one
    kept: CachedPolicy | None = None  # no usable policy now: the newest one still cached


def cached_until(entry: dict) -> float:
    """§5.1: senders keep a policy until its last fetch plus its max_age."""
    return entry["seen"] + entry["max_age"]


def compare_history(entries: list, known_mx, policy: Policy | None, record_id: str | None,
                    current_mx: list, now: float) -> History:
    """The stored `entries` (and `known_mx`, the MX hosts of the last run, or None) against
    the `policy` usable now (None: none) with `record_id`, the MX hosts `current_mx`."""
    added = gone = ()
    if known_mx is not None and sorted(known_mx) != current_mx:
        added = tuple(sorted(set(current_mx) - set(known_mx)))
        gone = tuple(sorted(set(known_mx) - set(current_mx)))
    live = [e for e in entries if cached_until(e) > now]
    if policy is None:
        latest = max(live, key=lambda e: e["seen"]) if live else None
        kept = CachedPolicy(latest["id"], latest["mode"], cached_until(latest)) \
            if latest else None
        return History(added, gone, kept=kept)
    cached = []
    for entry in live:
        if entry["id"] == record_id and entry["digest"] == policy.digest:
            continue
        uncovered = ()
        if entry["mode"] in BINDING_MODES:
            uncovered = tuple(m for m in current_mx
                              if not any(mx_matches(p, m) for p in entry["mx"]))
        cached.append(CachedPolicy(
            entry["id"], entry["mode"], cached_until(entry), same_id=entry["id"] == record_id,
            downgraded_to=policy.mode if entry["mode"] == ENFORCE and policy.mode != ENFORCE
            else "",
            uncovered=uncovered))
    return History(added, gone, tuple(cached))


def remember(entries: list, policy: Policy, record_id: str | None, now: float) -> list:
    """The history to store: this policy first (seen now), the ones still cached after it."""
    current = {"id": record_id or "", "digest": policy.digest, "mode": policy.mode,
               "max_age": policy.max_age, "mx": list(policy.mx), "seen": int(now)}
    rest = [e for e in entries if cached_until(e) > now
            and not (e["id"] == current["id"] and e["digest"] == current["digest"])]
    return [current] + sorted(rest, key=lambda e: -e["seen"])[: HISTORY_CAP - 1]


def is_history(stored) -> bool:
    """Is a stored value a history and MX list as the plugin keeps them, {"policies":
    [entries], "mx": [names]}? (anything else is corrupt)"""
    if not isinstance(stored, dict) or not isinstance(stored.get("policies"), list):
        return False
    if not isinstance(stored.get("mx"), list) or not all(isinstance(m, str)
                                                         for m in stored["mx"]):
        return False
    for entry in stored["policies"]:
        if not isinstance(entry, dict):
            return False
        if not all(isinstance(entry.get(k), str) for k in ("id", "digest", "mode")):
            return False
        if not all(isinstance(entry.get(k), (int, float)) and not isinstance(entry.get(k), bool)
                   for k in ("max_age", "seen")):
            return False
        if not isinstance(entry.get("mx"), list) or not all(isinstance(p, str)
                                                            for p in entry["mx"]):
            return False
    return True
