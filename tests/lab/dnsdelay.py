"""A UDP DNS forwarder in front of the lab NSD that adds latency or never answers.

NSD answers every query at once, and answers every query it gets; the lab
needs two behaviours no real server produces on demand:

- a fixed answer latency (the benchmark: 100 ms per query). The usual way,
  netem on a veth pair to NSD in a network namespace, is not available on
  kernels without sch_netem (this lab machine's kernel has no netem qdisc and
  no loadable modules), so the delay is added here;
- a zone that never answers (the deadline test): queries for names under a
  "drop" suffix are read and never answered.

Everything else goes to NSD verbatim and NSD's reply comes back verbatim: the
answers are the real server's. Run as a process of its own so that its work
does not share the plugin's interpreter:

    python -m tests.lab.dnsdelay --listen 127.0.28.55:5353 \\
        --upstream 127.0.25.53:53 --delay 0.1 --drop timeout.bl.lab.test
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import time


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def _qname(data: bytes) -> str:
    """The question name of a query, lower case, without the trailing dot ('' if unreadable)."""
    labels, pos = [], 12
    try:
        while True:
            length = data[pos]
            if length == 0:
                break
            labels.append(data[pos + 1:pos + 1 + length].decode("ascii", "replace"))
            pos += 1 + length
    except IndexError:
        return ""
    return ".".join(labels).lower()


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, future: asyncio.Future):
        self.future = future

    def datagram_received(self, data, addr):
        if not self.future.done():
            self.future.set_result(data)


class Forwarder(asyncio.DatagramProtocol):
    def __init__(self, upstream, delay: float, drop: tuple):
        self.upstream = upstream
        self.delay = delay
        self.drop = tuple(d.lower().rstrip(".") for d in drop)
        self.transport = None
        self.tasks: set = set()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        name = _qname(data)
        if any(name == d or name.endswith("." + d) for d in self.drop):
            return  # the server that never answers
        task = asyncio.ensure_future(self._relay(data, addr))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _relay(self, data, addr):
        loop = asyncio.get_running_loop()
        if self.delay:
            await asyncio.sleep(self.delay)
        future = loop.create_future()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Reply(future), remote_addr=self.upstream)
        try:
            transport.sendto(data)
            reply = await asyncio.wait_for(future, 5)
        except asyncio.TimeoutError:
            return
        finally:
            transport.close()
        self.transport.sendto(reply, addr)


async def serve(listen, upstream, delay, drop):
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        lambda: Forwarder(upstream, delay, drop), local_addr=listen)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    print("ready", flush=True)
    await stop
    transport.close()


class DelayingDns:
    """The forwarder as a child process: `start()`, `stop()`, `server_arg`."""

    def __init__(self, listen: tuple[str, int], upstream: tuple[str, int], *,
                 delay: float = 0.0, drop=()):
        self.listen = listen
        self.upstream = upstream
        self.delay = delay
        self.drop = tuple(drop)
        self.process: subprocess.Popen | None = None

    @property
    def server_arg(self) -> str:
        return f"{self.listen[0]}:{self.listen[1]}"

    def start(self, wait: float = 10.0) -> DelayingDns:
        cmd = [sys.executable, "-m", "tests.lab.dnsdelay",
               "--listen", self.server_arg,
               "--upstream", f"{self.upstream[0]}:{self.upstream[1]}",
               "--delay", str(self.delay)]
        for suffix in self.drop:
            cmd += ["--drop", suffix]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        end = time.monotonic() + wait
        line = self.process.stdout.readline()  # "ready" once the socket is bound
        if line.strip() != "ready" or time.monotonic() > end:
            self.stop()
            raise RuntimeError("dnsdelay did not start")
        return self

    def stop(self) -> None:
        from tests.lab.authdns import stop_process

        stop_process(self.process)
        if self.process and self.process.stdout:
            self.process.stdout.close()
        self.process = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="ADDR:PORT to answer on")
    parser.add_argument("--upstream", required=True, help="ADDR:PORT of the real server")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added per query")
    parser.add_argument("--drop", action="append", default=[],
                        help="never answer names under this suffix (repeatable)")
    args = parser.parse_args(argv)
    asyncio.run(serve(_split(args.listen), _split(args.upstream), args.delay,
                      tuple(args.drop)))


if __name__ == "__main__":
    main()


def measure_latency(server: tuple[str, int], qname: str, samples: int = 5) -> float:
    """Median round trip of one query for `qname` through `server`, in seconds."""
    import statistics

    import dns.message
    import dns.query

    times = []
    for _ in range(samples):
        query = dns.message.make_query(qname, "A")
        started = time.monotonic()
        dns.query.udp(query, server[0], port=server[1], timeout=5)
        times.append(time.monotonic() - started)
    return statistics.median(times)
