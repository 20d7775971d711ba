"""A cheap consistency check of a received image's pixel attributes, before it is stored.

:func:`check_image` looks only at what :func:`dicom_node.wire.scan_dataset` collected
(no pydicom, no pixel decoding): an image that cannot be right is refused while the
sender is still connected, rather than met later by a pipeline far from the sender.

Statuses (PS3.4 Annex B.2.3, Table B.2-1, C-STORE response statuses):

``0xA900`` — Error: Data Set does not match SOP Class
    The dataset breaks its IOD's Image Pixel Module (PS3.3 C.7.6.3): an image storage
    SOP class without Pixel Data, Rows/Columns/Bits Allocated/Samples per Pixel/Number
    of Frames missing or out of range, or a native Pixel Data shorter than
    ``Rows × Columns × Samples per Pixel × Number of Frames × Bits Allocated / 8``
    (PS3.5 §8.1.1 and A.1; two samples per pixel for ``YBR_FULL_422``, PS3.3
    C.7.6.3.1.2) or longer by a whole frame or more. Trailing bytes shorter than one frame
    are taken as padding, as pydicom reads them (some writers pad; pydicom's own test set
    has such a file from a real device), not refused.
``0xC000`` — Error: Cannot understand
    The pixel data does not match its transfer syntax (PS3.5 A.4): native pixels on an
    encapsulated (compressed) transfer syntax, encapsulated pixels on a native one, or
    encapsulated pixel data with no fragment. The node answers the same status for
    every other dataset not encoded as its presentation context says.

Limits, and why:

* Rows and Columns 1 … 32 768. Real single frames stay far below (MR ≤ 1 024, digital
  radiography and mammography ≤ ~5 000, slide-microscopy tiles ≤ 4 096, stitched
  full-leg radiographs ≤ ~10 000); a value near 65 535 is the mark of a broken or
  hostile writer, and a decoder allocates ``Rows × Columns × …`` at once.
* One frame's decoded size at most ``2**32 - 2`` bytes (what one native Pixel Data
  element can hold): a compressed frame larger than that could never be converted to a
  native transfer syntax.
* Bits Allocated 1, 8, 16, 32 or 64; Bits Stored, when present, 1 … Bits Allocated;
  Samples per Pixel 1 or 3 (absent: 1); Number of Frames ≥ 1 (absent: 1); Float and
  Double Float Pixel Data with Bits Allocated 32 and 64.
"""

from __future__ import annotations

from dicom_node.wire import DEFLATED_LE, EXPLICIT_BE, IMPLICIT_LE, DatasetError, HeaderInfo

__all__ = ["IMAGE_STORAGE_CLASSES", "MAX_DIMENSION", "ImageError", "check_image"]

#: Transfer syntaxes whose Pixel Data is native (not encapsulated).
NATIVE_SYNTAXES = frozenset({IMPLICIT_LE, "1.2.840.10008.1.2.1", EXPLICIT_BE, DEFLATED_LE})
MAX_DIMENSION = 32768
_MAX_FRAME_BYTES = 0xFFFFFFFE
_BITS_ALLOCATED = frozenset({1, 8, 16, 32, 64})
_PIXEL_DATA = 0x7FE00010
_SUBSAMPLED = frozenset({"YBR_FULL_422", "YBR_PARTIAL_422"})
_FLOAT_BITS = {0x7FE00008: 32, 0x7FE00009: 64}  # Float / Double Float Pixel Data

_P = "1.2.840.10008.5.1.4.1.1."
#: Storage SOP classes whose IOD requires Pixel Data (or Float Pixel Data): the image
#: classes an MR node meets and their radiology, nuclear-medicine and visible-light
#: neighbours. Not listed (no pixel data by definition, or optional): structured
#: reports, presentation states, raw data, spectroscopy, RT objects other than RT Image,
#: encapsulated documents, segmentations.
IMAGE_STORAGE_CLASSES: frozenset[str] = frozenset(_P + s for s in (
    "1",  # Computed Radiography
    "1.1", "1.1.1", "1.2", "1.2.1", "1.3", "1.3.1",  # Digital X-Ray, Mammography, Intra-Oral
    "2", "2.1", "2.2",  # CT, Enhanced CT, Legacy Converted Enhanced CT
    "3.1", "6.1", "6.2",  # Ultrasound Multi-frame, Ultrasound, Enhanced US Volume
    "4", "4.1", "4.3", "4.4",  # MR, Enhanced MR, Enhanced MR Color, Legacy Converted Enhanced MR
    "7", "7.1", "7.2", "7.3", "7.4",  # Secondary Capture and its multi-frame forms
    "12.1", "12.1.1", "12.2", "12.2.1",  # X-Ray Angiographic, Radiofluoroscopic (and Enhanced)
    "13.1.1", "13.1.2", "13.1.3", "13.1.4", "13.1.5",  # X-Ray 3D, Breast Tomosynthesis, Breast Projection
    "20", "128", "128.1", "130",  # Nuclear Medicine, PET, Legacy Converted and Enhanced PET
    "30",  # Parametric Map
    "481.1",  # RT Image
    "77.1.1", "77.1.2", "77.1.3", "77.1.4", "77.1.5.1", "77.1.5.2", "77.1.6",  # VL and ophthalmic photography
))


class ImageError(DatasetError):
    """The image attributes contradict each other or the Image Pixel Module (``0xA900``)."""

    status = 0xA900


def _frames(raw: str | None) -> int:
    if raw is None or raw == "":
        return 1
    try:
        n = int(raw)
    except ValueError:
        raise ImageError("Number of Frames is not an integer") from None
    if n < 1:
        raise ImageError(f"Number of Frames is {n}")
    return n


def check_image(info: HeaderInfo, transfer_syntax: str, sop_class: str) -> None:
    """Refuse an image whose pixel attributes cannot be right.

    Parameters
    ----------
    info : HeaderInfo
        What the wire scanner read.
    transfer_syntax : str
        The transfer syntax UID of its presentation context.
    sop_class : str
        Its SOP Class UID.

    Raises
    ------
    ImageError
        ``0xA900``: no Pixel Data in an image SOP class, attributes missing or out of
        range, or native Pixel Data of the wrong length.
    DatasetError
        ``0xC000``: the pixel data's encoding does not match the transfer syntax.
    """
    if info.pixel_tag is None:
        if sop_class in IMAGE_STORAGE_CLASSES:
            raise ImageError("the image has no Pixel Data")
        return
    native = transfer_syntax in NATIVE_SYNTAXES
    encapsulated = info.pixel_length == -1
    if encapsulated and native:
        raise DatasetError("Pixel Data is encapsulated but the transfer syntax is native")
    if encapsulated and (info.pixel_tag != _PIXEL_DATA or info.pixel_items < 2):
        raise DatasetError("encapsulated Pixel Data has no fragment")
    if not encapsulated and not native and info.pixel_tag == _PIXEL_DATA:
        raise DatasetError("native Pixel Data on an encapsulated (compressed) transfer syntax")
    rows, cols, bits = info.rows, info.columns, info.bits_allocated
    if rows is None or cols is None or bits is None:
        raise ImageError("Pixel Data without Rows, Columns or Bits Allocated")
    if not (1 <= rows <= MAX_DIMENSION and 1 <= cols <= MAX_DIMENSION):
        raise ImageError(f"Rows x Columns {rows} x {cols} out of range 1..{MAX_DIMENSION}")
    if bits not in _BITS_ALLOCATED:
        raise ImageError(f"Bits Allocated {bits} is not 1, 8, 16, 32 or 64")
    if info.pixel_tag in _FLOAT_BITS and bits != _FLOAT_BITS[info.pixel_tag]:
        raise ImageError(f"float pixel data with Bits Allocated {bits}")
    if info.bits_stored is not None and not 1 <= info.bits_stored <= bits:
        raise ImageError(f"Bits Stored {info.bits_stored} with Bits Allocated {bits}")
    samples = 1 if info.samples is None else info.samples
    if samples not in (1, 3):
        raise ImageError(f"Samples per Pixel {samples} is not 1 or 3")
    frame_bits = rows * cols * samples * bits
    if (frame_bits + 7) // 8 > _MAX_FRAME_BYTES:
        raise ImageError("one frame decodes to more than 4 GiB")
    frames = _frames(info.frames)
    if encapsulated or info.pixel_length is None:
        return
    if samples == 3 and info.photometric in _SUBSAMPLED:  # native 4:2:2: two samples per pixel
        frame_bits = frame_bits * 2 // 3
    expected = (frame_bits * frames + 7) // 8
    length = info.pixel_length
    if length < expected or length - expected >= max((frame_bits + 7) // 8, 2):
        raise ImageError(f"Pixel Data has {length} bytes, Rows x Columns x Samples x Bits x Frames give {expected}")
