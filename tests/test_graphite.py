"""Perfdata as Graphite and InfluxDB keep it: Icinga 2's GraphiteWriter feeding a real
Carbon, its InfluxdbWriter a real InfluxDB.

A master (`icinga2 daemon`, as in tests/test_icinga_daemon.py) loads the shipped
icinga2-conf/ and one host whose mail domain is graph.posture.test (tests/lab/world.py:
mx1.graph and mx2.graph on the lab Postfix), plus the GraphiteWriter feature pointed at
a Carbon of its own (tests/lab/carbon.py) and the InfluxdbWriter at an InfluxDB of its
own (tests/lab/influx.py). Every service the shipped apply rules make for that domain
is forced through the API; what Carbon then holds is what a user's graphs are made of:
`icinga2.<host>.services.<service>.<command>.perfdata.<label>.value`, a folder per
dot; InfluxDB holds a series per label (its tag `metric`). Then mx1.graph moves to
another lab Postfix address and every service runs again: a graph must go on, so no
metric path and no series may be new.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.icinga import (
    ICINGA2,
    IcingaNode,
    Pki,
    graphite_writer,
    influxdb_writer,
    install_for_nagios,
    private_dir,
    site_includes,
)

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(not Path(ICINGA2).exists(), reason="icinga2 is not installed"),
              pytest.mark.skipif(not Path("/usr/bin/carbon-cache").exists(),
                                 reason="graphite-carbon is not installed (run `make install`)"),
              pytest.mark.skipif(not Path("/usr/bin/influxd").exists(),
                                 reason="influxdb is not installed (run `make install`)")]

DOMAIN = "graph.posture.test"
HOST = "graph.lab"
MX1_BEFORE = "mx1.graph  A  127.0.25.1"
MX1_AFTER = "mx1.graph  A  127.0.25.17"  # the lab Postfix "stocklimits", as mx1 otherwise

SITE = """
object Host "graph.lab" {
  import "smtp-posture-host"
  address = "127.0.25.1"
  vars.mail_domains["graph.posture.test"] = {
    dns_server = "{dns}"
    mx_sanity_allow_private = true
  }
}
"""

#: folders a host name or an address would make: its DNS labels, an octet
FRAGMENT = re.compile(r"^(?:\d+|mx1|mx2|graph|posture|test|.*_\d+)$")


@dataclass(frozen=True)
class Run:
    results: dict  # host!service -> the last check result
    paths: list  # the metric paths Carbon wrote during the run
    series: list  # every series InfluxDB has after the run

    def perf_labels(self) -> set:
        return perf_labels(self.results)


def perf_labels(results: dict) -> set:
    """(service, label) of every perfdata item of the check results."""
    return {(name, item.split("=", 1)[0].strip("'"))
            for name, result in results.items()
            for item in result["performance_data"] or []}


def wait_until(predicate, timeout: float, what: str, node: IcingaNode):
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"{what} within {timeout} s; daemon log:\n"
                                 + node.log()[-4000:])
        time.sleep(0.25)


def run_services(master: IcingaNode, carbon, influx) -> Run:
    """Force every service of the master, wait for the results and for Carbon to
    have written a metric per perfdata item (at most 30 s); what it wrote meanwhile,
    and the series InfluxDB then has."""
    forced_at = time.time()
    master.api("POST", "/v1/actions/reschedule-check",
               {"type": "Service", "filter": "true", "force": True})
    results: dict = {}

    def all_checked() -> bool:
        services = master.services()
        results.clear()
        results.update({name: attrs["last_check_result"] for name, attrs in services.items()
                        if attrs["last_check_result"]
                        and attrs["last_check_result"]["schedule_start"] >= forced_at - 1})
        return len(results) == len(services)

    wait_until(all_checked, 120, "every service checked", master)
    items = perf_labels(results)
    paths = carbon.wait_for_metrics(len(items), since=forced_at)
    labels = {label for _, label in items}
    wait_until(lambda: labels <= set(metric_tags(influx.series())), 30,
               "every perfdata label a series in InfluxDB", master)
    return Run(results, paths, influx.series())


@pytest.fixture(scope="module")
def graphite(lab, lab_dns):
    """(the run before, the run after mx1.graph moved, the Carbon, the InfluxDB) of every
    graph.posture.test service."""
    from tests.lab.carbon import LabCarbon
    from tests.lab.influx import DATABASE, LabInflux

    zone = "posture.test."
    lab_dns.reload()  # the shared NSD may come from a tree without graph.posture.test
    files = private_dir("graphite-lab-")
    pki = master = None
    try:
        with LabCarbon(files / "carbon") as carbon, LabInflux(files / "influx") as influx:
            installed = install_for_nagios(files / "etc")
            pki = Pki(private_dir("icinga-pki-"))
            objects = SITE.replace("{dns}", lab_dns.server_arg) \
                + graphite_writer(carbon.address, carbon.port) \
                + influxdb_writer(influx.address, influx.port, DATABASE)
            master = IcingaNode("graph-master", pki, includes=site_includes(installed),
                                objects=objects)
            master.start()
            # The writer drops what arrives while it is not connected (it reconnects
            # every 10 s): the checks start once it is.
            wait_until(lambda: master.api("GET", "/v1/objects/graphitewriters")
                       ["results"][0]["attrs"]["connected"], 30,
                       "the GraphiteWriter connected to Carbon", master)
            before = run_services(master, carbon, influx)
            original = lab_dns.zones[zone]
            assert MX1_BEFORE in original
            lab_dns.zones[zone] = original.replace(MX1_BEFORE, MX1_AFTER)
            lab_dns.reload()
            try:
                after = run_services(master, carbon, influx)
            finally:
                lab_dns.zones[zone] = original
                lab_dns.reload()
            yield before, after, carbon, influx
    finally:
        if master is not None:
            master.stop()
            shutil.rmtree(master.workdir, ignore_errors=True)
        if pki is not None:
            shutil.rmtree(pki.workdir, ignore_errors=True)
        shutil.rmtree(files, ignore_errors=True)


def service_folder(service: str) -> str:
    """How the GraphiteWriter writes a service name in a metric path."""
    return re.sub(r"[ .\\/]", "_", service)


def split(path: str):
    """(service folder, the folders under perfdata) of an Icinga 2 metric path."""
    parts = path.split(".")
    assert parts[:3] == ["icinga2", service_folder(HOST), "services"], path
    assert parts[5] == "perfdata" and parts[-1] == "value", path
    return parts[3], parts[6:-1]


def test_every_service_of_the_domain_sends_its_perfdata_to_carbon(graphite):
    before, after, *_ = graphite
    services = {name.split("!")[1] for name in before.results}
    assert {f"{kind}-{DOMAIN}" for kind in ("smtp", "mx", "dnsbl", "spf", "open-relay")} \
        <= services
    with_perfdata = {service_folder(name.split("!")[1]) for name, result in
                     before.results.items() if result["performance_data"]}
    assert {split(path)[0] for path in before.paths} == with_perfdata
    assert {split(path)[0] for path in after.paths} == with_perfdata


def test_one_folder_per_service_and_one_per_label(graphite):
    """No folder is made of a host name's or an address's fragment (mx1, posture, 127)."""
    before, after, *_ = graphite
    made = [(path, folders) for path in before.paths + after.paths
            for _, folders in [split(path)]]
    offending = [path for path, folders in made
                 if len(folders) != 1 or FRAGMENT.match(folders[0])]
    assert offending == [], "\n".join(["metric paths with folders made of a label's "
                                        "fragments:", *offending])
    assert all(re.fullmatch(r"[a-z0-9_]+", folders[0]) for _, folders in made)


def test_an_mx_address_change_writes_to_the_same_metric_paths(graphite):
    before, after, carbon, _ = graphite
    assert after.paths, "the second run wrote nothing"
    new = sorted(set(after.paths) - set(before.paths))
    assert new == [], "\n".join(["new metric paths after the MX moved:", *new])
    assert carbon.metric_paths() == before.paths


def metric_tags(series: list) -> list:
    """The `metric` tag (the perfdata label) of each InfluxDB series."""
    return [tag.partition("=")[2] for line in series for tag in line.split(",")
            if tag.startswith("metric=")]


def test_every_perfdata_label_is_an_influxdb_series(graphite):
    before, after, *_ = graphite
    assert sorted({label for _, label in before.perf_labels()}) == \
        sorted(set(metric_tags(before.series)))


def test_an_mx_address_change_makes_no_new_influxdb_series(graphite):
    """A label that names an address starts a new series when the address changes
    (cardinality grows, the old graph ends)."""
    before, after, *_ = graphite
    new = sorted(set(after.series) - set(before.series))
    assert new == [], "\n".join(["new InfluxDB series after the MX moved:", *new])
    assert all(re.fullmatch(r"[a-z0-9_]+", tag) for tag in metric_tags(after.series))
