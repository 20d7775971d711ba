"""The real-scan corpus: real MR acquisitions that packages ship, labelled by hand.

Every file comes from a package (PyPI, npm or Debian) and is read where the package puts
it; nothing is copied into the repository. ``corpus.json`` beside this module lists the
cases: where each file lies inside its package, the package's licence, and the labels a
person gave it (sequence, vendor, plane, brain or not, real acquisition or template).
Only cases with ``"acquisition": "real"`` count as real-world evidence; templates and
averages (MNI152, Colin27, CAT12) are kept apart.

Sources:

- ``pypi:<dist>``: a file under the installed distribution's top-level package
  (``pydicom``, ``nibabel``, ...); ``pydicom-data`` files are found through
  ``pydicom.data.get_testdata_file`` (exact names only; a wildcard tries to download);
- ``npm:<name>@<version>``: a file inside the package tarball, which
  ``python -m training.realdata fetch`` brings with ``npm pack`` into
  ``var/realdata/npm`` (or ``$MRINODE_REALDATA_DIR``) and unpacks;
- ``debian:<package>``: an absolute path installed by the Debian package.

Some packages' files are kept for independent checks and must never be used here:
:data:`FORBIDDEN` lists them, and the loader refuses a manifest that names one.
"""

from __future__ import annotations

from training.realdata.corpus import (
    FORBIDDEN,
    CorpusCase,
    CorpusError,
    cache_dir,
    fetch,
    load_corpus,
    missing,
    resolve,
)

__all__ = ["FORBIDDEN", "CorpusCase", "CorpusError", "cache_dir", "fetch", "load_corpus", "missing", "resolve"]
