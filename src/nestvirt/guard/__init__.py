"""The libvirt guard: a qemu hook that refuses operations that would break a nested VM.

- `nestvirt.guard.hook`: the program libvirt runs (`/etc/libvirt/hooks/qemu.d/nestvirt`
  execs it for `migrate begin` and `restore begin` only). Standard library only,
  judged with the same rules as `nestvirt preflight` (NV-O01, NV-O02).
- `nestvirt.guard.domain`: LibvirtVmFacts from the domain XML on the hook's stdin
  (xml.etree, libvirt's CPU map files; never a libvirt connection: a hook that
  calls back into libvirtd deadlocks it).
- `nestvirt.guard.install`: install / uninstall / status of the hook file.

Which of preflight's operations the guard can refuse (libvirt "Hooks for
specific system management"; libvirt 9.0 runs the qemu hooks for prepare,
start, started, stopped, release, migrate, restore, reconnect and attach):

- restore: yes (`restore begin`: `virsh restore FILE`, and `virsh start` of a
  VM with a managed-save image);
- migrate: yes, on the destination (`migrate begin` runs for an incoming
  migration, so the guard must be installed on the destination host);
- save, snapshot-revert, memory-resize: no (libvirt runs no hook for them).
  A save goes through; restoring that image is what the guard refuses.

Importing this package costs nothing.
"""
