"""`python -m nestvirt.guestside [--json]`: who runs this machine, and the switch to flip there.

Standard library only, like `python -m nestvirt.probe`: it runs where click and
rich do not exist (the lab's minimal guests, a fresh cloud VM). It reads the
guest-side facts (facts/guest.py) — no KVM probe, so it takes milliseconds —
and runs the NV-G rules. `--json` prints a `nestvirt.guestside/1` document:

    {"schema": "nestvirt.guestside/1", "guest": bool,
     "parent": {"kind": str, "name": str, "evidence": str, "engine": str|null} | null,
     "facts": {…GuestFacts…}, "findings": [{"code", "name", "severity", "message", "fix"}]}

`--framed` prints the same document between the lab's console markers
(lab/console.py). Exit 0, 2 on usage errors, 3 when nestvirt itself failed.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

SCHEMA = "nestvirt.guestside/1"


def document() -> dict[str, Any]:
    from nestvirt.facts.guest import gather
    from nestvirt.model import to_jsonable
    from nestvirt.rules.guest import guest_findings, parent_of

    facts = gather()
    parent = parent_of(facts)
    return {
        "schema": SCHEMA,
        "guest": facts.is_guest,
        "parent": to_jsonable(parent),
        "facts": to_jsonable(facts),
        "findings": [f.to_json() for f in guest_findings(facts)],
    }


def render(doc: dict[str, Any]) -> str:
    if not doc["guest"]:
        return "this machine is not a guest: no parent hypervisor to configure"
    parent = doc["parent"]
    lines = [f"parent: {parent['name']} ({parent['evidence']})"]
    for f in doc["findings"]:
        lines.append(f"{f['code']} {f['severity']}: {f['message']}")
        if f["fix"]:
            lines.append(f"  fix: {f['fix']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nestvirt.guestside",
        description="Name the hypervisor or cloud this machine runs under and its nesting switch.",
    )
    parser.add_argument("--json", action="store_true", help="print nestvirt.guestside/1 JSON")
    parser.add_argument("--framed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        doc = document()
        if args.framed:
            from nestvirt.lab.console import frame

            sys.stdout.write(frame(doc))
        elif args.json:
            print(json.dumps(doc, indent=2))
        else:
            print(render(doc))
    except Exception:
        import traceback

        traceback.print_exc()
        print("nestvirt: internal error (a bug in nestvirt; please report it)", file=sys.stderr)
        return 3
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
