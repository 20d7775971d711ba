#!/usr/bin/env bash
# Runs a command in a private network namespace with only loopback up, so that the test
# servers (Orthanc and storescp bind every interface) are reachable from nowhere else and
# no test can send traffic off this machine. Needs root (CI runs as root).
set -euo pipefail
if [ "${MRINODE_IN_NETNS:-}" = "1" ]; then exec "$@"; fi
export MRINODE_IN_NETNS=1
exec unshare -n bash -c 'ip link set lo up && exec "$@"' bash "$@"
