"""What the demo shows: segment volumes read back from the SEG in Orthanc, the SR's text,
and an overlay PNG of the SEG on the FLAIR (matplotlib, Agg backend).

The volumes are computed here from the SEG's own frames and pixel measures, as an
independent check of what the node's SR reports.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SegmentVolume", "overlay_png", "seg_volumes", "sr_text_rows"]


@dataclass(frozen=True)
class SegmentVolume:
    """One segment of a SEG and its volume."""

    number: int
    label: str
    ml: float


def _read(data: bytes) -> Any:
    import pydicom

    return pydicom.dcmread(io.BytesIO(data))


def _frame_segments(ds: Any) -> list[int]:
    items = ds.get("PerFrameFunctionalGroupsSequence") or []
    out: list[int] = []
    for item in items:
        seg_id = item.get("SegmentIdentificationSequence")
        out.append(int(seg_id[0].ReferencedSegmentNumber) if seg_id else 0)
    return out


def _frame_positions(ds: Any) -> list[tuple[float, float, float]]:
    out: list[tuple[float, float, float]] = []
    for item in ds.get("PerFrameFunctionalGroupsSequence") or []:
        pos = item.get("PlanePositionSequence")
        xyz = pos[0].ImagePositionPatient if pos else [0.0, 0.0, 0.0]
        out.append((float(xyz[0]), float(xyz[1]), float(xyz[2])))
    return out


def _voxel_ml(ds: Any) -> float:
    shared = ds.SharedFunctionalGroupsSequence[0]
    measures = shared.PixelMeasuresSequence[0]
    dy, dx = (float(v) for v in measures.PixelSpacing)
    dz = float(measures.get("SpacingBetweenSlices") or measures.get("SliceThickness") or 1.0)
    return dx * dy * dz / 1000.0


def _pixels(ds: Any) -> Any:
    import numpy as np

    arr = np.asarray(ds.pixel_array)
    return arr[None] if arr.ndim == 2 else arr


def seg_volumes(seg_file: bytes) -> list[SegmentVolume]:
    """Volume of every segment of a DICOM-SEG (BINARY, FRACTIONAL or LABELMAP).

    Parameters
    ----------
    seg_file : bytes
        The SEG as a Part 10 file.

    Returns
    -------
    list of SegmentVolume
        In segment-number order, in millilitres.
    """
    import numpy as np

    ds = _read(seg_file)
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence}
    pixels = _pixels(ds)
    voxel = _voxel_ml(ds)
    counts = dict.fromkeys(labels, 0)
    if str(ds.get("SegmentationType", "")).upper() == "LABELMAP":
        for number in labels:
            counts[number] = int(np.count_nonzero(pixels == number))
    else:
        for frame, number in zip(pixels, _frame_segments(ds), strict=False):
            if number in counts:
                counts[number] += int(np.count_nonzero(frame))
    return [SegmentVolume(n, labels[n], counts[n] * voxel) for n in sorted(labels)]


def sr_text_rows(sr_file: bytes, limit: int = 40) -> list[str]:
    """Readable ``concept: value`` lines from an SR's content tree (depth first)."""
    ds = _read(sr_file)
    rows: list[str] = []

    def walk(items: Any, depth: int) -> None:
        for item in items or []:
            if len(rows) >= limit:
                return
            name = item.ConceptNameCodeSequence[0].CodeMeaning if item.get("ConceptNameCodeSequence") else ""
            kind = item.get("ValueType", "")
            value = ""
            if kind == "TEXT":
                value = str(item.get("TextValue", ""))
            elif kind == "CODE" and item.get("ConceptCodeSequence"):
                value = str(item.ConceptCodeSequence[0].CodeMeaning)
            elif kind == "NUM" and item.get("MeasuredValueSequence"):
                mv = item.MeasuredValueSequence[0]
                unit = mv.MeasurementUnitsCodeSequence[0].CodeValue if mv.get("MeasurementUnitsCodeSequence") else ""
                value = f"{float(mv.NumericValue):.2f} {unit}"
            if value and kind in ("TEXT", "CODE", "NUM"):
                rows.append(f"{'  ' * depth}{name}: {value}")
            walk(item.get("ContentSequence"), depth + 1)

    walk(ds.get("ContentSequence"), 0)
    return rows


def _seg_planes(ds: Any) -> tuple[Any, Any, Any, tuple[float, float]]:
    """The SEG as a label stack: (labels[k, r, c], plane origins[k], orientation, (dr, dc))."""
    import numpy as np

    pixels = _pixels(ds)
    positions = _frame_positions(ds)
    labelmap = str(ds.get("SegmentationType", "")).upper() == "LABELMAP"
    numbers = _frame_segments(ds)
    by_pos: dict[tuple[float, float, float], Any] = {}
    for i, frame in enumerate(pixels):
        key = positions[i] if i < len(positions) else (0.0, 0.0, float(i))
        plane = by_pos.setdefault(key, np.zeros(frame.shape, dtype=np.uint8))
        value = frame if labelmap else np.where(frame > 0, numbers[i] if i < len(numbers) else 1, 0)
        plane[frame > 0] = value[frame > 0]
    if not by_pos:
        raise ValueError("the SEG has no frames to draw.")
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=float)
    dr, dc = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    normal = np.cross(iop[:3], iop[3:])
    keys = sorted(by_pos, key=lambda k: float(np.dot(normal, k)))
    return np.stack([by_pos[k] for k in keys]), np.asarray(keys, dtype=float), iop, (dr, dc)


def _resample_to_slice(labels: Any, origins: Any, iop: Any, spacing: tuple[float, float], header: Any) -> Any:
    """Nearest-neighbour labels of the SEG at every pixel of one image slice (patient space)."""
    import numpy as np

    rows, cols = int(header.Rows), int(header.Columns)
    f_iop = np.asarray(header.ImageOrientationPatient, dtype=float)
    f_dr, f_dc = (float(v) for v in header.PixelSpacing)
    r, c = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    points = (np.asarray(header.ImagePositionPatient, dtype=float)[None, None, :]
              + (c * f_dc)[..., None] * f_iop[:3] + (r * f_dr)[..., None] * f_iop[3:])
    normal = np.cross(iop[:3], iop[3:])
    depth = origins @ normal
    along = points @ normal
    k = np.abs(along[None, :, :] - depth[:, None, None]).argmin(axis=0)
    rel = points - origins[k]
    ci = np.rint(rel @ iop[:3] / spacing[1]).astype(int)
    ri = np.rint(rel @ iop[3:] / spacing[0]).astype(int)
    thick = float(np.median(np.diff(depth))) if len(depth) > 1 else 1.0
    inside = (ri >= 0) & (ri < labels.shape[1]) & (ci >= 0) & (ci < labels.shape[2])
    inside &= np.abs(along - depth[k]) <= 0.5 * abs(thick) + 1e-3
    out = np.zeros((rows, cols), dtype=np.uint8)
    out[inside] = labels[k[inside], ri[inside], ci[inside]]
    return out


def overlay_png(seg_file: bytes, flair_files: list[Path], out_png: Path) -> str:
    """Draw the SEG over the FLAIR slice where the segmentation is largest.

    The SEG may sit on another series' grid (the node's reference series): its labels are
    mapped onto the FLAIR slice through patient coordinates (nearest neighbour).

    Parameters
    ----------
    seg_file : bytes
        The SEG.
    flair_files : list of Path
        The FLAIR series' files.
    out_png : Path
        Where to write the PNG.

    Returns
    -------
    str
        A sentence saying which slice was drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import pydicom

    ds = _read(seg_file)
    labels, origins, iop, spacing = _seg_planes(ds)
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in flair_files]
    if not headers:
        raise ValueError("no FLAIR files to draw the SEG on.")
    mapped = [_resample_to_slice(labels, origins, iop, spacing, h) for h in headers]
    best = int(np.argmax([int(np.count_nonzero(m)) for m in mapped]))
    image = pydicom.dcmread(flair_files[best]).pixel_array.astype(float)
    label = mapped[best]
    fig, ax = plt.subplots(figsize=(6, 6), dpi=100)
    ax.imshow(image, cmap="gray")
    masked = np.ma.masked_where(label == 0, label)
    ax.imshow(masked, cmap="autumn", alpha=0.5, interpolation="nearest", vmin=1, vmax=max(3, int(label.max())))
    note = (f"SEG on FLAIR slice {int(headers[best].get('InstanceNumber', best + 1))}, "
            f"{int(np.count_nonzero(label))} labelled pixels")
    ax.set_title(f"{note}\n(demonstration model trained on synthetic data; not for clinical use)", fontsize=8)
    ax.axis("off")
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, bbox_inches="tight")
    plt.close(fig)
    return note
