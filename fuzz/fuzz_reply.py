"""atheris target: the SMTP reply reader (smtp/reply.py) and EHLO keyword parsing.

The fuzz input is the byte stream a server sends. It is read twice through
LineReader.read_reply: once arriving in one piece, once cut into segments of
pseudo-random sizes (with poll() calls between replies, as the dialogue does).
TCP may segment a stream any way it likes, so both readings must give the same
replies and end with the same kind of error. The library's typed SmtpError is
the expected way to end; any other exception is a finding and is left to
propagate so atheris records the input.

Run: python3 fuzz/fuzz_reply.py [libFuzzer flags] [corpus dirs]
"""

from __future__ import annotations

import random
import sys
import zlib

try:
    import atheris
    instrumented = atheris.instrument_imports
except ImportError:  # replaying the corpus (tests/test_fuzz_corpus.py) needs no atheris
    from contextlib import nullcontext as instrumented

with instrumented():
    from check_smtp_posture.deadline import Deadline
    from check_smtp_posture.smtp.dialogue import Extensions
    from check_smtp_posture.smtp.errors import SmtpError
    from check_smtp_posture.smtp.reply import MAX_LINE, LineReader, parse_reply


class ChunkSocket:
    """Just enough of a socket for LineReader: recv() hands out chunks, then EOF."""

    def __init__(self, chunks: list[bytes]):
        self._chunks = list(chunks)
        self.timeouts: list = []

    def settimeout(self, value) -> None:
        self.timeouts.append(value)

    def recv(self, size: int) -> bytes:
        if not self._chunks:
            return b""  # EOF, for as long as the reader keeps asking
        chunk = self._chunks.pop(0)
        if len(chunk) > size:  # a real recv() never returns more than asked
            chunk, rest = chunk[:size], chunk[size:]
            self._chunks.insert(0, rest)
        return chunk


def split(data: bytes, rng: random.Random) -> list[bytes]:
    """Cut the stream at pseudo-random places: single bytes, small and large segments."""
    chunks = []
    pos = 0
    while pos < len(data):
        size = rng.choice((1, 1, 2, 3, 7, 64, 512, MAX_LINE - 1, MAX_LINE + 1))
        chunks.append(data[pos:pos + size])
        pos += size
    return chunks


def check_reply(reply, raw: list[str]) -> None:
    assert 200 <= reply.code <= 599, reply
    assert reply.category in (2, 3, 4, 5), reply
    assert len(reply.lines) == len(raw) >= 1, (reply, raw)
    assert parse_reply(raw, "fuzz") == reply, (reply, raw)  # the reader and parser agree
    enhanced = reply.enhanced
    if enhanced is not None:
        assert enhanced[0] == str(reply.code)[0], (reply, enhanced)
    str(reply)
    _ = reply.text, reply.first_line, reply.positive, reply.transient, reply.permanent
    # what the dialogue does with an EHLO reply
    ext = Extensions.from_reply(reply)
    ext.auth_mechanisms  # noqa: B018 - property under test
    _ = "STARTTLS" in ext, ext.params("SIZE")


def read_all(chunks: list[bytes], rng: random.Random | None) -> tuple[list, str, int]:
    """Replies read until the reader raises; (replies, error class name, bytes read)."""
    sock = ChunkSocket(chunks)
    reader = LineReader(sock, Deadline(3600.0))
    replies = []
    while True:
        try:
            reply, raw = reader.read_reply("fuzz")
        except SmtpError as exc:
            assert exc.phase == "fuzz", exc
            return replies, type(exc).__name__, reader.bytes_read
        check_reply(reply, raw)
        replies.append((reply, raw))
        if rng is not None and rng.random() < 0.3:
            reader.poll()  # the dialogue peeks for unasked replies between commands


def test_one_input(data: bytes) -> None:
    whole = read_all([data] if data else [], None)
    rng = random.Random(zlib.crc32(data))
    pieces = read_all(split(data, rng), rng)
    assert whole[0] == pieces[0], "replies depend on how the stream was segmented"
    assert whole[1] == pieces[1], f"ending depends on segmentation: {whole[1]} vs {pieces[1]}"
    # parse_reply on its own, over the lines as a caller could hand them in
    lines = data.decode("utf-8", "replace").split("\r\n")
    try:
        reply = parse_reply(lines[:200], "fuzz")
    except SmtpError:
        return
    assert 200 <= reply.code <= 599, reply


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
