"""`nestvirt lab`: build a first-level VM from this host's packages, boot it, probe every depth.

This package's top level stays import-free: `nestvirt.lab.guest` runs inside the
lab VM with the standard library alone. The entry point is `nestvirt.lab.run.run_lab`.
"""
