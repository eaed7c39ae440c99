"""Backends: the only code that talks to a hypervisor. They read facts and
apply plans; they never decide policy."""
