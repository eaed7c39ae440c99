"""The guard's hooks directory, state and log under the test's own tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nestvirt.guard import install as guard


@pytest.fixture()
def hooks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    base = tmp_path / "hooks"
    base.mkdir()
    monkeypatch.setenv(guard.ENV_HOOKS_DIR, str(base))
    monkeypatch.setenv("NESTVIRT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NESTVIRT_GUARD_LOG", str(tmp_path / "guard.log"))
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # writes the test's directory only
    return base
