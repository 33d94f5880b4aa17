"""The agent's control files: written as ElementTree would write them, and read back unchanged."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from broker.client.agent import control as ctl

# Text a control file can carry: XML's characters (no NUL or other C0 controls but tab and newline), markup included.
TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="".join(map(chr, range(9))) + "\x0b\x0c"),
    max_size=20,
).filter(lambda t: not any(0x0E <= ord(c) <= 0x1F or c == "\r" for c in t))
NAMES = st.sampled_from([*ctl.ORDER, "LinkedMsgId", "Custom"])
RECORDS = st.builds(
    ctl.StatusRecord,
    TEXT,
    TEXT,
    TEXT,
    TEXT,
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1), timezones=st.just(UTC)),
)


@given(st.dictionaries(NAMES, TEXT, max_size=8), st.lists(RECORDS, max_size=3))
def test_a_control_file_is_written_byte_for_byte_as_elementtree_writes_it(
    fields: dict[str, str], records: list[ctl.StatusRecord]
) -> None:
    control = ctl.Control(fields, records)
    names = [n for n in ctl.ORDER if n in fields] + [n for n in fields if n not in ctl.ORDER]
    assert control.to_xml() == control._tree_xml(names)


@given(st.dictionaries(NAMES, TEXT, max_size=8), st.lists(RECORDS, max_size=3))
def test_a_written_control_file_reads_back_as_it_was(fields: dict[str, str], records: list[ctl.StatusRecord]) -> None:
    read = ctl.parse(ctl.Control(fields, records).to_xml())
    # Reading strips surrounding whitespace and keeps whole seconds, as it always has.
    assert read.fields == {name: text.strip() for name, text in fields.items()}
    assert [(r.event, r.status, r.code, r.description, r.at) for r in read.records] == [
        (r.event.strip(), r.status.strip(), r.code.strip(), r.description.strip(), r.at.replace(microsecond=0))
        for r in records
    ]


def test_a_namespaced_element_is_left_to_elementtree() -> None:
    control = ctl.parse(b'<DTSControl><x:Extra xmlns:x="urn:x">1</x:Extra><To_DTS>A</To_DTS></DTSControl>')
    written = control.to_xml()
    assert b"<To_DTS>A</To_DTS>" in written
    assert ctl.parse(written).fields == control.fields
