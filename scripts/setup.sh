#!/usr/bin/env bash
# Set up a fresh Debian 12 machine for nestvirt: Debian packages, a venv with
# nestvirt and its test tools, a running libvirtd, and /dev/kvm usable by
# libvirt's QEMU (rule NV-H09). Idempotent: a second run installs nothing new.
# Run as root from the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  qemu-system-x86 qemu-utils            # QEMU (KVM and TCG)
  libvirt-daemon-system libvirt-clients # libvirtd, virsh
  libvirt-dev pkg-config gcc python3-dev python3-venv  # to build libvirt-python
  busybox-static cpio                   # the lab's initramfs
  util-linux procps                     # setpriv, pgrep
  systemd-container                     # systemd-nspawn: the container tests (issue 16)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: nestvirt needs Python >= 3.11 ($python is older)" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
stamp=.venv/.nestvirt-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi

scripts/start-libvirtd.sh >&2
# NV-H09: without udev /dev/kvm stays root:root 0600 and libvirt re-probes QEMU
# on every call; nestvirt's own host set-up applies the fix.
.venv/bin/nestvirt host enable --yes >&2 || echo "setup: nestvirt host enable reported problems (see above)" >&2
