"""Perfdata labels every graphing back end keeps as they are, and the family's aggregates.

Labels. A label is made of `[a-z0-9_]` only: Icinga 2's GraphiteWriter makes a
level of the metric tree of every dot in a label (a `-D` run labelled
`mx1.posture.test_127.0.25.1_banner_time` made the folders `mx1`, `posture`,
`test_127`, `0`, `25`, `1_banner_time`), InfluxDB makes a tag value of it, and a
colon, space or quote breaks some parsers. `label(*parts)` joins its parts with
`_`, lower-cases them and turns every other run of characters into one `_`.

Endpoints. A plugin that probes several endpoints (`-D`, several `-H`) reports by
default one value per metric for the whole run, the family's worst (`slowest()`
for times, `lowest()` for what remains, such as certificate days), and the counts
`endpoints` and `endpoints_ok` (`counts()`); the endpoint the worst value came
from is named in the text, never in the label. With `--perfdata-per-endpoint`
(cli.add_perfdata_option) it reports every endpoint's metrics too, each label
prefixed with the endpoint's key (`endpoint_keys()`):

    <MX or host name>_<v4|v6>_<position>

the name as `label()` writes it (dots become `_`; an endpoint given by address
alone, without a name, uses its address the same way), the address family, and
the position (from 1) of the address among that name's addresses of that family,
in numeric order (not DNS order, which a server may rotate). `mx1.posture.test` at
127.0.25.1 is `mx1_posture_test_v4_1`; were 127.0.25.9 its second IPv4 address,
that one would be `mx1_posture_test_v4_2`. The key stays the same when an MX moves
to another address, so its graph goes on.
"""

from __future__ import annotations

import re
from collections import namedtuple

_NOT_LABEL = re.compile(r"[^a-z0-9]+")


def label(*parts) -> str:
    """A perfdata label of `parts`: `[a-z0-9_]` only, lower case, no `_` at either end."""
    text = "_".join(str(part) for part in parts if part is not None and part != "")
    return _NOT_LABEL.sub("_", text.lower()).strip("_")


def address_family(address: str) -> str:
    """`v6` for an IPv6 address, `v4` otherwise."""
    return "v6" if ":" in address else "v4"


def endpoint_keys(endpoints) -> list:
    """The stable key of each endpoint (objects with `.name` and `.address`, such as
    targets.Endpoint), in their order: see the module's rule."""
    import ipaddress

    def group(endpoint) -> tuple:
        return endpoint.name or endpoint.address, address_family(endpoint.address)

    endpoints = list(endpoints)
    addresses: dict = {}
    for endpoint in endpoints:
        addresses.setdefault(group(endpoint), set()).add(endpoint.address)
    position = {(key, address): index
                for key, found in addresses.items()
                for index, address in enumerate(sorted(found, key=ipaddress.ip_address), 1)}
    return [label(*group(e), position[group(e), e.address]) for e in endpoints]


#: the worst value of one metric over the endpoints, and the endpoint it came from
Worst = namedtuple("Worst", ("value", "endpoint"))

#: how many endpoints a run probed, and how many of them were OK
Counts = namedtuple("Counts", ("endpoints", "endpoints_ok"))


def slowest(values) -> Worst | None:
    """The largest of (endpoint, value) pairs (a time: the slowest endpoint); None
    values (not measured) are skipped; the first endpoint wins a tie; None if none."""
    return _pick(values, max)


def lowest(values) -> Worst | None:
    """The smallest of (endpoint, value) pairs (what remains, such as certificate
    days left: the endpoint nearest its end); otherwise as slowest()."""
    return _pick(values, min)


def _pick(values, choose) -> Worst | None:
    measured = [(value, index, endpoint)
                for index, (endpoint, value) in enumerate(values) if value is not None]
    if not measured:
        return None
    best = choose(value for value, _, _ in measured)
    value, _, endpoint = next(item for item in measured if item[0] == best)
    return Worst(value, endpoint)


def counts(oks) -> Counts:
    """Counts of an iterable of booleans, one per endpoint probed: True for an OK one."""
    oks = list(oks)
    return Counts(len(oks), sum(1 for ok in oks if ok))
