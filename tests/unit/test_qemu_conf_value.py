"""linux_host._conf_value (qemu.conf's user/group for NV-H09) finds what the regular
expression it replaced finds, on any text made of the characters that matter."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from nestvirt.facts.linux_host import _conf_value

PIECES = ["user", "group", "use", "username", " ", "\t", "\n", "\r", "\x0b", "\x1c", "\u00a0"]
PIECES += ["=", '"', '"root"', "#", "x", "kvm", "\n#", "\n  user", ' = "']


def by_regex(text: str, key: str) -> str | None:
    match = re.search(rf'^\s*{key}\s*=\s*"([^"]*)"', text, re.MULTILINE)
    return match.group(1) if match else None


@settings(max_examples=3000, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40).map("".join))
def test_same_answer_as_the_regex(text: str) -> None:
    for key in ("user", "group"):
        assert _conf_value(text, key) == by_regex(text, key)


def test_examples() -> None:
    text = '# user = "nobody"\nuser = "root"\n  group="kvm" # trailing\n'
    assert (_conf_value(text, "user"), _conf_value(text, "group")) == ("root", "kvm")
    assert _conf_value('username = "x"\n', "user") is None
    assert _conf_value('user\n=\n"across lines"', "user") == "across lines"
    assert _conf_value('user = "unterminated\nuser = "second"', "user") == "unterminated\nuser = "
    assert _conf_value("", "user") is None
