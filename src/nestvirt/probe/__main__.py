"""`python -m nestvirt.probe [--json] [--timeout S]`: the probe with the standard library alone.

The lab runs this inside minimal guests (`python3 -S -m nestvirt.probe`), where
click and rich do not exist. Exit 0 when every guest ran, 1 when one could
not, 2 on usage errors, 3 when nestvirt itself failed.
"""

from __future__ import annotations

import argparse
import json
import sys


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m nestvirt.probe",
        description="Prove that KVM runs guests here: real and long mode, exits timed.",
    )
    parser.add_argument("--json", action="store_true", help="print nestvirt.probe/1 JSON")
    parser.add_argument(
        "--timeout",
        type=_positive,
        default=2.0,
        metavar="S",
        help="seconds each guest may run (default 2)",
    )
    parser.add_argument("--device", default="/dev/kvm", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)  # exits 2 on usage errors
    try:
        from nestvirt.probe import run_probe, to_json
        from nestvirt.probe.report import render_text
        from nestvirt.rules.probe import probe_findings

        result = run_probe(timeout=args.timeout, device=args.device)
        findings = probe_findings(result)
        if args.json:
            print(json.dumps(to_json(result, findings), indent=2))
        else:
            print(render_text(result, findings))
    except Exception:
        import traceback

        traceback.print_exc()
        print("nestvirt: internal error (a bug in nestvirt; please report it)", file=sys.stderr)
        return 3
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
