"""The pinned prebuilt OHIF viewer: fetched once with npm's own client, unpacked, cached.

``npm pack @ohif/app@<version>`` downloads the package tarball from the configured
registry and checks its integrity; the tarball ships the built viewer in ``dist/``. It is
unpacked into ``var/viewer/ohif-<version>/`` (nothing runs from npm: no install scripts,
no ``node_modules``).
"""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

__all__ = ["OHIF_PACKAGE", "OHIF_VERSION", "ViewerBundleError", "default_dist", "fetch_bundle"]

#: The pinned viewer (npm ``@ohif/app``); change it here and in ``docs/viewer.md`` together.
OHIF_VERSION = "3.13.2"
OHIF_PACKAGE = "@ohif/app"

_ROOT = Path(__file__).resolve().parents[2]


class ViewerBundleError(RuntimeError):
    """The viewer bundle is missing or could not be fetched (the message says what to run)."""


def default_dist(var_dir: Path | None = None, version: str = OHIF_VERSION) -> Path:
    """The ``dist/`` folder of the cached viewer (it may not exist yet).

    Parameters
    ----------
    var_dir : Path, optional
        The cache folder (default ``<repository>/var/viewer``).
    version : str
        The OHIF version.

    Returns
    -------
    Path
    """
    return (var_dir or _ROOT / "var" / "viewer") / f"ohif-{version}" / "dist"


def check_dist(dist: Path) -> Path:
    """Return ``dist`` if it holds a built OHIF viewer.

    Raises
    ------
    ViewerBundleError
        If ``index.html`` is missing, with the command that fetches it.
    """
    if not (dist / "index.html").is_file():
        raise ViewerBundleError(
            f"The OHIF viewer is not at {dist} (no index.html); fetch it with `make viewer` "
            f"(python -m dicom_node.viewer fetch)."
        )
    return dist


def fetch_bundle(var_dir: Path | None = None, version: str = OHIF_VERSION, npm: str = "npm") -> Path:
    """Fetch and unpack ``@ohif/app@version`` unless it is cached already.

    Parameters
    ----------
    var_dir : Path, optional
        The cache folder (default ``<repository>/var/viewer``).
    version : str
        The exact version (pinned).
    npm : str
        The npm executable.

    Returns
    -------
    Path
        The viewer's ``dist/`` folder.

    Raises
    ------
    ViewerBundleError
        If npm is missing, ``npm pack`` fails, or the tarball holds no ``dist/index.html``.
    """
    dist = default_dist(var_dir, version)
    if (dist / "index.html").is_file():
        return dist
    exe = shutil.which(npm)
    if exe is None:
        raise ViewerBundleError(f"{npm} is not installed (Debian package npm); run `make system-deps`.")
    target = dist.parent
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        proc = subprocess.run(
            [exe, "pack", "--silent", "--ignore-scripts", f"{OHIF_PACKAGE}@{version}", "--pack-destination", tmp],
            capture_output=True, text=True, check=False, cwd=tmp,
        )
        if proc.returncode != 0:
            raise ViewerBundleError(f"npm pack {OHIF_PACKAGE}@{version} failed: {proc.stderr.strip()[-800:]}")
        tarballs = sorted(Path(tmp).glob("*.tgz"))
        if not tarballs:
            raise ViewerBundleError(f"npm pack {OHIF_PACKAGE}@{version} wrote no tarball.")
        unpack = Path(tmp) / "unpacked"
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(unpack, filter="data")
        built = unpack / "package" / "dist"
        check_dist(built)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        built.rename(dist)
        for name in ("LICENSE", "package.json"):
            if (unpack / "package" / name).exists():
                (unpack / "package" / name).rename(target / name)
    return dist
