"""A network path with latency in front of lab servers: a delaying TCP proxy (and DNS).

The lab answers in microseconds; a monitoring host 50 ms from an MX does not.
netem would add the delay in the kernel, but this lab machine's kernel has no
sch_netem (tests/lab/dnsdelay.py says the same), so the path is a proxy:

- TCP: each chunk read from one side is written to the other `delay` seconds
  after it arrived, in order, without waiting for the chunks before it to be
  answered: bytes stay in flight, as on a wire (no bandwidth limit). A close
  (FIN) or a reset travels the same way. The TCP handshake is modelled too:
  the proxy connects upstream three one-way delays after it accepted the
  client (SYN, SYN-ACK, ACK), so the server's first bytes reach the client two
  round trips after it connected, as on a real path. The client's own connect()
  returns at once (loopback), so that round trip shows in what it waits for next.
- UDP (DNS): tests/lab/dnsdelay.py's forwarder, one round trip (two one-way
  delays) per query.

Two ways to put it in front of a client:

- addresses of its own: `--tcp 127.0.27.60:0=127.0.25.1:25` listens on a free
  port of 127.0.27.60 and forwards to the lab's mx1 (`ports` says which);
- a network namespace (`--netns NAME`, made by DelayedPath): inside it the
  proxy listens on the lab's own addresses and ports and forwards each to the
  same address outside, so a plugin run in the namespace (`ip netns exec NAME`)
  meets every lab server, DNS included, one path away, with no option changed.

Run as a process of its own, so that its work does not share the plugin's or
the benchmark's interpreter:

    python -m tests.lab.pathdelay --delay 0.05 --tcp 127.0.27.60:0=127.0.25.1:25
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

#: the TCP handshake before the server sees the connection: SYN, SYN-ACK, ACK
HANDSHAKE_DELAYS = 3
CHUNK = 65536


def _split(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


async def _pump(reader: asyncio.StreamReader, writer_ready: asyncio.Future,
                delay: float) -> None:
    """One direction: what `reader` gets at t is written at t + delay, in order."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    async def carry() -> None:
        writer = await writer_ready
        if writer is None:
            return
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                if data:
                    writer.write(data)
                    await writer.drain()
                    continue
                if data == b"" and writer.can_write_eof():
                    writer.write_eof()
                else:  # None: a reset on the other side, passed on as one
                    writer.transport.abort()
            except (ConnectionError, OSError):
                pass
            return

    carrier = asyncio.ensure_future(carry())
    while True:
        try:
            data = await reader.read(CHUNK)
        except (ConnectionError, OSError):
            data = None
        queue.put_nowait((loop.time() + delay, data))
        if not data:
            break
    await carrier


async def _connection(client_reader, client_writer, upstream, delay: float) -> None:
    loop = asyncio.get_running_loop()
    upstream_writer: asyncio.Future = loop.create_future()
    client_ready: asyncio.Future = loop.create_future()
    client_ready.set_result(client_writer)
    to_server = asyncio.ensure_future(_pump(client_reader, upstream_writer, delay))
    try:
        await asyncio.sleep(HANDSHAKE_DELAYS * delay)
        try:
            server_reader, server_writer = await asyncio.open_connection(*upstream)
        except OSError:
            upstream_writer.set_result(None)
            client_writer.transport.abort()
            return
        upstream_writer.set_result(server_writer)
        await asyncio.gather(to_server, _pump(server_reader, client_ready, delay))
        server_writer.close()
    finally:
        if not upstream_writer.done():
            upstream_writer.set_result(None)
        to_server.cancel()
        client_writer.close()


def _in_namespace(name: str | None, make):
    """`make()` run with this thread in network namespace `name` (None: where we are)."""
    if name is None:
        return make()
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    clone_newnet = 0x40000000
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    there = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(there, clone_newnet) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name} failed")
        try:
            return make()
        finally:
            if libc.setns(home, clone_newnet) != 0:
                raise OSError(ctypes.get_errno(), "setns back failed")
    finally:
        os.close(home)
        os.close(there)


def _listeners(tcp: list, udp: list, netns: str | None) -> tuple[list, list]:
    def make():
        made_tcp = [socket.create_server(listen) for listen, _ in tcp]
        made_udp = []
        for listen, _ in udp:
            sock = socket.socket(socket.AF_INET6 if ":" in listen[0] else socket.AF_INET,
                                 socket.SOCK_DGRAM)
            sock.bind(listen)
            made_udp.append(sock)
        return made_tcp, made_udp

    return _in_namespace(netns, make)


async def serve(tcp: list, udp: list, delay: float, netns: str | None) -> None:
    from tests.lab.dnsdelay import Forwarder

    tcp_socks, udp_socks = _listeners(tcp, udp, netns)
    loop = asyncio.get_running_loop()
    servers = []
    for sock, (_, upstream) in zip(tcp_socks, tcp):
        servers.append(await asyncio.start_server(
            lambda r, w, up=upstream: _connection(r, w, up, delay), sock=sock))
    transports = []
    for sock, (_, upstream) in zip(udp_socks, udp):
        transport, _ = await loop.create_datagram_endpoint(
            lambda up=upstream: Forwarder(up, 2 * delay, ()), sock=sock)
        transports.append(transport)
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set_result, None)
    ports = [s.getsockname()[1] for s in tcp_socks + udp_socks]
    print("ready " + " ".join(map(str, ports)), flush=True)
    await stop
    for server in servers:
        server.close()
    for transport in transports:
        transport.close()


class DelayedPath:
    """The proxy as a child process. `tcp`/`udp`: (listen, upstream) pairs of
    (address, port); a listen port of 0 takes a free one (`ports` after start()).

    With `netns=True` the path gets a network namespace of its own (only lo),
    `command(argv)` runs a program inside it, and a listen address of None means
    the upstream's own address and port.
    """

    def __init__(self, delay: float, *, tcp=(), udp=(), netns: bool = False):
        self.delay = delay
        self.netns = f"csp-path-{os.getpid()}-{id(self) % 10000}" if netns else None
        self.tcp = [(listen or up, up) for listen, up in tcp]
        self.udp = [(listen or up, up) for listen, up in udp]
        self.ports: list[int] = []
        self.process: subprocess.Popen | None = None

    def command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)

    def start(self, wait: float = 10.0) -> DelayedPath:
        if self.netns:
            subprocess.run(["ip", "netns", "add", self.netns], check=True)
            subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
        cmd = [sys.executable, "-m", "tests.lab.pathdelay", "--delay", str(self.delay)]
        if self.netns:
            cmd += ["--netns", self.netns]
        for kind, pairs in (("--tcp", self.tcp), ("--udp", self.udp)):
            for listen, up in pairs:
                cmd += [kind, f"{listen[0]}:{listen[1]}={up[0]}:{up[1]}"]
        self.process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        end = time.monotonic() + wait
        line = self.process.stdout.readline()
        if not line.startswith("ready") or time.monotonic() > end:
            errors = self.process.stderr.read() if self.process.poll() is not None else ""
            self.stop()
            raise RuntimeError(f"pathdelay did not start: {line.strip()} {errors.strip()}")
        self.ports = [int(p) for p in line.split()[1:]]
        return self

    def stop(self) -> None:
        from tests.lab.authdns import stop_process

        stop_process(self.process)
        if self.process is not None:
            for stream in (self.process.stdout, self.process.stderr):
                if stream:
                    stream.close()
        self.process = None
        if self.netns:
            subprocess.run(["ip", "netns", "del", self.netns], check=False,
                           stderr=subprocess.DEVNULL)

    def __enter__(self) -> DelayedPath:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--delay", type=float, required=True,
                        help="seconds each chunk takes one way (a round trip is twice that)")
    parser.add_argument("--tcp", action="append", default=[], metavar="LISTEN=UPSTREAM",
                        help="ADDR:PORT=ADDR:PORT to proxy (repeatable; port 0: any)")
    parser.add_argument("--udp", action="append", default=[], metavar="LISTEN=UPSTREAM",
                        help="ADDR:PORT=ADDR:PORT to forward DNS queries (repeatable)")
    parser.add_argument("--netns", help="listen inside this network namespace (ip netns)")
    args = parser.parse_args(argv)

    def pairs(items):
        return [tuple(_split(part) for part in item.split("=", 1)) for item in items]

    asyncio.run(serve(pairs(args.tcp), pairs(args.udp), args.delay, args.netns))


if __name__ == "__main__":
    main()
