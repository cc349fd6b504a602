"""Perfdata labels, aggregates and the output bounds, through a plugin-shaped Check.

`ToyCheck` is built the way a plugin of the family builds its Check: a Resource
whose probe() yields Metrics, the family's TimeContext and Summary, run by
runner.run() with the family's Options names. Its endpoints are data, so each
test can give it 3 or 16 of them; what is asserted is what a user sees: exit
status, first line, perfdata labels, byte counts.
"""

from __future__ import annotations

import io
import re
from collections import namedtuple
from contextlib import redirect_stdout

import nagiosplugin
import pytest

from check_smtp_posture.nagios import perfdata, runner
from check_smtp_posture.nagios.contexts import DEFAULT, TimeContext, seconds
from check_smtp_posture.nagios.summary import FamilySummary
from check_smtp_posture.targets import Endpoint

Options = namedtuple("Options", ("verbose", "timeout", "unreachable_state",
                                 "perfdata_per_endpoint"), defaults=(0, 10.0, "critical", False))
#: one endpoint's facts: where, and what was measured there (None: not reached)
Probed = namedtuple("Probed", ("endpoint", "banner_time", "cert_days_left"))

LABEL = re.compile(r"^[a-z0-9_]+$")


class Toy(nagiosplugin.Resource):
    def __init__(self, probed, per_endpoint: bool):
        self.probed = probed
        self.per_endpoint = per_endpoint

    def probe(self):
        where = [p.endpoint.label for p in self.probed]
        banner = perfdata.slowest(zip(where, (p.banner_time for p in self.probed)))
        days = perfdata.lowest(zip(where, (p.cert_days_left for p in self.probed)))
        counted = perfdata.counts(p.banner_time is not None for p in self.probed)
        yield nagiosplugin.Metric("endpoints_ok", counted, context="endpoints")
        yield nagiosplugin.Metric("endpoints", counted.endpoints, min=0, context=DEFAULT)
        yield nagiosplugin.Metric("endpoints_ok", counted.endpoints_ok, min=0, context=DEFAULT)
        yield nagiosplugin.Metric("slowest", banner, context="slowest")
        yield seconds("banner_time", banner.value)
        yield nagiosplugin.Metric("cert_days_left", days.value, min=0, context=DEFAULT)
        if self.per_endpoint:
            keys = perfdata.endpoint_keys(p.endpoint for p in self.probed)
            for key, p in zip(keys, self.probed):
                if p.banner_time is not None:
                    yield seconds(perfdata.label(key, "banner_time"), p.banner_time)
                    yield nagiosplugin.Metric(perfdata.label(key, "cert_days_left"),
                                              p.cert_days_left, min=0, context=DEFAULT)


class Endpoints(nagiosplugin.Context):
    def evaluate(self, metric, resource):
        counted = metric.value
        state = nagiosplugin.Ok if counted.endpoints_ok == counted.endpoints \
            else nagiosplugin.Critical
        return self.result_cls(state, f"{counted.endpoints_ok} of {counted.endpoints} "
                                      "endpoints OK", metric)

    def performance(self, metric, resource):
        return None


class Slowest(nagiosplugin.Context):
    def evaluate(self, metric, resource):
        return self.result_cls(nagiosplugin.Ok, f"slowest {metric.value.endpoint} "
                                                f"{metric.value.value:.3f}s", metric)


class ToySummary(FamilySummary):
    def __init__(self, verbosity: int, details: list):
        super().__init__(verbosity)
        self.lines = details

    def details(self, results):
        return self.lines


def toy_run(probed, *, verbose=0, per_endpoint=False, option=None, details=()):
    """(exit status, output) of the toy plugin, run as a plugin's main() runs it.

    `per_endpoint`: the Resource yields every endpoint's metrics too; `option`: the
    run's --perfdata-per-endpoint (default: the same).
    """
    check = runner.new_check(Toy(probed, per_endpoint), Endpoints("endpoints"),
                             Slowest("slowest"), TimeContext("time", "1", "2"),
                             ToySummary(verbose, list(details)), name="toy")
    option = per_endpoint if option is None else option
    out = io.StringIO()
    with redirect_stdout(out):
        status = runner.run(check, Options(verbose=verbose, perfdata_per_endpoint=option))
    return status, out.getvalue()


def perf_items(first_line: str) -> dict:
    _, _, perf = first_line.partition(" | ")
    return dict(item.split("=", 1) for item in perf.split())


THREE = [
    Probed(Endpoint("192.0.2.9", 25, "MX1.Example.test"), 0.1, 300),
    Probed(Endpoint("192.0.2.1", 25, "MX1.Example.test"), 0.2, 40),
    Probed(Endpoint("2001:db8::1", 25, "mx2.example.test"), 0.3, 90),
]


def test_aggregates_by_default_the_endpoint_named_in_the_text_not_the_label():
    status, output = toy_run(THREE)
    assert status == 0
    assert output == (
        "TOY OK - 3 of 3 endpoints OK; slowest mx2.example.test[2001:db8::1] 0.300s | "
        "banner_time=0.300000s;1;2;0 cert_days_left=40;;;0 endpoints=3;;;0 "
        "endpoints_ok=3;;;0\n")


def test_per_endpoint_labels_are_the_endpoint_key_and_the_metric():
    status, output = toy_run(THREE, per_endpoint=True)
    assert status == 0
    items = perf_items(output.splitlines()[0])
    labels = [label.strip("'") for label in items]
    assert sorted(labels) == ["banner_time", "cert_days_left", "endpoints", "endpoints_ok",
                      "mx1_example_test_v4_1_banner_time", "mx1_example_test_v4_1_cert_days_left",
                      "mx1_example_test_v4_2_banner_time", "mx1_example_test_v4_2_cert_days_left",
                      "mx2_example_test_v6_1_banner_time", "mx2_example_test_v6_1_cert_days_left"]
    # the position is the address's among the name's, in numeric order: 192.0.2.1 first
    assert items["mx1_example_test_v4_1_banner_time"] == "0.200000s;1;2;0"
    assert items["mx1_example_test_v4_2_cert_days_left"] == "300;;;0"
    assert all(LABEL.match(label) for label in labels)


def test_an_endpoint_key_survives_an_address_change():
    """What Graphite and InfluxDB need: the MX moves, the label and so the series stay."""
    moved = [p._replace(endpoint=p.endpoint._replace(address=new)) for p, new in
             zip(THREE, ("198.51.100.7", "198.51.100.3", "2001:db8::99"))]
    before = perf_items(toy_run(THREE, per_endpoint=True)[1].splitlines()[0])
    after = perf_items(toy_run(moved, per_endpoint=True)[1].splitlines()[0])
    assert list(after) == list(before)


def test_a_label_is_lower_case_letters_digits_and_single_underscores():
    assert perfdata.label("mx1.posture.test", "127.0.25.1", "banner_time") == \
        "mx1_posture_test_127_0_25_1_banner_time"
    assert perfdata.label("-[2001:DB8::1]-", "", None, "RCPT  time") == "2001_db8_1_rcpt_time"


def test_an_endpoint_without_name_is_keyed_by_its_address():
    keys = perfdata.endpoint_keys([Endpoint("127.0.25.3", 25), Endpoint("::1", 25)])
    assert keys == ["127_0_25_3_v4_1", "1_v6_1"]


def test_an_endpoint_not_reached_is_counted_and_left_out_of_the_worst():
    probed = [*THREE[:2], THREE[2]._replace(banner_time=None, cert_days_left=None)]
    status, output = toy_run(probed)
    assert status == 2
    first = output.splitlines()[0]
    assert first.startswith("TOY CRITICAL - 2 of 3 endpoints OK | ")
    assert perf_items(first)["banner_time"] == "0.200000s;1;2;0"
    assert perf_items(first)["endpoints_ok"] == "2;;;0"


def sixteen():
    return [Probed(Endpoint(f"127.0.26.{n}", 25, f"mx{n:02d}.a-rather-long-mail-domain.test"),
                   n / 100, 100 - n) for n in range(1, 17)]


@pytest.mark.parametrize("verbose", [0, 1, 2, 3])
def test_a_status_line_over_1_kib_leaves_out_whole_perfdata_items_and_says_so(verbose):
    """16 endpoints' perfdata without --perfdata-per-endpoint (the plugins today)."""
    status, output = toy_run(sixteen(), verbose=verbose, per_endpoint=True, option=False)
    first, *rest = output.splitlines()
    assert status == 0
    assert len(first.encode()) + 1 < runner.FIRST_LINE_MAX
    items = perf_items(first)
    # the aggregates come first and stay; every item kept is whole
    assert list(items)[:4] == ["banner_time", "cert_days_left", "endpoints", "endpoints_ok"]
    assert all(re.fullmatch(r"'?[a-z0-9_]+'?", label) for label in items)
    assert all(re.fullmatch(r"[0-9.]+s?;[0-9;.]*", value) for value in items.values())
    assert 4 < len(items) < 36
    assert rest[0] == f"perfdata: {36 - len(items)} of 36 items left out, the status line " \
                      "stays under 1024 bytes"


def test_per_endpoint_perfdata_may_take_4_kib():
    status, output = toy_run(sixteen(), per_endpoint=True)
    first = output.splitlines()[0]
    assert status == 0
    assert 1024 < len(first.encode()) < runner.PER_ENDPOINT_LINE_MAX
    assert len(perf_items(first)) == 36
    assert output.count("\n") == 1


LONG = [f"line {n:03d} " + "x" * 90 for n in range(200)]  # 200 lines of 100 bytes


@pytest.mark.parametrize("verbose", [1, 2])
def test_long_output_is_cut_at_a_line_under_8_kib(verbose):
    status, output = toy_run(THREE, verbose=verbose, details=LONG)
    assert status == 0
    assert len(output.encode()) < runner.OUTPUT_MAX
    first, *rest = output.splitlines()
    assert first.startswith("TOY OK - 3 of 3 endpoints OK; slowest ")
    more = re.fullmatch(r"\.\.\. (\d+) more lines", rest[-1])
    assert more, rest[-1]
    assert rest[:-1] == LONG[:len(rest) - 1]
    assert len(rest) - 1 + int(more.group(1)) == len(LONG)
    assert len(output.encode()) + len(LONG[0]) + 1 >= runner.OUTPUT_MAX  # nothing cut early


def test_vvv_is_not_cut():
    status, output = toy_run(THREE, verbose=3, details=LONG)
    assert status == 0
    assert output.splitlines()[1:] == LONG
    assert len(output.encode()) > runner.OUTPUT_MAX


def test_short_output_is_left_as_it_is():
    status, output = toy_run(THREE, verbose=2, details=LONG[:3])
    assert output.splitlines()[1:] == LONG[:3]
