"""Check a received dataset's encoding and read its identifying tags, without pydicom.

The receive path keeps the bytes exactly as sent. Before answering success it must know
that the dataset is complete (pydicom silently accepts a truncated stream) and must read
the Study, Series and SOP Instance UIDs, SOP Class, Modality and Series Description.
:func:`scan_dataset` walks the element structure of the encoded stream (explicit or
implicit VR, little or big endian, deflated), checks that every length fits, including
sequences and encapsulated pixel data, and collects those top-level values. No value is
decoded beyond those few strings; pixel data is never touched.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

__all__ = ["DatasetError", "HeaderInfo", "encode_file_meta", "scan_dataset"]

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_WANTED = {
    0x00080016: "sop_class",
    0x00080018: "sop_uid",
    0x00080060: "modality",
    0x0008103E: "series_desc",
    0x0020000D: "study_uid",
    0x0020000E: "series_uid",
}
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD
_MAX_DEPTH = 32


class DatasetError(ValueError):
    """The encoded dataset is empty, truncated or malformed; the message says where."""


@dataclass(frozen=True)
class HeaderInfo:
    """The identifying top-level values of a dataset."""

    sop_class: str
    sop_uid: str
    study_uid: str
    series_uid: str
    modality: str
    series_desc: str


class _Walker:
    def __init__(self, buf: bytes, implicit: bool, little: bool) -> None:
        self.buf = buf
        self.implicit = implicit
        self.e = "<" if little else ">"
        self.values: dict[str, bytes] = {}

    def header(self, pos: int, end: int, implicit: bool) -> tuple[int, int, int, bool]:
        """Return ``(tag, length, value_pos, is_sequence_like)`` of the element at ``pos``."""
        if pos + 8 > end:
            raise DatasetError(f"truncated element header at byte {pos} (stream ends at {end})")
        group, elem = struct.unpack_from(self.e + "HH", self.buf, pos)
        tag = (group << 16) | elem
        if implicit or group == 0xFFFE:
            (length,) = struct.unpack_from(self.e + "I", self.buf, pos + 4)
            return tag, length, pos + 8, False
        vr = self.buf[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > end:
                raise DatasetError(f"truncated element header at byte {pos} (stream ends at {end})")
            (length,) = struct.unpack_from(self.e + "I", self.buf, pos + 8)
            return tag, length, pos + 12, vr in (b"SQ", b"UN", b"OB", b"OW")
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise DatasetError(
                f"element ({group:04X},{elem:04X}) at byte {pos} has no valid VR {vr!r}: "
                "the dataset does not match its explicit-VR transfer syntax"
            )
        (length,) = struct.unpack_from(self.e + "H", self.buf, pos + 6)
        return tag, length, pos + 8, False

    def dataset(self, pos: int, end: int, depth: int, top: bool, implicit: bool) -> int:
        """Walk elements from ``pos``; stop at ``end`` or at an item delimiter (nested)."""
        if depth > _MAX_DEPTH:
            raise DatasetError("sequences nested too deeply")
        last_tag = -1
        while pos < end:
            tag, length, vpos, _ = self.header(pos, end, implicit)
            if tag == _ITEM_END and not top:
                return vpos
            if tag >> 16 == 0xFFFE:
                raise DatasetError(f"unexpected delimiter ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {pos}")
            if top and tag <= last_tag:
                raise DatasetError(
                    f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {pos} is out of order: "
                    "the dataset is malformed or does not match its transfer syntax"
                )
            last_tag = tag
            if length == _UNDEFINED:
                # A sequence, an UN of undefined length (implicit VR inside) or encapsulated pixel data.
                pos = self.items(vpos, end, depth + 1, implicit or self._is_un(pos, implicit))
                continue
            if vpos + length > end:
                raise DatasetError(
                    f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {pos} declares {length} bytes "
                    f"but only {end - vpos} remain: the dataset is truncated"
                )
            if top and tag in _WANTED:
                self.values[_WANTED[tag]] = self.buf[vpos : vpos + length]
            pos = vpos + length
        if not top:
            raise DatasetError("an item of undefined length has no item delimiter: the dataset is truncated")
        return pos

    def _is_un(self, pos: int, implicit: bool) -> bool:
        return not implicit and self.buf[pos + 4 : pos + 6] == b"UN"

    def items(self, pos: int, end: int, depth: int, implicit: bool) -> int:
        """Walk the items of an undefined-length sequence or pixel data; return past its delimiter."""
        while True:
            tag, length, vpos, _ = self.header(pos, end, True)
            if tag == _SEQ_END:
                return vpos
            if tag != _ITEM:
                raise DatasetError(f"expected an item at byte {pos}, found ({tag >> 16:04X},{tag & 0xFFFF:04X})")
            if length == _UNDEFINED:
                pos = self.dataset(vpos, end, depth, False, implicit)
            elif vpos + length > end:
                raise DatasetError(f"item at byte {pos} declares {length} bytes but only {end - vpos} remain: "
                                   "the dataset is truncated")
            else:
                pos = vpos + length


def _text(raw: bytes | None) -> str:
    if not raw:
        return ""
    return raw.rstrip(b"\x00 ").decode("utf-8", "replace").strip()


def scan_dataset(stream: bytes, transfer_syntax: str) -> HeaderInfo:
    """Check an encoded dataset and read its identifying values.

    Parameters
    ----------
    stream : bytes
        The dataset as received (no preamble or file meta).
    transfer_syntax : str
        The transfer syntax UID of its presentation context.

    Returns
    -------
    HeaderInfo
        The identifying top-level values (empty strings where absent).

    Raises
    ------
    DatasetError
        If the stream is empty, truncated or not encoded in ``transfer_syntax``.
    """
    if not stream:
        raise DatasetError("the dataset is empty (0 bytes)")
    buf = stream
    if transfer_syntax == DEFLATED_LE:
        try:
            buf = zlib.decompress(stream, -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise DatasetError(f"the deflated dataset cannot be inflated ({exc})") from None
    implicit = transfer_syntax == IMPLICIT_LE
    little = transfer_syntax != EXPLICIT_BE
    walker = _Walker(buf, implicit, little)
    try:
        walker.dataset(0, len(buf), 0, True, implicit)
    except struct.error as exc:  # defensive: header() checks bounds first
        raise DatasetError(f"the dataset is truncated ({exc})") from None
    v = walker.values
    return HeaderInfo(
        sop_class=_text(v.get("sop_class")),
        sop_uid=_text(v.get("sop_uid")),
        study_uid=_text(v.get("study_uid")),
        series_uid=_text(v.get("series_uid")),
        modality=_text(v.get("modality")),
        series_desc=_text(v.get("series_desc")),
    )


def _element(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2sHI", group, elem, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _ui(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text_value(text: str) -> bytes:
    raw = text.encode("ascii", "replace")
    return raw + b" " if len(raw) % 2 else raw


def encode_file_meta(
    sop_class: str, sop_uid: str, transfer_syntax: str, implementation_uid: str, implementation_version: str,
    source_ae: str,
) -> bytes:
    """Encode the Part 10 preamble, prefix and File Meta Information group.

    A direct encoder (explicit VR little endian, as Part 10 requires) so the receive path
    does not build and validate a pydicom dataset for every instance.

    Parameters
    ----------
    sop_class, sop_uid, transfer_syntax : str
        Media Storage SOP Class and Instance UIDs and the Transfer Syntax UID.
    implementation_uid, implementation_version : str
        Implementation Class UID and Implementation Version Name (≤ 16 characters).
    source_ae : str
        Source Application Entity Title (≤ 16 characters; omitted when empty).

    Returns
    -------
    bytes
        128 zero bytes, ``DICM`` and the encoded group 0002.
    """
    body = b"".join([
        _element(0x0002, 0x0001, b"OB", b"\x00\x01"),
        _element(0x0002, 0x0002, b"UI", _ui(sop_class)),
        _element(0x0002, 0x0003, b"UI", _ui(sop_uid)),
        _element(0x0002, 0x0010, b"UI", _ui(transfer_syntax)),
        _element(0x0002, 0x0012, b"UI", _ui(implementation_uid)),
        _element(0x0002, 0x0013, b"SH", _text_value(implementation_version[:16])),
        _element(0x0002, 0x0016, b"AE", _text_value(source_ae[:16])) if source_ae else b"",
    ])
    group_length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(body))
    return b"\x00" * 128 + b"DICM" + group_length + body
