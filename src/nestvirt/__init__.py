"""nestvirt: check, switch on, prove and keep safe nested virtualization.

This package's top level stays import-free: `python -m nestvirt.probe` runs
inside minimal lab guests with the standard library alone.
"""

__version__ = "0.1.0"
