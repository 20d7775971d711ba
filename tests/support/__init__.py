"""Helpers shared by the test suites: real dcmtk, dicom3tools, Orthanc and node processes."""
