"""Check a received dataset's encoding and read its identifying tags, without pydicom.

The receive path keeps the bytes exactly as sent. Before answering success it must know
that the dataset is complete (pydicom silently accepts a truncated stream) and must read
the Study, Series and SOP Instance UIDs, SOP Class, Modality and Series Description.
:func:`scan_dataset` walks the element structure of the encoded stream (explicit or
implicit VR, little or big endian, deflated), checks that every length fits, including
sequences and encapsulated pixel data, and collects those top-level values together with
the image attributes that :mod:`dicom_node.imagecheck` checks (Rows, Columns, Samples per
Pixel, Photometric Interpretation, Bits Allocated/Stored, Number of Frames and the Pixel
Data length). No value is
decoded beyond those few; pixel data is never copied.

A deflated dataset is inflated piece by piece as the walk needs it (never whole): the
memory it takes is a few hundred KiB whatever it inflates to, and inflating more than
``max_inflated`` bytes raises :class:`InflateLimitError` (the node answers ``0xA700``).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

__all__ = ["DatasetError", "HeaderInfo", "InflateLimitError", "encode_file_meta", "scan_dataset"]

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"

#: Default bound on the inflated size of a deflated dataset (``dicom.max_inflated_mb``).
MAX_INFLATED = 2048 << 20
#: Inflated bytes produced per step (the memory a deflated dataset costs is about twice this).
_CHUNK = 256 << 10
#: Longer values of the wanted tags are not kept (a UI or LO is at most 64 characters).
_MAX_VALUE = 1024

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_WANTED = {
    0x00080016: "sop_class",
    0x00080018: "sop_uid",
    0x00080060: "modality",
    0x0008103E: "series_desc",
    0x0020000D: "study_uid",
    0x0020000E: "series_uid",
    0x00280002: "samples",
    0x00280004: "photometric",
    0x00280008: "frames",
    0x00280010: "rows",
    0x00280011: "columns",
    0x00280100: "bits_allocated",
    0x00280101: "bits_stored",
}
#: Pixel Data, Float Pixel Data, Double Float Pixel Data.
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_ITEM_END = 0xFFFEE00D
_SEQ_END = 0xFFFEE0DD
_MAX_DEPTH = 32


class DatasetError(ValueError):
    """The encoded dataset is empty, truncated or malformed; the message says where.

    ``status`` is the C-STORE failure status the node answers (PS3.4 Table B.2-1).
    """

    status = 0xC000


class InflateLimitError(DatasetError):
    """A deflated dataset inflates to more than the node's limit (``0xA700``, out of resources)."""

    status = 0xA700


@dataclass(frozen=True)
class HeaderInfo:
    """The identifying top-level values of a dataset and its image attributes.

    The image attributes are ``None`` where absent (or, for the US ones, not two bytes
    long); ``pixel_length`` is the top-level pixel data's length, ``-1`` when it is
    encapsulated (undefined length), ``None`` when there is none; ``pixel_items`` counts
    the items of encapsulated pixel data (the offset table included).
    """

    sop_class: str
    sop_uid: str
    study_uid: str
    series_uid: str
    modality: str
    series_desc: str
    rows: int | None = None
    columns: int | None = None
    samples: int | None = None
    bits_allocated: int | None = None
    bits_stored: int | None = None
    frames: str | None = None
    photometric: str = ""
    pixel_tag: int | None = None
    pixel_length: int | None = None
    pixel_items: int = 0


class _Walker:
    """Walk a complete encoded dataset held in memory.

    Positions are absolute stream offsets; ``buf`` holds the bytes from ``base`` on (the
    whole stream here, a window of it in :class:`_InflatingWalker`). The walk only moves
    forward: nothing before the position of the last :meth:`have` call is read again.
    """

    def __init__(self, buf: bytes, implicit: bool, little: bool) -> None:
        self.buf = buf
        self.base = 0
        self.implicit = implicit
        self.e = "<" if little else ">"
        self.hh, self.i, self.h = self.e + "HH", self.e + "I", self.e + "H"
        self.values: dict[str, bytes] = {}
        self.pixel: tuple[int, int, int] | None = None
        self.n_items = 0

    @property
    def size(self) -> int:
        """The stream's length (for the inflating walker: so far, final once it ran out)."""
        return len(self.buf)

    def have(self, pos: int, n: int) -> bool:
        """Whether bytes ``[pos, pos + n)`` exist; bytes before ``pos`` may be dropped."""
        return pos + n <= len(self.buf)

    def header(self, pos: int, implicit: bool) -> tuple[int, int, int, bool]:
        """Return ``(tag, length, value_pos, is_un)`` of the element at ``pos``."""
        off = pos - self.base
        if off + 8 > len(self.buf) and not self.have(pos, 8):  # inline first: the common case is no call
            raise DatasetError(f"truncated element header at byte {pos} (stream ends at {self.size})")
        buf, off = self.buf, pos - self.base
        group, elem = struct.unpack_from(self.hh, buf, off)
        tag = (group << 16) | elem
        if implicit or group == 0xFFFE:
            (length,) = struct.unpack_from(self.i, buf, off + 4)
            return tag, length, pos + 8, False
        vr = buf[off + 4 : off + 6]
        if vr in _LONG_VRS:
            if off + 12 > len(buf) and not self.have(pos, 12):
                raise DatasetError(f"truncated element header at byte {pos} (stream ends at {self.size})")
            (length,) = struct.unpack_from(self.i, self.buf, pos - self.base + 8)
            return tag, length, pos + 12, vr == b"UN"
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise DatasetError(
                f"element ({group:04X},{elem:04X}) at byte {pos} has no valid VR {vr!r}: "
                "the dataset does not match its explicit-VR transfer syntax"
            )
        (length,) = struct.unpack_from(self.h, buf, off + 6)
        return tag, length, pos + 8, False

    def dataset(self, pos: int, depth: int, top: bool, implicit: bool) -> int:
        """Walk elements from ``pos``; stop at the stream's end or at an item delimiter (nested)."""
        if depth > _MAX_DEPTH:
            raise DatasetError("sequences nested too deeply")
        last_tag = -1
        header, have = self.header, self.have
        while pos - self.base < len(self.buf) or have(pos, 1):
            tag, length, vpos, is_un = header(pos, implicit)
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
                before = self.n_items
                pos = self.items(vpos, depth + 1, implicit or is_un)
                if top and tag in _PIXEL_TAGS:
                    self.pixel = (tag, -1, self.n_items - before)
                continue
            # The value is in the window (inline check, no call) or is brought in; a wanted
            # one is kept (asked for whole first: skipping past it may drop it).
            if top and tag in _WANTED and length <= _MAX_VALUE:
                if vpos + length - self.base > len(self.buf) and not have(vpos, length):
                    raise self._short(tag, pos, vpos, length)
                off = vpos - self.base
                self.values[_WANTED[tag]] = self.buf[off : off + length]
            else:
                if vpos + length - self.base > len(self.buf) and not have(vpos + length, 0):
                    raise self._short(tag, pos, vpos, length)
                if top and tag in _PIXEL_TAGS:
                    self.pixel = (tag, length, 0)
            pos = vpos + length
        if not top:
            raise DatasetError("an item of undefined length has no item delimiter: the dataset is truncated")
        return pos

    def _short(self, tag: int, pos: int, vpos: int, length: int) -> DatasetError:
        return DatasetError(
            f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {pos} declares {length} bytes "
            f"but only {max(self.size - vpos, 0)} remain: the dataset is truncated"
        )

    def items(self, pos: int, depth: int, implicit: bool) -> int:
        """Walk the items of an undefined-length sequence or pixel data; return past its delimiter."""
        while True:
            tag, length, vpos, _ = self.header(pos, True)
            if tag == _SEQ_END:
                return vpos
            if tag != _ITEM:
                raise DatasetError(f"expected an item at byte {pos}, found ({tag >> 16:04X},{tag & 0xFFFF:04X})")
            self.n_items += 1
            if length == _UNDEFINED:
                pos = self.dataset(vpos, depth, False, implicit)
            elif not self.have(vpos + length, 0):
                raise DatasetError(f"item at byte {pos} declares {length} bytes but only "
                                   f"{max(self.size - vpos, 0)} remain: the dataset is truncated")
            else:
                pos = vpos + length


class _InflatingWalker(_Walker):
    """Walk a deflated dataset, inflating it piece by piece as the walk moves on.

    ``buf`` is a window of the inflated stream starting at ``base``; bytes before the
    position the walk asks for are dropped, so a long value (pixel data) is inflated
    and thrown away without being held.
    """

    def __init__(self, stream: bytes, little: bool, max_inflated: int) -> None:
        super().__init__(b"", False, little)
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._tail = stream
        self._limit = max_inflated

    @property
    def size(self) -> int:
        return self.base + len(self.buf)

    def _inflate(self) -> bytes:
        """The next piece of inflated bytes; ``b""`` at the end of the deflate stream."""
        d = self._inflater
        if d.eof:
            return b""
        try:
            out = d.decompress(self._tail, _CHUNK)
            self._tail = d.unconsumed_tail
            if not out and not d.eof:
                out = d.decompress(b"", _CHUNK)  # output still pending inside zlib
        except zlib.error as exc:
            raise DatasetError(f"the deflated dataset cannot be inflated ({exc})") from None
        if not out and not d.eof:
            raise DatasetError("the deflated dataset cannot be inflated (incomplete or truncated stream)")
        return out

    def have(self, pos: int, n: int) -> bool:
        need = pos + n
        while self.base + len(self.buf) < need:
            piece = self._inflate()
            if not piece:
                return False
            keep = pos - self.base
            if keep >= len(self.buf):
                self.base += len(self.buf)
                self.buf = piece
            else:
                self.buf = self.buf[max(keep, 0):] + piece
                self.base += max(keep, 0)
            if self.base + len(self.buf) > self._limit:
                raise InflateLimitError(
                    f"the deflated dataset inflates to more than {self._limit >> 20} MiB (dicom.max_inflated_mb)"
                )
        return True


def _text(raw: bytes | None) -> str:
    if not raw:
        return ""
    return raw.rstrip(b"\x00 ").decode("utf-8", "replace").strip()


def _us(raw: bytes | None, e: str) -> int | None:
    if raw is None or len(raw) != 2:
        return None
    return int(struct.unpack(e + "H", raw)[0])


def scan_dataset(stream: bytes, transfer_syntax: str, max_inflated: int = MAX_INFLATED) -> HeaderInfo:
    """Check an encoded dataset and read its identifying values and image attributes.

    Parameters
    ----------
    stream : bytes
        The dataset as received (no preamble or file meta).
    transfer_syntax : str
        The transfer syntax UID of its presentation context.
    max_inflated : int
        The most bytes a deflated dataset may inflate to.

    Returns
    -------
    HeaderInfo
        The identifying top-level values (empty strings where absent) and image attributes.

    Raises
    ------
    DatasetError
        If the stream is empty, truncated or not encoded in ``transfer_syntax``.
    InflateLimitError
        If a deflated stream inflates to more than ``max_inflated`` bytes.
    """
    if not stream:
        raise DatasetError("the dataset is empty (0 bytes)")
    implicit = transfer_syntax == IMPLICIT_LE
    little = transfer_syntax != EXPLICIT_BE
    walker = (_InflatingWalker(stream, little, max_inflated) if transfer_syntax == DEFLATED_LE
              else _Walker(stream, implicit, little))
    if not walker.have(0, 1):
        raise DatasetError("the dataset is empty (it inflates to 0 bytes)")
    try:
        walker.dataset(0, 0, True, implicit)
    except struct.error as exc:  # defensive: header() checks bounds first
        raise DatasetError(f"the dataset is truncated ({exc})") from None
    v, e = walker.values, walker.e
    pixel_tag, pixel_length, pixel_items = walker.pixel or (None, None, 0)
    frames = v.get("frames")
    return HeaderInfo(
        sop_class=_text(v.get("sop_class")),
        sop_uid=_text(v.get("sop_uid")),
        study_uid=_text(v.get("study_uid")),
        series_uid=_text(v.get("series_uid")),
        modality=_text(v.get("modality")),
        series_desc=_text(v.get("series_desc")),
        rows=_us(v.get("rows"), e),
        columns=_us(v.get("columns"), e),
        samples=_us(v.get("samples"), e),
        bits_allocated=_us(v.get("bits_allocated"), e),
        bits_stored=_us(v.get("bits_stored"), e),
        frames=None if frames is None else frames.decode("ascii", "replace").strip(" \x00"),
        photometric=_text(v.get("photometric")),
        pixel_tag=pixel_tag,
        pixel_length=pixel_length,
        pixel_items=pixel_items,
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
