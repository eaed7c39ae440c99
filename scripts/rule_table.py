"""Write the README's rule table from the registry (between the RULES markers).

.venv/bin/python scripts/rule_table.py          # rewrite README.md
.venv/bin/python scripts/rule_table.py --check  # exit 1 if README.md is stale
"""

from __future__ import annotations

import sys
from pathlib import Path

from nestvirt import rules

README = Path(__file__).resolve().parent.parent / "README.md"
BEGIN, END = "<!-- rules:begin -->", "<!-- rules:end -->"


def table() -> str:
    rows = ["| code | name | severity | platforms | checks |", "|---|---|---|---|---|"]
    by_code: dict[str, list[rules.Rule]] = {}
    for r in rules.all_rules():
        by_code.setdefault(r.code, []).append(r)
    for code, impls in by_code.items():
        first = impls[0]
        platforms = ", ".join(str(r.platform) for r in impls)
        severities = "/".join(dict.fromkeys(str(r.severity) for r in impls))
        rows.append(f"| {code} | {first.name} | {severities} | {platforms} | {first.summary} |")
    return "\n".join(rows)


def render(text: str) -> str:
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main() -> int:
    current = README.read_text()
    if BEGIN not in current or END not in current:
        print(f"{README} has no {BEGIN} … {END} section", file=sys.stderr)
        return 1
    wanted = render(current)
    if "--check" in sys.argv:
        if wanted != current:
            print("README.md rule table is stale: run scripts/rule_table.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
