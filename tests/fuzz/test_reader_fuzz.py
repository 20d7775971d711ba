"""Property-based fuzzing of the series reader (:func:`dicom_node.io.reader.read_series`).

The contract: whatever the files hold, the reader returns volumes or raises its own
:class:`~dicom_node.io.errors.SeriesReadError` (the job then fails with that sentence) —
never another exception (a traceback in a worker), never a hang. Inputs: a small synthetic
series (three 8 x 6 slices, uncompressed and RLE), a small Enhanced MR, a Siemens mosaic, a
two-b-value DWI series and pydicom's real ``MR_small`` files, with one file damaged in its bytes, its element lengths or cut short.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from dicom_node.io.reader import SeriesReadError, read_series
from tests.fuzz.corpus import split_part10
from tests.fuzz.findings import save_failure
from tests.fuzz.mutate import byte_mutations, fuzz_settings, length_corruptions


@functools.cache
def _series() -> dict[str, list[bytes]]:
    """The seed series, as the bytes of their files (built once per session)."""
    from pydicom.data import get_testdata_file
    from pydicom.uid import RLELossless

    from tests.io.series_factory import make_dwi_series, make_enhanced_series, make_mosaic_series, make_series

    tmp = Path(tempfile.mkdtemp(prefix="mrinode-fuzz-reader-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    out: dict[str, list[bytes]] = {}
    paths, _ = make_series(tmp / "plain", shape=(8, 6, 3), orientation="oblique", rescale=(0.5, -3.0))
    out["synthetic"] = [p.read_bytes() for p in sorted(paths)]
    paths, _ = make_series(tmp / "rle", shape=(8, 6, 3), transfer_syntax=RLELossless)
    out["synthetic-rle"] = [p.read_bytes() for p in sorted(paths)]
    paths, _ = make_enhanced_series(tmp / "enhanced")
    if sum(p.stat().st_size for p in paths) < 200_000:
        out["enhanced"] = [p.read_bytes() for p in sorted(paths)]
    paths, _ = make_mosaic_series(tmp / "mosaic")  # Siemens mosaic with a CSA header
    out["mosaic"] = [p.read_bytes() for p in sorted(paths)]
    paths, _ = make_dwi_series(tmp / "dwi", b_values=(0.0, 1000.0))  # split by b-value
    out["dwi"] = [p.read_bytes() for p in sorted(paths)]
    for name in ("MR_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm"):
        path = get_testdata_file(name)  # installed with pydicom: no download
        if path is not None:
            out[f"pydicom:{name}"] = [Path(str(path)).read_bytes()]
    return out


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Silence a library logger (pydicom logs a warning for every value it repairs)."""
    logger = logging.getLogger(name)
    old = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(old)


def check_read(files: list[bytes]) -> None:
    """Write ``files`` to a fresh folder and read them; only volumes or SeriesReadError allowed."""
    with tempfile.TemporaryDirectory(prefix="mrinode-fuzz-") as tmp:
        paths = []
        for i, data in enumerate(files):
            path = Path(tmp) / f"IM{i:04d}.dcm"
            path.write_bytes(data)
            paths.append(path)
        with warnings.catch_warnings(), _quiet("pydicom"):
            warnings.simplefilter("ignore")  # pydicom warns about what it repairs; not the contract here
            try:
                volumes = read_series(paths)
            except SeriesReadError as exc:
                assert str(exc).startswith("Cannot read ")
                return
            except BaseException as exc:  # a Rust decoder's panic is a BaseException
                save_failure("reader", {p.name: p.read_bytes() for p in paths}, exc)
                raise
        assert volumes and all(v.data.ndim == 3 for v in volumes)


def test_every_seed_series_reads() -> None:
    for name, files in _series().items():
        try:
            check_read(files)
        except SeriesReadError as exc:  # pragma: no cover - a seed must be readable
            raise AssertionError(f"seed series {name} does not read: {exc}") from None


@st.composite
def damaged_series(draw: Any) -> list[bytes]:
    """A seed series with one file damaged (in its header or its pixel data) or cut short."""
    series = _series()
    files = list(series[draw(st.sampled_from(sorted(series)))])
    index = draw(st.integers(0, len(files) - 1))
    data = files[index]
    ts, stream = split_part10(data)
    head = data[: len(data) - len(stream)]
    how = draw(st.sampled_from(["lengths", "bytes", "meta", "cut"]))
    if how == "lengths":
        stream = draw(length_corruptions(stream, ts))
    elif how == "bytes":
        stream = draw(byte_mutations(stream))
    elif how == "meta":
        head = draw(byte_mutations(head))
    else:
        stream = stream[: draw(st.integers(0, len(stream)))]
    files[index] = head + stream
    return files


@fuzz_settings(max_examples=250, deadline_ms=5000)
@given(damaged_series())
def test_damaged_series_raise_only_series_read_error(files: list[bytes]) -> None:
    check_read(files)
