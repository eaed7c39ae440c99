#!/usr/bin/env bash
# Start virtlogd and libvirtd without systemd (containers, CI) and wait for the socket.
# Idempotent: does nothing when libvirtd already answers.
set -euo pipefail
socket=/var/run/libvirt/libvirt-sock
if [ -S "$socket" ] && virsh -c qemu:///system version >/dev/null 2>&1; then
  exit 0
fi
mkdir -p /var/run/libvirt /var/log/libvirt /var/lib/libvirt/images
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 1 300); do
  if [ -S "$socket" ] && virsh -c qemu:///system version >/dev/null 2>&1; then
    echo "libvirtd is up"
    exit 0
  fi
  sleep 0.1
done
echo "libvirtd did not answer on $socket within 30 s (see /var/log/libvirt)" >&2
exit 1
