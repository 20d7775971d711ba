"""Seed inputs for the fuzz tests: real and synthetic encoded datasets and command sets.

Real datasets are pydicom's own test files (installed with pydicom, so always present) and,
when ``make realdata`` has fetched it, a few small files of the real-scan corpus
(``var/realdata``, see ``training/realdata/corpus.json``). Synthetic ones are small MR
slices from :mod:`tests.support.mrfiles` encoded in every uncompressed transfer syntax the
node accepts, deflated, with nested undefined-length sequences and with encapsulated pixel
data. Each seed is the dataset as it travels in a P-DATA (no preamble, no file meta) with its
transfer syntax, exactly what :func:`dicom_node.wire.scan_dataset` receives.
"""

from __future__ import annotations

import contextlib
import functools
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFLATED_LE",
    "EXPLICIT_BE",
    "EXPLICIT_LE",
    "IMPLICIT_LE",
    "RLE",
    "Seed",
    "element_length_fields",
    "encode_store_command",
    "seeds",
    "split_part10",
    "top_level_boundaries",
]

ROOT = Path(__file__).resolve().parents[2]
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
RLE = "1.2.840.10008.1.2.5"

#: pydicom test files used as real seeds (small, one per encoding family).
PYDICOM_FILES = (
    "MR_small.dcm",  # explicit VR little endian
    "MR_small_implicit.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_RLE.dcm",  # encapsulated pixel data
    "image_dfl.dcm",  # deflated
    "nested_priv_SQ.dcm",  # nested private sequences
)
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})


@dataclass(frozen=True)
class Seed:
    """One encoded dataset: where it came from, its transfer syntax and its bytes."""

    name: str
    transfer_syntax: str
    stream: bytes


def split_part10(data: bytes) -> tuple[str, bytes]:
    """The transfer syntax and the dataset bytes of a Part 10 file.

    Parameters
    ----------
    data : bytes
        The whole file.

    Returns
    -------
    (str, bytes)
        Transfer Syntax UID from the file meta, and the bytes after the meta group.
    """
    import pydicom
    from pydicom.filereader import read_preamble

    fp = io.BytesIO(data)
    read_preamble(fp, False)
    meta = pydicom.filereader._read_file_meta_info(fp)
    return str(meta.TransferSyntaxUID), data[fp.tell():]


def _encode(ds: object, transfer_syntax: str) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian = transfer_syntax != EXPLICIT_BE
    fp.is_implicit_VR = transfer_syntax == IMPLICIT_LE
    write_dataset(fp, ds)  # type: ignore[arg-type]
    raw = fp.getvalue()
    if transfer_syntax == DEFLATED_LE:
        c = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        return c.compress(raw) + c.flush()
    return raw


def _synthetic() -> list[Seed]:
    from pydicom.dataset import Dataset
    from pydicom.encaps import encapsulate
    from pydicom.sequence import Sequence
    from pydicom.uid import generate_uid

    from tests.support.mrfiles import make_mr_dataset

    uid = "1.2.826.0.1.3680043.8.498.1"
    out: list[Seed] = []
    for ts in (EXPLICIT_LE, IMPLICIT_LE, EXPLICIT_BE, DEFLATED_LE):
        ds = make_mr_dataset(study_uid=uid + ".1", series_uid=uid + ".2", instance_number=1, size=8,
                             sop_uid=uid + ".3", frame_of_reference_uid=uid + ".4")
        del ds.file_meta
        out.append(Seed(f"synthetic-mr-{ts}", ts, _encode(ds, ts)))
    # Nested sequences of undefined length (written so by pydicom when is_undefined_length).
    ds = make_mr_dataset(study_uid=uid + ".1", series_uid=uid + ".2", instance_number=2, size=4,
                         sop_uid=uid + ".5", frame_of_reference_uid=uid + ".4")
    del ds.file_meta
    inner = Dataset()
    inner.CodeValue = "T1"
    inner.CodingSchemeDesignator = "99TEST"
    item = Dataset()
    item.ConceptNameCodeSequence = Sequence([inner])
    item.ConceptNameCodeSequence.is_undefined_length = True
    ds.ReferencedImageSequence = Sequence([item, Dataset()])
    ds.ReferencedImageSequence.is_undefined_length = True
    for ts in (EXPLICIT_LE, IMPLICIT_LE):
        out.append(Seed(f"synthetic-nested-sq-{ts}", ts, _encode(ds, ts)))
    # Encapsulated pixel data (two fragments, basic offset table) in an RLE context.
    ds.PixelData = encapsulate([b"\x00" * 64, b"\x01" * 30])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.SOPInstanceUID = str(generate_uid(prefix=uid + ".6."))
    out.append(Seed("synthetic-encapsulated", RLE, _encode(ds, EXPLICIT_LE)))
    return out


def _real() -> list[Seed]:
    from pydicom.data import get_testdata_file

    out: list[Seed] = []
    for name in PYDICOM_FILES:
        path = get_testdata_file(name)  # exact name: a file installed with pydicom, no download
        if not isinstance(path, str):
            continue
        ts, stream = split_part10(Path(path).read_bytes())
        out.append(Seed(f"pydicom:{name}", ts, stream))
    realdata = ROOT / "var" / "realdata"
    if realdata.is_dir():
        small = sorted(p for p in realdata.rglob("*.dcm") if p.stat().st_size < 40_000)[:6]
        for file in small:
            try:
                ts, stream = split_part10(file.read_bytes())
            except Exception:  # a corpus file without file meta: not a seed
                continue
            seed = Seed(f"realdata:{file.name}", ts, stream)
            if _scans(seed):  # some corpus files are out of tag order on purpose: not useful seeds
                out.append(seed)
    return out


def _scans(seed: Seed) -> bool:
    from dicom_node.wire import DatasetError, scan_dataset

    try:
        scan_dataset(seed.stream, seed.transfer_syntax)
    except DatasetError:
        return False
    return True


@functools.cache
def seeds() -> tuple[Seed, ...]:
    """Every seed, real first, in a fixed order (the fuzz runs are reproducible).

    Returns
    -------
    tuple of Seed
        Valid encoded datasets.
    """
    return tuple(_real() + _synthetic())


def element_length_fields(stream: bytes, transfer_syntax: str) -> list[tuple[int, int]]:
    """Where the length fields of a valid dataset's elements and items are.

    Walks the stream the way Part 5 lays it out (sequences, items and pixel data fragments
    included); stops quietly at anything it does not understand, so it works on any seed.

    Parameters
    ----------
    stream : bytes
        A dataset as sent (inflated first if deflated).
    transfer_syntax : str
        Its transfer syntax.

    Returns
    -------
    list of (int, int)
        ``(offset, size)`` of each length field: size 2 or 4 bytes.
    """
    walker = _LengthWalker(stream, transfer_syntax)
    with contextlib.suppress(struct.error, RecursionError, _StopError):
        walker.dataset(0, len(stream), walker.implicit)
    return walker.fields


def top_level_boundaries(stream: bytes, transfer_syntax: str) -> set[int]:
    """The offsets where a valid dataset's top-level elements start, and its end.

    Cutting the stream anywhere else leaves an element or item incomplete.

    Parameters
    ----------
    stream : bytes
        A valid dataset as sent (inflated first if deflated).
    transfer_syntax : str
        Its transfer syntax.

    Returns
    -------
    set of int
        Offsets, ``len(stream)`` included.
    """
    walker = _LengthWalker(stream, transfer_syntax)
    with contextlib.suppress(struct.error, RecursionError, _StopError):
        walker.dataset(0, len(stream), walker.implicit, top=True)
    return {*walker.top_starts, len(stream)}


class _StopError(Exception):
    """The walk reached something it does not understand."""


class _LengthWalker:
    def __init__(self, buf: bytes, transfer_syntax: str) -> None:
        self.buf = buf
        self.implicit = transfer_syntax == IMPLICIT_LE
        self.e = ">" if transfer_syntax == EXPLICIT_BE else "<"
        self.fields: list[tuple[int, int]] = []
        self.top_starts: list[int] = []

    def header(self, pos: int, implicit: bool) -> tuple[int, bytes, int, int]:
        if pos + 8 > len(self.buf) or len(self.fields) > 100_000:
            raise _StopError
        group, elem = struct.unpack_from(self.e + "HH", self.buf, pos)
        vr = self.buf[pos + 4 : pos + 6]
        if implicit or group == 0xFFFE:
            self.fields.append((pos + 4, 4))
            return (group << 16) | elem, b"", struct.unpack_from(self.e + "I", self.buf, pos + 4)[0], pos + 8
        if vr in _LONG_VRS:
            self.fields.append((pos + 8, 4))
            return (group << 16) | elem, vr, struct.unpack_from(self.e + "I", self.buf, pos + 8)[0], pos + 12
        self.fields.append((pos + 6, 2))
        return (group << 16) | elem, vr, struct.unpack_from(self.e + "H", self.buf, pos + 6)[0], pos + 8

    def dataset(self, pos: int, end: int, implicit: bool, top: bool = False) -> int:
        while pos < end:
            if top:
                self.top_starts.append(pos)
            tag, vr, length, vpos = self.header(pos, implicit)
            if tag == 0xFFFEE00D:
                return vpos
            if length == 0xFFFFFFFF:
                inner = implicit or vr == b"UN"
                pos = self.items(vpos, len(self.buf), inner, fragments=vr in (b"OB", b"OW"))
            elif vr == b"SQ":
                self.items(vpos, vpos + length, implicit, fragments=False)
                pos = vpos + length
            else:
                pos = vpos + length
        return pos

    def items(self, pos: int, end: int, implicit: bool, fragments: bool) -> int:
        while pos < end:
            tag, _, length, vpos = self.header(pos, True)
            if tag == 0xFFFEE0DD or tag != 0xFFFEE000:
                return vpos
            if length == 0xFFFFFFFF:
                pos = self.dataset(vpos, len(self.buf), implicit)
            else:
                if not fragments:
                    self.dataset(vpos, vpos + length, implicit)
                pos = vpos + length
        return pos


def encode_store_command(
    message_id: int,
    sop_class: bytes,
    sop_instance: bytes,
    *,
    priority: int = 0,
    dataset_type: int = 0x0000,
    command: int = 0x0001,
    move_ae: bytes | None = None,
    move_id: int | None = None,
    group_length: bool = True,
) -> bytes:
    """Encode a C-STORE-RQ command set as Part 7 lays it out (implicit VR little endian).

    Parameters
    ----------
    message_id : int
        Message ID (0–65535).
    sop_class, sop_instance : bytes
        Affected SOP Class and Instance UIDs, raw (padded here to an even length).
    priority, dataset_type, command : int
        Priority, Command Data Set Type (0x0101: none) and Command Field.
    move_ae : bytes, optional
        Move Originator Application Entity Title.
    move_id : int, optional
        Move Originator Message ID.
    group_length : bool
        Whether to start with the Command Group Length element.

    Returns
    -------
    bytes
        The encoded command set.
    """

    def el(elem: int, value: bytes) -> bytes:
        return struct.pack("<HHI", 0x0000, elem, len(value)) + value

    def pad(raw: bytes, fill: bytes) -> bytes:
        return raw + fill if len(raw) % 2 else raw

    body = [
        el(0x0002, pad(sop_class, b"\x00")),
        el(0x0100, struct.pack("<H", command)),
        el(0x0110, struct.pack("<H", message_id)),
        el(0x0700, struct.pack("<H", priority)),
        el(0x0800, struct.pack("<H", dataset_type)),
        el(0x1000, pad(sop_instance, b"\x00")),
    ]
    if move_ae is not None:
        body.append(el(0x1030, pad(move_ae, b" ")))
    if move_id is not None:
        body.append(el(0x1031, struct.pack("<H", move_id)))
    raw = b"".join(body)
    if group_length:
        raw = el(0x0000, struct.pack("<I", len(raw))) + raw
    return raw
