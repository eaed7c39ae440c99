"""ps_quote/render_command: what a user pastes is exactly as safe as what nestvirt runs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nestvirt.backends.hyperv_ps import PS_SINGLE_QUOTES, Bare, ps_quote, render_command

QUOTES = set(PS_SINGLE_QUOTES)


def parse_single_quoted(text: str, start: int = 0) -> tuple[str, int]:
    """PowerShell's tokenizer for a '…' literal at text[start]: (value, index after it).

    Any of the five quote characters ends the literal unless another quote
    character follows, in which case the pair stands for the second one.
    Nothing else is special: no `$`, no backtick escapes, newlines allowed.
    """
    assert text[start] in QUOTES, "not a single-quoted literal"
    i, out = start + 1, []
    while True:
        if i >= len(text):
            raise ValueError("unterminated string")
        c = text[i]
        if c in QUOTES:
            if i + 1 < len(text) and text[i + 1] in QUOTES:
                out.append(text[i + 1])
                i += 2
                continue
            return "".join(out), i + 1
        out.append(c)
        i += 1


def tokens(command: str) -> list[str]:
    """Split a rendered command: bare words and single-quoted literals (decoded)."""
    out, i = [], 0
    while i < len(command):
        if command[i] == " ":
            i += 1
        elif command[i] in QUOTES:
            value, i = parse_single_quoted(command, i)
            out.append(value)
        else:
            j = command.find(" ", i)
            j = len(command) if j < 0 else j
            out.append(command[i:j])
            i = j
    return out


hostile = st.text(
    alphabet=st.one_of(
        st.sampled_from([*"'\u2018\u2019\u201a\u201b\"`$();|&\n\r\t {}@#<>-", "\x00"]),
        st.characters(),
    )
)


@given(hostile)
def test_round_trip(value: str) -> None:
    literal = ps_quote(value)
    assert parse_single_quoted(literal) == (value, len(literal))


@given(hostile, hostile)
def test_literal_never_leaks_into_the_next_token(a: str, b: str) -> None:
    command = render_command(
        "Set-VMNetworkAdapter", {"VMName": a, "Name": b, "MacAddressSpoofing": Bare("On")}
    )
    assert tokens(command) == [
        "Set-VMNetworkAdapter",
        "-VMName",
        a,
        "-Name",
        b,
        "-MacAddressSpoofing",
        "On",
    ]


def test_examples() -> None:
    assert ps_quote("DemoVM") == "'DemoVM'"
    assert ps_quote("it's") == "'it''s'"
    assert ps_quote("‘x’") == "'‘‘x’’'"
    assert ps_quote("‚‛") == "'‚‚‛‛'"
    assert ps_quote("$(Stop-Computer)") == "'$(Stop-Computer)'"
    assert ps_quote("a`b;c") == "'a`b;c'"
    assert ps_quote("") == "''"


def test_render_values() -> None:
    assert render_command("Stop-VM", {"Name": "x", "Force": None}) == "Stop-VM -Name 'x' -Force"
    assert (
        render_command(
            "Set-VMMemory",
            {"VMName": "x", "DynamicMemoryEnabled": False, "StartupBytes": 4294967296},
        )
        == "Set-VMMemory -VMName 'x' -DynamicMemoryEnabled $false -StartupBytes 4294967296"
    )
