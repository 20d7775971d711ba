"""The OHIF viewer served beside the PACS: the pinned prebuilt ``@ohif/app`` and a small
same-origin reverse proxy to Orthanc's DICOMweb.

* :mod:`dicom_node.viewer.bundle` fetches ``@ohif/app`` (pinned version, npm's own
  client) into ``var/viewer`` once and finds its built ``dist/``.
* :mod:`dicom_node.viewer.app` is the ASGI app: OHIF's static files (any unknown route,
  e.g. ``/viewer?StudyInstanceUIDs=…``, falls back to ``index.html``), the app
  configuration from ``deploy/viewer/app-config.js``, and ``/dicom-web/…`` proxied to the
  PACS on the same origin (no CORS header at all).
* ``python -m dicom_node.viewer fetch|serve`` runs either from the command line.
"""

from __future__ import annotations

from dicom_node.viewer.bundle import OHIF_VERSION, ViewerBundleError, default_dist, fetch_bundle
from dicom_node.viewer.urls import DEFAULT_PORT, study_url

__all__ = ["DEFAULT_PORT", "OHIF_VERSION", "ViewerBundleError", "default_dist", "fetch_bundle", "study_url"]
