"""A written line is the canonical JSON that is hashed, with ``hash`` as its last key:
whatever a record holds, the line reads back as the record and its hash verifies."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from limen.audit.chain import canonical, event_hash, seal

_VALUES = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                    st.text(st.characters(blacklist_categories=("Cs",))))
_RECORDS = st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1),
                           _VALUES, min_size=1)


@given(_RECORDS)
def test_a_sealed_line_reads_back_as_the_record_and_its_hash_verifies(record: dict) -> None:
    line = seal(dict(record))
    read = json.loads(line)
    assert {k: v for k, v in read.items() if k != "hash"} == {
        k: v for k, v in record.items() if k != "hash"}
    assert read["hash"] == event_hash(read)  # what verify recomputes from the file
    assert line.encode() == canonical({k: v for k, v in read.items() if k != "hash"})[:-1] \
        + f',"hash":"{read["hash"]}"}}'.encode()


def test_a_record_s_own_hash_field_is_replaced_not_hashed() -> None:
    record = {"event": "exec", "hash": "forged"}
    line = seal(record)
    assert json.loads(line)["hash"] == record["hash"] == event_hash({"event": "exec"})
    assert line.count('"hash"') == 1


def test_text_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(UnicodeEncodeError):
        seal({"user": "\ud800"})
