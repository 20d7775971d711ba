"""mrinode's DICOM node: receive, spool, jobs, export, imaging I/O and sequence identification.

The receive path (SCP, spool, store, queue) imports without torch; heavy imports live
inside the functions that need them.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
