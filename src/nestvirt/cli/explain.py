"""`nestvirt explain CODE`: a rule's full text, from the registry."""

from __future__ import annotations

import click

from nestvirt import rules
from nestvirt.cli import options
from nestvirt.render import print_json


@click.command()
@click.argument("code", required=False)
@click.option("--list", "list_all", is_flag=True, help="List every rule code and name.")
@options.json_output("Print JSON.")
def command(code: str | None, list_all: bool, as_json: bool) -> int:
    """Print what rule CODE checks, why it matters and how to fix it."""
    found = rules.all_rules() if list_all or code is None else rules.lookup(code)
    if as_json:
        print_json([_rule_json(r) for r in found])
    elif list_all or code is None:
        for r in found:
            click.echo(f"{r.code}  {r.name:<34} {r.severity:<8} {r.platform:<8} {r.summary}")
    else:
        for r in found:
            click.echo(f"{r.code} {r.name} ({r.severity}; {r.target} rule for {r.platform})\n")
            click.echo(_dedent(r.doc))
    return 0


def _rule_json(r: rules.Rule) -> dict[str, str]:
    return {
        "code": r.code,
        "name": r.name,
        "severity": str(r.severity),
        "target": str(r.target),
        "platform": str(r.platform),
        "summary": r.summary,
        "explanation": _dedent(r.doc),
    }


def _dedent(doc: str) -> str:
    import inspect

    return inspect.cleandoc(doc)
