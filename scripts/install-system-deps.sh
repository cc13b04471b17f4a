#!/usr/bin/env bash
# System packages distinfer's tests and demo need on a Debian/Ubuntu control machine.
# Idempotent: installs only what is missing. Run as root (make does it for you).
set -euo pipefail
PACKAGES=(
  git make rsync openssh-client openssh-server sshpass iproute2 procps
  podman runc debootstrap slirp4netns uidmap fuse-overlayfs
  # headless browser for the chat page and report.html tests (driven by selenium; no download at run time)
  chromium chromium-driver
  # Prometheus and its node exporter (the prometheus_local role's packages; the panel-query and report
  # tests start their own on free ports)
  prometheus prometheus-node-exporter
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "error: missing system packages ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "system packages: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Packages with a service (prometheus, its node exporter) are installed without starting it: the role
# and the tests run their own on their own ports, and a package's default (:9090, :9100) may be taken.
# policy-rc.d is Debian's switch for that; ours is removed again, one already there is left alone.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# distinfer: installing packages, start no service\nexit 101\n' > "$policy"
  chmod 0755 "$policy"
  trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
