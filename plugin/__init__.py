"""The Orthanc Python plugin (stdlib and Orthanc's ``orthanc`` module only)."""
