"""Hypothesis strategies that damage valid inputs, and the settings every fuzz test runs under.

The runs are bounded and reproducible for CI: a fixed number of examples, a deadline per
example, ``derandomize=True`` (the same examples on every run) and no example database.
``MRINODE_FUZZ_SCALE=N`` multiplies the examples and draws them at random instead, for a
longer local hunt; any crash found that way is saved under ``tests/fuzz/findings/`` and
replayed by ``test_findings.py``.
"""

from __future__ import annotations

import os
import struct
import zlib
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.fuzz.corpus import DEFLATED_LE, EXPLICIT_BE, Seed, element_length_fields, seeds

__all__ = ["byte_mutations", "fuzz_settings", "inflate", "length_corruptions", "mutated_dataset", "mutated_seed"]

#: Length values that break parsers: zero, odd, off by one, undefined, near 2**32, 2**16 - 1.
INTERESTING_LENGTHS = (0, 1, 2, 3, 7, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF)


def fuzz_settings(max_examples: int, deadline_ms: int = 2000) -> settings:
    """The settings of one fuzz test: bounded, reproducible, quiet.

    Parameters
    ----------
    max_examples : int
        Examples in CI (multiplied by ``MRINODE_FUZZ_SCALE`` when set).
    deadline_ms : int
        The most one example may take (a slow example is a finding too: a hang).

    Returns
    -------
    hypothesis.settings
        Usable as a decorator.
    """
    scale = int(os.environ.get("MRINODE_FUZZ_SCALE", "1") or 1)
    return settings(
        max_examples=max_examples * max(1, scale),
        deadline=timedelta(milliseconds=deadline_ms),
        derandomize=scale <= 1,
        database=None,
        print_blob=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def inflate(seed: Seed) -> bytes:
    """The seed's dataset bytes, inflated if its transfer syntax is deflated."""
    if seed.transfer_syntax == DEFLATED_LE:
        return zlib.decompress(seed.stream, -zlib.MAX_WBITS)
    return seed.stream


def _deflate(raw: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return c.compress(raw) + c.flush()


@st.composite
def byte_mutations(draw: Any, data: bytes, max_ops: int = 4) -> bytes:
    """``data`` with a few byte-level changes: flips, overwrites, cuts, insertions, repeats.

    Parameters
    ----------
    draw : callable
        Hypothesis's draw function.
    data : bytes
        The input to damage.
    max_ops : int
        At most this many changes.

    Returns
    -------
    bytes
        The damaged input (possibly unchanged when 0 changes are drawn).
    """
    buf = bytearray(data)
    for _ in range(draw(st.integers(0, max_ops))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "delete", "insert", "repeat", "zero"]))
        n = len(buf)
        if n == 0:
            buf += draw(st.binary(min_size=1, max_size=16))
            continue
        pos = draw(st.integers(0, n - 1))
        if op == "flip":
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set":
            buf[pos] = draw(st.sampled_from([0x00, 0xFF, 0xFE, 0xE0, 0xDD, 0x0D, 0x20, 0x7F, 0x80]) | st.integers(0, 255))
        elif op == "truncate":
            del buf[pos:]
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 16))]
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "repeat":
            size = draw(st.integers(1, 64))
            buf[pos:pos] = buf[pos : pos + size]
        else:
            del buf[pos : pos + 4]
            buf[pos:pos] = b"\x00\x00\x00\x00"
    return bytes(buf)


@st.composite
def length_corruptions(draw: Any, data: bytes, transfer_syntax: str, max_ops: int = 3) -> bytes:
    """``data`` with a few element or item length fields set to hostile values.

    Parameters
    ----------
    draw : callable
        Hypothesis's draw function.
    data : bytes
        A valid dataset (inflated).
    transfer_syntax : str
        Its transfer syntax (for the byte order and the VR layout).
    max_ops : int
        At most this many fields changed.

    Returns
    -------
    bytes
        The dataset with changed length fields.
    """
    fields = element_length_fields(data, transfer_syntax)
    if not fields:
        return data
    buf = bytearray(data)
    e = ">" if transfer_syntax == EXPLICIT_BE else "<"
    for _ in range(draw(st.integers(1, max_ops))):
        offset, size = draw(st.sampled_from(fields))
        fmt = e + ("H" if size == 2 else "I")
        (old,) = struct.unpack_from(fmt, buf, offset)
        limit = 0xFFFF if size == 2 else 0xFFFFFFFF
        value = draw(
            st.sampled_from([v for v in INTERESTING_LENGTHS if v <= limit])
            | st.integers(max(0, old - 8), min(limit, old + 8))
            | st.integers(0, limit)
        )
        struct.pack_into(fmt, buf, offset, value)
    return bytes(buf)


@st.composite
def mutated_seed(draw: Any, seed: Seed) -> bytes:
    """One seed damaged by length corruptions and byte changes (deflated seeds either way).

    A deflated seed is damaged either after inflating (and deflated again: a well-formed
    compressed stream of a broken dataset) or in its compressed bytes.

    Parameters
    ----------
    draw : callable
        Hypothesis's draw function.
    seed : Seed
        The valid input.

    Returns
    -------
    bytes
        The stream to scan, in ``seed.transfer_syntax``.
    """
    raw = inflate(seed)
    deflated = seed.transfer_syntax == DEFLATED_LE
    if deflated and draw(st.booleans()):
        return draw(byte_mutations(seed.stream))
    if draw(st.booleans()):
        raw = draw(length_corruptions(raw, seed.transfer_syntax))
    raw = draw(byte_mutations(raw))
    return _deflate(raw) if deflated else raw


@st.composite
def mutated_dataset(draw: Any) -> tuple[str, str, bytes]:
    """A damaged real or synthetic dataset: ``(seed name, transfer syntax, stream)``."""
    seed = draw(st.sampled_from(seeds()))
    return seed.name, seed.transfer_syntax, draw(mutated_seed(seed))
