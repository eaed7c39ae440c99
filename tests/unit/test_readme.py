"""The README's rule table is the registry's, not a hand copy."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_readme_rule_table_matches_registry() -> None:
    spec = importlib.util.spec_from_file_location("rule_table", ROOT / "scripts" / "rule_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = (ROOT / "README.md").read_text()
    assert module.render(current) == current, "run scripts/rule_table.py"
