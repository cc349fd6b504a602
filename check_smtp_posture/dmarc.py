"""DMARC (RFC 9989) read from DNS: the record, its discovery and its report destinations.

Facts only, no state. What RFC 9989 says and this module follows:

- The record is the TXT record at `_dmarc.<name>`; its strings are joined without
  separator (RFC 9989 §4.5, as RFC 7208 §3.3 for SPF); records that do not begin
  with `v=DMARC1` are not DMARC records; exactly one must remain, several are an
  error the domain owner must fix (receivers then apply no DMARC at all).
- Tags (§4.7): p, sp, np (none | quarantine | reject), adkim, aspf (r | s), rua and
  ruf (comma-separated URIs), fo (0, 1, d, s joined by ":"), psd (y | n | u), t
  (y | n). Unknown tags are ignored (listed here); pct, rf and ri were removed, but
  RFC 7489 receivers still read them (REMOVED says how). p is no longer required: a
  record without it is read as p=none.
- Discovery (§4.10, the DNS Tree Walk): ask `_dmarc.<domain>`; without a record
  there, ask the parents, shortest last, skipping to the 7 rightmost labels when the
  name has more than 8, so that at most MAX_QUERIES (8) queries are asked. The first
  record found is the policy record. The organisational domain is found by walking on
  to the top: a record with psd=n makes its domain the organisational domain, a
  record above the start with psd=y makes the name one label below it one, else the
  domain with the fewest labels that has a record is; without any record, the domain
  itself.
- The policy (§4.10.1): with the record at the domain itself, p applies to it; found
  higher up, sp (else p). A non-existent subdomain gets np, else sp, else p.
- Report destinations (RFC 9990 §3, RFC 9991): a destination whose domain lies outside
  the organisational domain must authorise the reports with a `v=DMARC1` TXT record at
  `<policy domain>._report._dmarc.<destination domain>`, or the wildcard
  `*._report._dmarc.<destination domain>` (which DNS itself answers for that name).

Answers come from dnslookup.DnsClient; a lookup that failed is kept as its DnsAnswer
(phrased with DnsAnswer.failure()), never read as "no record".
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from check_smtp_posture import names
from check_smtp_posture.sanitize import one_line

#: the most DNS queries one tree walk asks (RFC 9989 §4.10)
MAX_QUERIES = 8
#: a name with more labels than this is shortened to its 7 rightmost after the first query
MAX_LABELS = 8

POLICIES = ("none", "quarantine", "reject")
#: how strong a policy is: the perfdata policy_rank
RANK = {policy: rank for rank, policy in enumerate(POLICIES)}

#: the tags of RFC 9989 and the values each takes (None: checked on its own)
TAGS = {"v": None, "p": POLICIES, "sp": POLICIES, "np": POLICIES, "adkim": ("r", "s"),
        "aspf": ("r", "s"), "rua": None, "ruf": None, "fo": None, "psd": ("y", "n", "u"),
        "t": ("y", "n")}
FO_OPTIONS = ("0", "1", "d", "s")

#: the tags RFC 9989 removed, and what an RFC 7489 receiver still does with them
REMOVED = {
    "pct": "RFC 7489 receivers apply the policy to that percentage of failing mail only "
           "(the rest one step weaker); RFC 9989 receivers ignore it (t=y replaces pct=0)",
    "rf": "RFC 7489 receivers read it as the failure-report format (afrf only); "
          "RFC 9989 receivers ignore it",
    "ri": "RFC 7489 receivers read it as the requested aggregate-report interval in "
          "seconds; RFC 9989 receivers ignore it (reports are daily)",
}

_VERSION = re.compile(r"^v[ \t]*=[ \t]*DMARC1[ \t]*(;|$)")
_NEAR_VERSION = re.compile(_VERSION.pattern, re.IGNORECASE)


def is_dmarc(text: str) -> bool:
    """Does a TXT record begin with v=DMARC1 (RFC 9989 §4.7: case-sensitive)?"""
    return bool(_VERSION.match(text))


def looks_like_dmarc(text: str) -> bool:
    """A TXT record that is no DMARC record but was meant to be one: "v=dmarc1; ...",
    " v=DMARC1", which receivers discard."""
    return not is_dmarc(text) and bool(_NEAR_VERSION.match(text.strip()))


def record_name(domain: str) -> str:
    return f"_dmarc.{names.normalize(domain)}"


def authorisation_name(policy_domain: str, destination: str) -> str:
    """Where a destination authorises another domain's reports (RFC 9990 §3)."""
    return f"{names.normalize(policy_domain)}._report._dmarc.{names.normalize(destination)}"


def tree_walk(domain: str) -> list:
    """The names a tree walk asks, in order: the domain, then its parents (RFC 9989 §4.10)."""
    labels = names.normalize(domain).split(".")
    walk = [".".join(labels)]
    for count in range(min(len(labels) - 1, MAX_LABELS - 1), 0, -1):
        walk.append(".".join(labels[-count:]))
    return walk


def within(name: str, domain: str) -> bool:
    """`name` is `domain` or below it."""
    name, domain = names.normalize(name), names.normalize(domain)
    return name == domain or name.endswith("." + domain)


# -- the record ------------------------------------------------------------------


class ReportUri:
    """One rua/ruf URI: its scheme, and for mailto its address and domain."""

    __slots__ = ("text", "scheme", "address", "domain", "size", "problem")

    def __init__(self, text: str, scheme: str = "", address: str = "", domain: str = "",
                 size: str = "", problem: str = ""):
        self.text = text
        self.scheme = scheme
        self.address = address
        self.domain = domain
        self.size = size  # an RFC 7489 "!size" suffix, removed in RFC 9989
        self.problem = problem  # why it is not a usable URI, "" if it is

    def __repr__(self) -> str:
        return f"ReportUri({self.text!r})"


def parse_uri(text: str) -> ReportUri:
    text = text.strip()
    shown = one_line(text, 80)
    uri, bang, size = text.partition("!")
    if bang and not re.fullmatch(r"[0-9]+[kmgt]?", size, re.I):
        return ReportUri(text, problem=f"bad size suffix in {shown!r}")
    match = re.fullmatch(r"([A-Za-z][A-Za-z0-9+.-]*):(.+)", uri)
    if not match:
        return ReportUri(text, problem=f"{shown!r} is not a URI")
    scheme, rest = match.group(1).lower(), match.group(2)
    if scheme != "mailto":
        return ReportUri(text, scheme, size=size)
    address = unquote(rest.split("?", 1)[0])
    local, at, domain = address.rpartition("@")
    # nothing that breaks a line of output or the RCPT command the address goes into
    usable = local and all(ch.isprintable() and not ch.isspace() and ch not in "<>"
                           for ch in local)
    if not at or not usable or not names.is_hostname(domain):
        return ReportUri(text, scheme, size=size,
                         problem=f"{shown!r} is not a mailto: URI with an address")
    return ReportUri(text, scheme, address, names.normalize(domain), size)


class Record:
    """One v=DMARC1 record, parsed: its tags and every error and note about them."""

    __slots__ = ("text", "tags", "errors", "unknown", "removed", "rua", "ruf")

    def __init__(self, text: str):
        self.text = text
        self.tags: dict = {}
        self.errors: list = []  # syntax errors: the record is broken
        self.unknown: list = []  # tag names RFC 9989 does not know (ignored)
        self.removed: list = []  # (tag, value, what old receivers do)
        self.rua: tuple = ()
        self.ruf: tuple = ()

    @property
    def valid(self) -> bool:
        return not self.errors

    def get(self, tag: str, default: str | None = None) -> str | None:
        return self.tags.get(tag, default)

    @property
    def p(self) -> str:
        """The requested policy; without a (valid) p tag, none (RFC 9989 §4.7)."""
        value = self.tags.get("p")
        return value if value in POLICIES else "none"

    @property
    def sp(self) -> str:
        value = self.tags.get("sp")
        return value if value in POLICIES else self.p

    @property
    def np(self) -> str:
        value = self.tags.get("np")
        return value if value in POLICIES else self.sp

    @property
    def testing(self) -> bool:
        return self.tags.get("t") == "y"

    @property
    def psd(self) -> str:
        return self.tags.get("psd", "u")

    @property
    def uris(self) -> tuple:
        return self.rua + self.ruf


def parse_record(text: str) -> Record:
    """Parse one TXT record that begins with v=DMARC1 (RFC 9989 §4.7)."""
    record = Record(text)
    parts = [part.strip(" \t") for part in text.split(";")]
    if parts and parts[-1] == "":
        parts.pop()  # a trailing ";" is allowed
    for part in parts:
        tag, eq, value = part.partition("=")
        tag, value = tag.strip(" \t").lower(), value.strip(" \t")
        if not eq or not re.fullmatch(r"[a-z0-9_]+", tag):
            record.errors.append(f"{one_line(part, 60)!r} is not tag=value")
            continue
        if tag in record.tags:
            record.errors.append(f"tag {tag} given twice")
            continue
        record.tags[tag] = value if tag in ("v", "rua", "ruf") else value.lower()
        if tag in REMOVED:
            record.removed.append((tag, one_line(value, 40), REMOVED[tag]))
        elif tag not in TAGS:
            record.unknown.append(tag)
    for tag, allowed in TAGS.items():
        value = record.tags.get(tag)
        if value is not None and "\ufffd" in value:  # dnslookup's stand-in for bad bytes
            record.errors.append(f"{tag}= holds bytes that are not UTF-8")
        elif value is not None and allowed is not None and value not in allowed:
            record.errors.append(f"{tag}={one_line(value, 40)} is not one of "
                                 f"{', '.join(allowed)}")
    fo = record.tags.get("fo")
    if fo is not None and "\ufffd" not in fo and not all(o in FO_OPTIONS for o in fo.split(":")):
        record.errors.append(f"fo={one_line(fo, 40)} is not a list of {', '.join(FO_OPTIONS)}")
    for tag in ("rua", "ruf"):
        value = record.tags.get(tag)
        if value is None or "\ufffd" in value:
            continue
        uris = tuple(parse_uri(u) for u in value.split(",") if u.strip())
        if not uris:
            record.errors.append(f"{tag} is empty")
        record.errors.extend(f"{tag}: {u.problem}" for u in uris if u.problem)
        setattr(record, tag, tuple(u for u in uris if not u.problem))
    return record


# -- discovery -------------------------------------------------------------------


class Lookup:
    """One query of a tree walk: the name asked, the answer, the v=DMARC1 records in it."""

    __slots__ = ("domain", "answer", "texts", "record", "near_misses")

    def __init__(self, domain: str, answer):
        self.domain = domain
        self.answer = answer
        self.texts = tuple(t for t in answer.records if is_dmarc(t)) if answer.ok else ()
        #: TXT records that were meant to be DMARC records but are not (looks_like_dmarc)
        self.near_misses = tuple(t for t in answer.records if looks_like_dmarc(t)) \
            if answer.ok else ()
        #: the record here when there is exactly one
        self.record = parse_record(self.texts[0]) if len(self.texts) == 1 else None

    @property
    def name(self) -> str:
        return record_name(self.domain)

    @property
    def failed(self) -> bool:
        return self.answer.failed


class Discovery:
    """The tree walk's facts for `domain`.

    `policy` is the Lookup whose record(s) apply (the first name with a v=DMARC1
    record), None when there is none or a failed lookup left it unknown (`failure`,
    the Lookup that failed before any record was found). `organisational` is the
    organisational domain; `org_failure` a failed lookup above the policy record that
    left the walk for it unfinished (the organisational domain is then the best the
    answers before it show).
    """

    __slots__ = ("domain", "lookups", "policy", "failure", "organisational", "org_failure")

    def __init__(self, domain: str):
        self.domain = names.normalize(domain)
        self.lookups: list = []
        self.policy: Lookup | None = None
        self.failure: Lookup | None = None
        self.organisational = self.domain
        self.org_failure: Lookup | None = None

    @property
    def record(self) -> Record | None:
        return self.policy.record if self.policy is not None else None

    @property
    def several(self) -> int:
        """How many v=DMARC1 records the policy name has, when more than one; else 0."""
        count = len(self.policy.texts) if self.policy is not None else 0
        return count if count > 1 else 0

    @property
    def inherited(self) -> bool:
        """The policy record is not at the domain itself but higher up."""
        return self.policy is not None and self.policy.domain != self.domain

    @property
    def domain_policy(self) -> str | None:
        """The policy for mail from the domain itself."""
        record = self.record
        if record is None:
            return None
        return record.sp if self.inherited else record.p

    @property
    def nonexistent_policy(self) -> str | None:
        """The policy for mail from a subdomain of the domain that does not exist."""
        record = self.record
        return record.np if record is not None else None

    @property
    def queries(self) -> int:
        return len(self.lookups)


def discover(client, domain: str) -> Discovery:
    """Walk the tree above `domain` for its policy and organisational domain."""
    found = Discovery(domain)
    with_record = []  # Lookups with exactly one valid record, in walk order
    for index, name in enumerate(tree_walk(found.domain)):
        lookup = Lookup(name, client.query(record_name(name), "TXT"))
        found.lookups.append(lookup)
        if lookup.failed:
            if found.policy is None:
                found.failure = lookup
            else:
                found.org_failure = lookup
            break
        if not lookup.texts:
            continue
        if found.policy is None:
            found.policy = lookup
        record = lookup.record
        if record is None or not record.valid:
            continue
        with_record.append(lookup)
        if record.psd == "n":
            found.organisational = name
            return found
        if record.psd == "y" and index > 0:
            found.organisational = found.lookups[index - 1].domain
            return found
    if with_record:
        found.organisational = with_record[-1].domain
    return found


# -- report destinations ---------------------------------------------------------


class Destination:
    """A report URI's destination: is it outside the organisational domain, and if so,
    did it authorise the reports? `authorisation` is the DnsAnswer of the query at
    `authorisation_name`, None for a destination inside the domain."""

    __slots__ = ("uri", "kinds", "policy_domain", "external", "authorisation", "authorised")

    def __init__(self, uri: ReportUri, kinds: tuple, policy_domain: str, external: bool,
                 authorisation=None):
        self.uri = uri
        self.policy_domain = policy_domain
        self.kinds = kinds  # ("rua",), ("ruf",) or both
        self.external = external
        self.authorisation = authorisation
        self.authorised = (not external) or (
            authorisation is not None and authorisation.ok
            and any(is_dmarc(t) for t in authorisation.records))

    @property
    def authorisation_name(self) -> str:
        return authorisation_name(self.policy_domain, self.uri.domain)

    @property
    def failed(self) -> bool:
        """The authorisation could not be looked up."""
        return self.authorisation is not None and self.authorisation.failed


def destinations(client, record: Record, policy_domain: str, organisational: str) -> list:
    """Each distinct mailto destination of `record` with its authorisation facts.

    Other schemes (RFC 9990 names only mailto) are left out; the caller may list them.
    """
    by_address: dict = {}
    for kind, uris in (("rua", record.rua), ("ruf", record.ruf)):
        for uri in uris:
            if uri.scheme != "mailto":
                continue
            entry = by_address.setdefault(uri.address.lower(), [uri, []])
            entry[1].append(kind)
    out = []
    for uri, kinds in by_address.values():
        external = not within(uri.domain, organisational)
        answer = client.query(authorisation_name(policy_domain, uri.domain), "TXT") \
            if external else None
        out.append(Destination(uri, tuple(dict.fromkeys(kinds)), policy_domain, external,
                               answer))
    return out
