"""What the write flow's commands (enable/disable/undo, host, guard) print besides the
plan: their progress, why an undo without --force is refused, and a journal as `history`
shows it."""

from __future__ import annotations

from typing import Any

import click


def progress(text: str) -> None:
    """What the flow says on the way (settled journal entries, stops, waits): stderr."""
    click.echo(f"nestvirt: {text}", err=True)


def print_refusal(outcome: Any, *, dry_run: bool, as_json: bool) -> None:
    """After `undo --dry-run` of a subject changed since: why, and what --force discards."""
    if dry_run and outcome.refused:
        click.echo(f"nestvirt: without --force: {outcome.refused}", err=True)
        if outcome.discarded and not as_json:
            click.echo("--force would discard these changes made outside nestvirt:")
            click.echo(outcome.discarded, nl=False)


def print_history(
    name: str, uri: str, entries: list[Any], skipped: list[Any], as_json: bool
) -> None:
    """A journal as `nestvirt.history/1` (docs/contracts.md) or one line per entry."""
    undone = {e.undoes for e in entries if e.action == "undo" and e.status == "done"}
    if as_json:
        from nestvirt.render import print_json

        print_json(
            {
                "schema": "nestvirt.history/1",
                "vm": name,
                "uri": uri,
                "entries": [
                    {
                        "seq": e.seq,
                        "time": e.time,
                        "user": e.user,
                        "action": e.action,
                        "status": e.status,
                        "changes": list(e.changes),
                        "codes": list(e.codes),
                        "undoes": e.undoes,
                        "undone": e.seq in undone,
                        "note": e.extra.get("note"),  # how a failure or crash was settled
                    }
                    for e in entries
                ],
                "skipped": [{"path": str(s.path), "reason": s.reason} for s in skipped],
            }
        )
        return
    if not entries:
        click.echo(f"{name}: no changes by nestvirt on {uri}")
        return
    width = max(8, *(len(e.action) for e in entries))  # older host entries: "host-enable"
    for e in entries:
        what = ", ".join(e.changes) or "-"
        extra = f" (reverts #{e.undoes})" if e.undoes else ""
        extra += " (undone)" if e.seq in undone else ""
        click.echo(
            f"#{e.seq:<3} {e.time}  {e.user:<12} {e.action:<{width}} {e.status:<11} {what}{extra}"
        )
