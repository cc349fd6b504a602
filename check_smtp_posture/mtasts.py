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

Nothing here judges; the plugin's Contexts do. Problems are short phrases.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from check_smtp_posture import names

ENFORCE, TESTING, NONE = "enforce", "testing", "none"
MODES = (ENFORCE, TESTING, NONE)
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


def sts_record(texts) -> TxtRecord:
    """The `_mta-sts` TXT record a sender uses, from every TXT string at that name."""
    found = _versioned(texts, "v=STSv1")
    if not found:
        return TxtRecord(problem="no v=STSv1 record")
    if len(found) > 1:
        return TxtRecord(found[0], count=len(found),
                         problem=f"{len(found)} v=STSv1 records")
    text = found[0]
    fields, problem = _tag_fields(text)
    record = TxtRecord(text, tuple(fields), 1)
    if problem:
        return TxtRecord(text, tuple(fields), 1, problem)
    ids = [v for k, v in fields if k == "id"]
    if not ids:
        return TxtRecord(text, tuple(fields), 1, "no id field")
    if len(ids) > 1:
        return TxtRecord(text, tuple(fields), 1, "id given twice")
    if not _ID.fullmatch(ids[0]):
        return TxtRecord(text, tuple(fields), 1,
                         f"bad id {ids[0][:40]!r} (1-32 letters and digits)")
    for name, value in fields[1:]:
        if name == "id":
            continue
        if not _EXT_NAME.fullmatch(name) or not _EXT_VALUE.fullmatch(value):
            return TxtRecord(text, tuple(fields), 1, f"bad field {name[:32]!r}")
    return record


def tlsrpt_record(texts) -> TxtRecord:
    """The `_smtp._tls` TXT record (RFC 8460 §3); `problem` when senders would use none."""
    found = _versioned(texts, "v=TLSRPTv1")
    if not found:
        return TxtRecord(problem="no v=TLSRPTv1 record")
    if len(found) > 1:
        return TxtRecord(found[0], count=len(found),
                         problem=f"{len(found)} v=TLSRPTv1 records (senders use none)")
    text = found[0]
    fields, problem = _tag_fields(text)
    if problem:
        return TxtRecord(text, tuple(fields), 1, problem)
    rua = [v for k, v in fields if k == "rua"]
    if not rua:
        return TxtRecord(text, tuple(fields), 1, "no rua field")
    if len(rua) > 1:
        return TxtRecord(text, tuple(fields), 1, "rua given twice")
    return TxtRecord(text, tuple(fields), 1)


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
