"""A gzip body that inflates enormously (zeros, about 1,000 to 1), built in a second rather than by compressing.

Compressing a gibibyte of zeros at level 9 takes tens of seconds. But once deflate's window is all zeros, a
mebibyte of zeros followed by a full flush compresses to the same bytes every time; so the body is the first
such block, that repeated block as often as needed, and a trailer whose CRC-32 and length are computed here.
Used by the gzip bomb test and benchmarks/bomb.py.
"""

from __future__ import annotations

import zlib

MiB = 1024 * 1024
_ZEROS = bytes(MiB)


def gzip_bomb(decoded_mib: int) -> bytes:
    """One gzip member that decodes to decoded_mib MiB of zeros (at least 2)."""
    if decoded_mib < 2:
        raise ValueError("a bomb of at least 2 MiB")
    encoder = zlib.compressobj(9, zlib.DEFLATED, 31)
    first = encoder.compress(_ZEROS) + encoder.flush(zlib.Z_FULL_FLUSH)
    repeated = encoder.compress(_ZEROS) + encoder.flush(zlib.Z_FULL_FLUSH)
    # Z_FINISH after a full flush: an empty final block, then the trailer (CRC-32, length), replaced below.
    final_block = encoder.flush()[:-8]
    crc = 0
    for _ in range(decoded_mib):
        crc = zlib.crc32(_ZEROS, crc)
    trailer = crc.to_bytes(4, "little") + (decoded_mib * MiB % 2**32).to_bytes(4, "little")
    return first + repeated * (decoded_mib - 1) + final_block + trailer
