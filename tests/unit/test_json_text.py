"""render.json_text is `json.dumps(indent=2, ensure_ascii=False)` (orjson is only its
speed): the same bytes for every document whose floats print without an exponent, and the
same value for every document."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from nestvirt.render import SMALL_DOCUMENT, json_text

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(),
    st.floats(allow_nan=False, allow_infinity=False),
)  # fmt: skip
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)


@given(DOCUMENTS, st.booleans())
def test_same_bytes_as_the_standard_encoder(document: object, large: bool) -> None:
    # a large document (a fleet, 1,000 VMs) goes through orjson, a small one does not
    if large:
        document = {"vms": [document] * SMALL_DOCUMENT}
    ours, standard = json_text(document), json.dumps(document, indent=2, ensure_ascii=False)
    assert json.loads(ours) == json.loads(standard)
    if "e-" not in standard and "e+" not in standard:
        assert ours == standard


def test_a_large_document_is_written_by_orjson() -> None:
    # orjson's one visible difference: no leading zero in an exponent
    assert "1e-09" in json_text({"x": [1e-9]})
    assert "1e-9" in json_text({"x": [1e-9] * SMALL_DOCUMENT})


def test_beyond_64_bits_falls_back() -> None:
    assert json_text({"n": 10**30}) == '{\n  "n": 1000000000000000000000000000000\n}'
