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

import nagiosplugin

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


#: one metric a plugin measures at each endpoint: its label, how the run's worst value
#: is picked (slowest or lowest), the Context that judges that value, its unit, minimum
Measure = namedtuple("Measure", ("name", "pick", "context", "uom", "min"),
                     defaults=("default", None, None))

#: the Context of one endpoint's value of a metric is its Measure's Context's name and
#: this (nagios.contexts.EachEndpoint); nagiosplugin's `default` serves itself
EACH = "_each"


def each(context: str) -> str:
    """The name of the Context of one endpoint's value of a metric judged by `context`."""
    return context if context == "default" else context + EACH


def run_metrics(where, values, measures, *, worst: dict, oks=None, keys=None):
    """The perfdata Metrics of a run over several endpoints.

    `where`: each endpoint as the text names it (targets.Endpoint.label); `values`: for
    each, a dict metric name -> value (absent or None: not measured there). Per Measure
    the run's worst value, recorded in `worst` (name -> Worst) for the text to name its
    endpoint; with `oks` (one boolean per endpoint, a run over several endpoints) the
    counts `endpoints` and `endpoints_ok`; with `keys` (endpoint_keys(), for
    --perfdata-per-endpoint) every endpoint's values too, labelled `<key>_<name>`.
    """
    where, values = list(where), list(values)
    for measure in measures:
        found = measure.pick(zip(where, (row.get(measure.name) for row in values)))
        if found is not None:
            worst[measure.name] = found
            yield nagiosplugin.Metric(measure.name, found.value, measure.uom, min=measure.min,
                                      context=measure.context)
    if oks is not None:
        counted = counts(oks)
        yield nagiosplugin.Metric("endpoints", counted.endpoints, min=0, context="default")
        yield nagiosplugin.Metric("endpoints_ok", counted.endpoints_ok, min=0,
                                  context="default")
    written = set()  # two values of one endpoint (an earlier run's probe): the first
    for key, row in zip(keys or (), values):
        for measure in measures:
            name = label(key, measure.name)
            if row.get(measure.name) is not None and name not in written:
                written.add(name)
                yield nagiosplugin.Metric(name, row[measure.name], measure.uom,
                                          min=measure.min, context=each(measure.context))
