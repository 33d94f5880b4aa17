"""gzip coded in bounded steps: the decoder that upload checks and download decoding share, and the encoder.

A gzip body a few megabytes long can inflate to gigabytes, so nothing here ever asks zlib for "all the output
of this input": a step yields at most `most` bytes and keeps the input it has not used yet (zlib's
unconsumed_tail), so memory stays near one step's output whatever the compression ratio. Callers feed a piece,
then take steps while `more`: each step is a plain call they can run on a worker thread (zlib releases the GIL)
and charge to a memory budget.
"""

from __future__ import annotations

import zlib

GZIP_WBITS = 31  # gzip container, not raw deflate or zlib


class NotGzip(Exception):
    """The bytes are not (whole) gzip: a bad header or checksum, corrupt deflate data, or a stream cut short."""


class Inflater:
    """Decodes gzip fed piece by piece, member after member (RFC 1952 allows several in a row, and
    `cat a.gz b.gz` makes such a file), in steps of at most `most` bytes of output."""

    def __init__(self, most: int):
        if most <= 0:
            raise ValueError("a step must be allowed some output")
        self._most = most
        self._decoder = zlib.decompressobj(wbits=GZIP_WBITS)
        self._pending = b""
        self._full = False
        self._fed = False
        #: Bytes of output so far.
        self.decoded = 0

    @property
    def more(self) -> bool:
        """Whether step() may still produce output from what was fed: input is left, or the last step was full
        (zlib may hold more output even when all the input is in)."""
        return bool(self._pending) or self._full

    def feed(self, data: bytes) -> None:
        """Take the next piece of input; only once the previous one is used up (more is False)."""
        if self.more:
            raise RuntimeError("feed() before the previous piece was used up")
        self._pending = data
        self._fed = self._fed or bool(data)

    def step(self) -> bytes:
        """At most `most` bytes of output (possibly none); raises NotGzip where the input is not gzip."""
        if self._decoder.eof:
            if not self._pending:
                self._full = False
                return b""
            # Another member follows; its header is checked like the first one's.
            self._decoder = zlib.decompressobj(wbits=GZIP_WBITS)
        try:
            out = self._decoder.decompress(self._pending, self._most)
        except zlib.error as exc:
            raise NotGzip(str(exc)) from None
        self._full = len(out) == self._most
        self._pending = self._decoder.unused_data if self._decoder.eof else self._decoder.unconsumed_tail
        self.decoded += len(out)
        return out

    def drain(self) -> None:
        """Take every remaining step of the current piece, dropping the output (a check needs no output)."""
        while self.more:
            self.step()

    def finish(self) -> bytes:
        """Raise NotGzip unless the input ended exactly at the end of a gzip member (or there was none)."""
        if self._fed and (self.more or not self._decoder.eof):
            raise NotGzip("gzip stream cut short")
        return b""


class Deflater:
    """Encodes into one gzip member, fed piece by piece. A step compresses `most // 2` bytes of input, and its
    output (those bytes compressed, plus what deflate held back from the step before: at most its 64 KiB
    pending buffer at the default memLevel) stays within `most` bytes for any `most` of 256 KiB or more."""

    def __init__(self, most: int, level: int):
        self._slice = max(1, most // 2)
        self._encoder = zlib.compressobj(level, zlib.DEFLATED, GZIP_WBITS)
        self._pending = memoryview(b"")

    @property
    def more(self) -> bool:
        return bool(self._pending)

    def feed(self, data: bytes) -> None:
        if self.more:
            raise RuntimeError("feed() before the previous piece was used up")
        self._pending = memoryview(data)

    def step(self) -> bytes:
        taken, self._pending = self._pending[: self._slice], self._pending[self._slice :]
        return self._encoder.compress(taken)

    def finish(self) -> bytes:
        """The rest of the member: what deflate still holds, and the gzip trailer."""
        return self._encoder.flush()


#: deflate's memory for gzip_small: a quarter of the default's hash and buffer sizes, so setting it up costs about a
#: third (30 against 90 us a body here), and a 64 KiB body comes out within 0.2 % of the default's size.
SMALL_MEM_LEVEL = 4


def gzip_small(data: bytes, level: int) -> bytes:
    """One gzip member of a body small enough to code in one call (its output is no larger than it plus a few
    bytes, so no step bound is needed)."""
    encoder = zlib.compressobj(level, zlib.DEFLATED, GZIP_WBITS, SMALL_MEM_LEVEL)
    return encoder.compress(data) + encoder.flush()
