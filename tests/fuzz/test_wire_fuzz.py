"""Property-based fuzzing of the wire scanner (:func:`dicom_node.wire.scan_dataset`).

The contract: for any bytes in any transfer syntax it returns a :class:`HeaderInfo` or
raises :class:`DatasetError` (the node answers ``0xC000``) — never another exception, never
a hang; and a valid dataset cut anywhere but between two top-level elements is refused
(pydicom reads a truncated stream without complaint, the scanner must not).
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from dicom_node.wire import DatasetError, HeaderInfo, scan_dataset
from tests.fuzz.corpus import (
    DEFLATED_LE,
    EXPLICIT_BE,
    EXPLICIT_LE,
    IMPLICIT_LE,
    RLE,
    seeds,
    top_level_boundaries,
)
from tests.fuzz.findings import save_failure
from tests.fuzz.mutate import fuzz_settings, inflate, mutated_dataset

TRANSFER_SYNTAXES = (EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE, DEFLATED_LE, RLE)
VRS = (b"AE", b"CS", b"DS", b"IS", b"LO", b"OB", b"OW", b"SH", b"SQ", b"UI", b"UL", b"UN", b"US", b"UT", b"\x00\x00",
       b"zz")


def check_scan(stream: bytes, transfer_syntax: str) -> HeaderInfo | None:
    """Scan and hold the scanner to its contract; ``None`` when it refused the input."""
    try:
        info = scan_dataset(stream, transfer_syntax)
    except DatasetError as exc:
        assert str(exc), "a DatasetError must say why"
        return None
    except BaseException as exc:
        save_failure("wire", {"input.bin": stream}, exc, transfer_syntax=transfer_syntax)
        raise
    assert isinstance(info, HeaderInfo)
    for value in (info.sop_class, info.sop_uid, info.study_uid, info.series_uid, info.modality, info.series_desc):
        assert isinstance(value, str)
    return info


def test_every_seed_scans() -> None:
    """The seeds are valid: a refusal below comes from the damage, not from the seed."""
    assert len(seeds()) >= 10
    for seed in seeds():
        assert check_scan(seed.stream, seed.transfer_syntax) is not None, seed.name


@fuzz_settings(max_examples=1500)
@given(mutated_dataset())
def test_damaged_datasets_raise_only_dataset_error(case: tuple[str, str, bytes]) -> None:
    _name, ts, stream = case
    check_scan(stream, ts)


@fuzz_settings(max_examples=300)
@given(st.data())
def test_truncated_dataset_is_refused(data: Any) -> None:
    seed = data.draw(st.sampled_from([s for s in seeds() if s.transfer_syntax != DEFLATED_LE]))
    boundaries = top_level_boundaries(seed.stream, seed.transfer_syntax)
    cut = data.draw(st.integers(1, len(seed.stream) - 1).filter(lambda n: n not in boundaries))
    assert check_scan(seed.stream[:cut], seed.transfer_syntax) is None


@fuzz_settings(max_examples=150)
@given(st.data())
def test_truncated_deflated_dataset_is_refused(data: Any) -> None:
    seed = data.draw(st.sampled_from([s for s in seeds() if s.transfer_syntax == DEFLATED_LE]))
    raw = inflate(seed)
    boundaries = top_level_boundaries(raw, EXPLICIT_LE)
    cut = data.draw(st.integers(1, len(raw) - 1).filter(lambda n: n not in boundaries))
    c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    assert check_scan(c.compress(raw[:cut]) + c.flush(), DEFLATED_LE) is None


@st.composite
def element_streams(draw: Any) -> tuple[str, bytes]:
    """Datasets built from scratch: random tags, VRs, declared lengths, items and delimiters."""
    ts = draw(st.sampled_from(TRANSFER_SYNTAXES[:3]))
    e = ">" if ts == EXPLICIT_BE else "<"
    parts = []
    for _ in range(draw(st.integers(0, 12))):
        group = draw(st.sampled_from([0x0008, 0x0010, 0x0020, 0x0028, 0x7FE0, 0xFFFE, 0x0009])
                     | st.integers(0, 0xFFFF))
        elem = draw(st.sampled_from([0x0016, 0x0018, 0x000D, 0x000E, 0x0010, 0xE000, 0xE00D, 0xE0DD])
                    | st.integers(0, 0xFFFF))
        value = draw(st.binary(max_size=24))
        length = draw(st.sampled_from([len(value), 0xFFFFFFFF, 0, len(value) + 1]) | st.integers(0, 0xFFFFFFFF))
        head = struct.pack(e + "HH", group, elem)
        vr = draw(st.sampled_from(VRS))
        if ts == IMPLICIT_LE or group == 0xFFFE:
            parts.append(head + struct.pack(e + "I", length) + value)
        elif vr in (b"OB", b"OW", b"SQ", b"UN", b"UT"):
            parts.append(head + vr + b"\x00\x00" + struct.pack(e + "I", length) + value)
        else:
            parts.append(head + vr + struct.pack(e + "H", length & 0xFFFF) + value)
    stream = b"".join(parts)
    if stream and draw(st.booleans()):
        stream = stream[: draw(st.integers(0, len(stream) - 1))]  # cut anywhere, inside headers too
    return ts, stream


@fuzz_settings(max_examples=800)
@given(element_streams())
@example((EXPLICIT_LE, b"\x08\x00\x18\x00SQ\x00\x00\xff\xff\xff\xff" + b"\xfe\xff\x00\xe0\xff\xff\xff\xff" * 40))
def test_streams_from_scratch_raise_only_dataset_error(case: tuple[str, bytes]) -> None:
    ts, stream = case
    check_scan(stream, ts)


@fuzz_settings(max_examples=300)
@given(st.binary(max_size=512), st.sampled_from(TRANSFER_SYNTAXES))
def test_random_bytes_raise_only_dataset_error(stream: bytes, ts: str) -> None:
    check_scan(stream, ts)


def test_deeply_nested_sequences_are_refused_not_recursed() -> None:
    """Thousands of nested undefined-length items: a DatasetError, not a RecursionError."""
    nest = b"\x08\x00\x18\x00SQ\x00\x00\xff\xff\xff\xff\xfe\xff\x00\xe0\xff\xff\xff\xff"
    for depth in (40, 2000, 50_000):
        assert check_scan(nest * depth, EXPLICIT_LE) is None
        assert check_scan(nest.replace(b"SQ\x00\x00", b"UN\x00\x00") * depth, EXPLICIT_LE) is None
