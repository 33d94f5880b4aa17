"""gzip in bounded steps: every step's output within its bound, whatever the ratio; NotGzip for what is not gzip."""

from __future__ import annotations

import gzip
import random

import pytest

from broker.devsupport.gzip_bomb import MiB, gzip_bomb
from broker.gzipstream import Deflater, Inflater, NotGzip, gzip_small

MOST = 64 * 1024


def inflate(data: bytes, piece: int, most: int = MOST) -> bytes:
    inflater = Inflater(most)
    out = []
    for start in range(0, len(data), piece):
        inflater.feed(data[start : start + piece])
        while inflater.more:
            step = inflater.step()
            assert len(step) <= most
            out.append(step)
    inflater.finish()
    return b"".join(out)


def test_round_trips_in_any_pieces_and_members() -> None:
    rnd = random.Random(14)
    for _ in range(50):
        members = [rnd.randbytes(rnd.randint(0, 5000)) + bytes(rnd.randint(0, 200_000)) for _ in range(3)]
        body = b"".join(gzip.compress(member, compresslevel=rnd.randint(0, 9)) for member in members)
        assert inflate(body, rnd.randint(1, 70_000), rnd.randint(1, 100_000)) == b"".join(members)


def test_a_bomb_inflates_in_steps_of_at_most_most() -> None:
    inflater = Inflater(MOST)
    inflater.feed(gzip_bomb(16))
    steps = 0
    while inflater.more:
        assert len(inflater.step()) <= MOST
        steps += 1
    inflater.finish()
    assert inflater.decoded == 16 * MiB
    assert steps >= 16 * MiB // MOST


@pytest.mark.parametrize(
    "body",
    [b"plain text", gzip.compress(b"x" * 1000)[:-1], gzip.compress(b"x") + b"\0\0", gzip.compress(b"x")[:4]],
    ids=["not gzip", "cut short", "zeros after it", "header only"],
)
def test_what_is_not_whole_gzip_is_refused(body: bytes) -> None:
    with pytest.raises(NotGzip):
        inflate(body, 3)


def test_nothing_fed_is_nothing_decoded() -> None:
    assert Inflater(MOST).finish() == b""


def test_feeding_before_the_piece_is_used_up_is_a_mistake() -> None:
    inflater = Inflater(MOST)
    inflater.feed(gzip.compress(b"x"))
    with pytest.raises(RuntimeError):
        inflater.feed(b"more")


def test_deflater_steps_stay_within_most_even_for_incompressible_bytes() -> None:
    """Random bytes do not compress: a step's output is its input plus deflate's framing and what it held back."""
    most = 256 * 1024
    deflater = Deflater(most, level=1)
    data = random.Random(1).randbytes(3 * most + 123)
    out = []
    for start in range(0, len(data), most):
        deflater.feed(data[start : start + most])
        while deflater.more:
            step = deflater.step()
            assert len(step) <= most
            out.append(step)
    out.append(deflater.finish())
    assert gzip.decompress(b"".join(out)) == data


@pytest.mark.parametrize("size", [0, 1, 200, 64 * 1024])
def test_gzip_small_is_one_member_of_the_whole_body(size: int) -> None:
    data = random.Random(size).randbytes(size // 2) + b"x" * (size - size // 2)
    coded = gzip_small(data, 1)
    assert gzip.decompress(coded) == data
    assert len(coded) <= len(data) + 64  # never much larger: no step bound needed
