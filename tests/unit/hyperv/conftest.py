"""Shared helpers for the Hyper-V tests: fixture paths and snapshot documents built in the test."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hyperv"
sys.path.insert(0, str(Path(__file__).resolve().parent))  # psrp_standin

GIB = 1024**3


def fixture(name: str) -> Path:
    return FIXTURES / name


def load_doc(name: str) -> dict[str, Any]:
    return json.loads(fixture(name).read_text(encoding="utf-8-sig"))


@pytest.fixture
def demo_doc() -> dict[str, Any]:
    """The PRODUCT.md example: an Intel host on build 26100 and DemoVM not yet set up."""
    return copy.deepcopy(load_doc("ws2025-intel-demo.json"))
