"""A test-only platform, "toy", built the way docs/architecture.md ("Adding a platform")
says a new backend is: I/O (backend.py), facts (facts.py), rules (rules.py), a pure
plan (plan.py) and the adapter (platform.py), plugged in with one registration line
(REGISTRATION below). tests/unit/test_toy_platform.py drives it through `nestvirt
status`, `enable`, `undo` and `history` without any change to nestvirt itself."""

from nestvirt.registry import Registration

REGISTRATION = Registration("toy", "tests.toy.platform", ("tests.toy.rules",), schemes=("toy",))
