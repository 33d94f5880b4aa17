"""Any value of any query parameter the broker reads answers a MESH error or success, never a 500."""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz.conftest import Broker
from tests.fuzz.raw import assert_mesh_answer
from tests.fuzz.strategies import FUZZ, iso_times, query_bytes

#: (path under the caller's mailbox, the parameters it reads).
LISTS = [
    ("/inbox", ["max_results", "continue_from", "workflow_filter"]),
    ("/inbox/rich", ["start_time", "max_results", "continue_from"]),
    ("/outbox/rich", ["start_time", "max_results", "continue_from"]),
    ("/outbox/tracking", ["messageID"]),
]
queries = st.sampled_from(LISTS).flatmap(
    lambda entry: st.tuples(
        st.just(entry[0]),
        st.dictionaries(st.sampled_from(entry[1]), st.one_of(query_bytes, iso_times.map(str.encode)), max_size=3),
    )
)


def _query(params: dict[str, bytes]) -> str:
    return "&".join(f"{name}={quote(value, safe='')}" for name, value in params.items())


@FUZZ
@given(query=queries)
def test_list_queries(broker: Broker, query: tuple[str, dict[str, bytes]]) -> None:
    path, params = query
    answer = broker.request("GET", f"{broker.recipient.base}{path}?{_query(params)}", [], caller=broker.recipient)
    assert_mesh_answer(answer)


@FUZZ
@given(start_time=iso_times)
def test_rich_start_times(broker: Broker, start_time: str) -> None:
    """Every representable time, with every offset: some leave datetime's range once converted to UTC."""
    answer = broker.request(
        "GET", f"{broker.recipient.base}/inbox/rich?start_time={quote(start_time)}", [], caller=broker.recipient
    )
    assert_mesh_answer(answer)


@FUZZ
@given(value=query_bytes)
def test_path_values(broker: Broker, value: bytes) -> None:
    """Message IDs and local IDs in the path: percent-encoded arbitrary bytes, NUL and invalid UTF-8 included."""
    segment = quote(value, safe="") or "x"
    for path in (f"/inbox/{segment}", f"/outbox/tracking/{segment}", f"/inbox/{segment}/status/acknowledged"):
        method = "PUT" if path.endswith("acknowledged") else "GET"
        caller = broker.sender if "outbox" in path else broker.recipient
        answer = broker.request(method, f"{caller.base}{path}", [], caller=caller)
        assert_mesh_answer(answer)
