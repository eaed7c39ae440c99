"""Docstrings and docs cite documents in this repository or upstream, never design notes outside it.

Issue 13: REFERENCE.md, SEED-SUMMARY.md, PRODUCT.md, RULES.md and STYLE.md live outside the
repository, so a reader of the code cannot follow a citation to them. Every `docs/<file>.md`
(and `docs/<file>.md#anchor`) cited in src/ must exist here, down to the heading.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# The design notes kept outside the repository (case-sensitive: docs/rules.md is ours).
OUT_OF_REPO = re.compile(
    r"\b(?:REFERENCE\.md|SEED-SUMMARY(?:\.md)?|PRODUCT\.md|RULES\.md|STYLE\.md)\b"
)

# `docs/x.md` or `docs/x.md#anchor`, not part of a longer path or URL.
DOC_CITATION = re.compile(r"(?<![\w/.:-])docs/(?P<file>[\w./-]+?\.md)(?:#(?P<anchor>[\w-]+))?")
HEADING = re.compile(r"^(#{1,6})\s+(?P<text>.+?)\s*#*\s*$")
FENCE = re.compile(r"^\s*(```|~~~)")


def _scanned() -> list[Path]:
    """Every text file under src/ and docs/, and README.md."""
    files = [ROOT / "README.md"]
    for top in ("src", "docs"):
        for path in sorted((ROOT / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.append(path)
    return files


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None  # not a text file: it cites nothing


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _out_of_repo_citations(path: Path) -> list[str]:
    text = _text(path)
    if text is None:
        return []
    return [
        f"{_rel(path)}:{number}: {line.strip()}"
        for number, line in enumerate(text.splitlines(), 1)
        if OUT_OF_REPO.search(line)
    ]


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`([^`]*)`", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The anchors of every heading outside fenced code, numbered as GitHub numbers repeats."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        match = None if fenced else HEADING.match(line)
        if match:
            base = slug(match["text"])
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def test_slug_matches_github() -> None:
    assert slug("kvm-ok") == "kvm-ok"
    assert slug("Hypervisor signatures in CPUID") == "hypervisor-signatures-in-cpuid"
    assert slug("What `nested` means (x86)") == "what-nested-means-x86"
    assert anchors("# A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1"}


def test_no_citation_of_out_of_repo_documents() -> None:
    offending = [hit for path in _scanned() for hit in _out_of_repo_citations(path)]
    assert not offending, (
        "cite the upstream source or a docs/*.md section instead of the design notes "
        "outside the repository (issue 13):\n" + "\n".join(offending)
    )


def _doc_citations() -> list[tuple[str, str, str | None]]:
    cited = []
    for path in (ROOT / "src").rglob("*.py"):
        text = _text(path) or ""
        for match in DOC_CITATION.finditer(text):
            cited.append((_rel(path), match["file"], match["anchor"]))
    return sorted(cited, key=lambda c: (c[0], c[1], c[2] or ""))


def test_src_cites_docs() -> None:
    """The check below has something to check (the pattern has not gone stale)."""
    assert any(anchor for _, _, anchor in _doc_citations())


def test_cited_docs_and_anchors_exist() -> None:
    broken = []
    headings: dict[str, set[str]] = {}
    for source, file, anchor in _doc_citations():
        doc = ROOT / "docs" / file
        if not doc.is_file():
            broken.append(f"{source}: docs/{file} does not exist")
            continue
        if anchor is None:
            continue
        if file not in headings:
            headings[file] = anchors(doc.read_text(encoding="utf-8"))
        if anchor not in headings[file]:
            broken.append(f"{source}: docs/{file}#{anchor} is no heading of docs/{file}")
    assert not broken, "\n".join(broken)


def test_sources_sections_state_fact_versions_and_source() -> None:
    """docs/sources.md: one section per fact, each with its versions and an upstream link."""
    text = (ROOT / "docs" / "sources.md").read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)[1:]
    assert sections
    for section in sections:
        title = section.splitlines()[0]
        for part in ("**Fact.**", "**Holds for.**", "**Source.**"):
            assert part in section, f"docs/sources.md, {title!r}: no {part}"
        source = section.split("**Source.**", 1)[1]
        assert "https://" in source, f"docs/sources.md, {title!r}: no upstream URL"
