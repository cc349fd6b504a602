"""What every scripted lab server shares: threads, open connections, a clean stop.

FakeSmtpServer (fakesmtp.py), HostileServer (hostile.py) and FakeDns
(fakedns.py) differ in what they say; they all accept connections on a listener
with a short timeout, serve each in a daemon thread, cap how many are open, and
on stop wake every blocked accept() and recv() at once, so a test never waits
for a stalled client or server. Subclasses call `__init__`, start their
listener(s) with `_spawn(self._accept_loop, listener)`, and implement
`_serve(conn, peer)`; the connection is closed and forgotten after it.
"""

from __future__ import annotations

import socket
import threading


class ThreadedServer:
    #: connections served at once; one more is closed at accept
    max_connections = 32
    thread_name = "lab-server"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listeners: list[socket.socket] = []

    def start(self):  # pragma: no cover - every subclass has its own
        raise NotImplementedError

    def _serve(self, conn: socket.socket, peer) -> None:  # pragma: no cover
        raise NotImplementedError

    def _spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name=self.thread_name)
        self._threads.append(thread)
        thread.start()

    def _listen(self, listener: socket.socket) -> None:
        """Serve the connections of `listener` (which has a timeout) until stop()."""
        self._listeners.append(listener)
        self._spawn(self._accept_loop, listener)

    def _accept_loop(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = listener.accept()
            except OSError:  # the timeout tick, or the listener closed
                continue
            with self._lock:
                busy = len(self._conns) >= self.max_connections
                if not busy:
                    self._conns.add(conn)
            if busy:
                conn.close()
                continue
            self._spawn(self._serve_and_close, conn, peer)

    def _serve_and_close(self, conn: socket.socket, peer) -> None:
        try:
            self._serve(conn, peer)
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _stop_threads(self, *sockets: socket.socket | None) -> None:
        """Wake and join every thread; close the listeners and `sockets` (say, a UDP one)."""
        self._stop.set()
        for listener in self._listeners:
            try:  # wakes the accept() at once (Linux)
                listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in list(self._threads):
            thread.join(3.0)
        for sock in [*self._listeners, *sockets]:
            if sock is not None:
                sock.close()
        self._listeners = []

    def stop(self) -> None:
        self._stop_threads()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
