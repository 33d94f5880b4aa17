"""E4 inbox list (paging, filters), E9 count, E8 acknowledge."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from tests.api.helpers import MB1, MB2, ack, body_of, download, head, inbox_ids, v1_error, v2_error
from tests.support import V1, Mesh


async def inbox(mesh: Mesh, params: dict[str, str] | None = None, accept: str | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    response = await mesh.client.get(f"{mesh.base}/inbox", params=params, headers=mesh.headers(accept=accept))
    return response.status, await body_of(response)


async def test_empty_inbox_v1(mb2_v1: Mesh) -> None:
    assert await inbox(mb2_v1) == (200, {"messages": []})


async def test_empty_inbox_v2(mb2: Mesh) -> None:
    response = await mb2.client.get(f"{mb2.base}/inbox", headers=mb2.headers())
    assert response.content_type == "application/vnd.mesh.v2+json"
    assert await body_of(response) == {
        "messages": [],
        "links": {"self": f"/messageexchange/{MB2}/inbox"},
        "approx_inbox_count": 0,
    }


async def test_v1_list_in_send_order(mb1: Mesh, mb2_v1: Mesh) -> None:
    ids = [await mb1.send_ok(MB2, b"x") for _ in range(3)]
    assert await inbox(mb2_v1) == (200, {"messages": ids})


async def test_v2_list_has_count_and_no_next(mb1: Mesh, mb2: Mesh) -> None:
    ids = [await mb1.send_ok(MB2, b"x") for _ in range(3)]
    status, body = await inbox(mb2)
    assert status == 200
    assert body["messages"] == ids
    assert body["approx_inbox_count"] == 3
    assert "next" not in body["links"]


@pytest.mark.parametrize("max_results", ["9", "0", "-1", "5001"])
async def test_max_results_out_of_range_is_400(mb2: Mesh, max_results: str) -> None:
    status, body = await inbox(mb2, {"max_results": max_results})
    assert status == 400
    assert body["detail"][0]["loc"] == ["query", "max_results"]


async def test_max_results_not_a_number_is_400(mb2: Mesh) -> None:
    status, body = await inbox(mb2, {"max_results": "ten"})
    assert status == 400
    assert body["detail"][0]["loc"] == ["query", "max_results"]


@pytest.mark.parametrize("max_results", ["10", "5000"])
async def test_max_results_limits_are_accepted(mb2: Mesh, max_results: str) -> None:
    assert (await inbox(mb2, {"max_results": max_results}))[0] == 200


@pytest.fixture
async def twenty_five(mb1: Mesh) -> list[str]:
    return [await mb1.send_ok(MB2, str(i).encode()) for i in range(25)]


async def test_v2_pages_via_links_next(mb2: Mesh, twenty_five: list[str]) -> None:
    seen: list[str] = []
    path = f"{mb2.base}/inbox?max_results=10"
    pages = 0
    while True:
        response = await mb2.client.get(path, headers=mb2.headers())
        assert response.status == 200
        body = await body_of(response)
        pages += 1
        seen += body["messages"]
        assert body["approx_inbox_count"] == 25
        assert parse_qs(urlsplit(body["links"]["self"]).query)["max_results"] == ["10"]
        if "next" not in body["links"]:
            break
        next_link = body["links"]["next"]
        assert next_link.startswith(f"/messageexchange/{MB2}/inbox?")
        assert parse_qs(urlsplit(next_link).query)["max_results"] == ["10"]
        path = next_link
    assert pages == 3
    assert seen == twenty_five


async def test_exact_page_has_no_next(mb1: Mesh, mb2: Mesh) -> None:
    for _ in range(10):
        await mb1.send_ok(MB2, b"x")
    status, body = await inbox(mb2, {"max_results": "10"})
    assert status == 200
    assert len(body["messages"]) == 10
    assert "next" not in body["links"]


async def test_v1_pages_via_continue_from_last_id(mb2_v1: Mesh, twenty_five: list[str]) -> None:
    seen: list[str] = []
    params = {"max_results": "10"}
    while True:
        status, body = await inbox(mb2_v1, params)
        assert status == 200
        assert set(body) == {"messages"}
        seen += body["messages"]
        if len(body["messages"]) < 10:
            break
        params = {"max_results": "10", "continue_from": body["messages"][-1]}
    assert seen == twenty_five


async def test_v1_continue_from_lower_case_id(mb2_v1: Mesh, twenty_five: list[str]) -> None:
    status, body = await inbox(mb2_v1, {"continue_from": twenty_five[19].lower()})
    assert status == 200
    assert body["messages"] == twenty_five[20:]


async def test_continue_from_too_short_is_400(mb2: Mesh) -> None:
    assert (await inbox(mb2, {"continue_from": "short"}))[0] == 400


async def test_paging_skips_acknowledged_messages(mb2: Mesh, twenty_five: list[str]) -> None:
    status, first = await inbox(mb2, {"max_results": "10"})
    assert status == 200
    for message_id in twenty_five[:5] + twenty_five[12:14]:
        assert (await ack(mb2, message_id)).status == 200
    seen = list(first["messages"])
    response = await mb2.client.get(first["links"]["next"], headers=mb2.headers())
    second = await body_of(response)
    seen += second["messages"]
    response = await mb2.client.get(second["links"]["next"], headers=mb2.headers())
    seen += (await body_of(response))["messages"]
    assert seen == twenty_five[:12] + twenty_five[14:]


@pytest.fixture
async def by_workflow(mb1: Mesh) -> dict[str, str]:
    workflows = ["TEST_WORKFLOW", "TEST_WORKFLOW_ACK", "OTHER_FLOW", "PATHOLOGY_RESULTS"]
    return {wf: await mb1.send_ok(MB2, b"x", workflow_id=wf) for wf in workflows}


@pytest.mark.parametrize(
    ("workflow_filter", "expected"),
    [
        ("TEST_WORKFLOW", ["TEST_WORKFLOW"]),
        ("!TEST_WORKFLOW", ["TEST_WORKFLOW_ACK", "OTHER_FLOW", "PATHOLOGY_RESULTS"]),
        ("TEST_*", ["TEST_WORKFLOW", "TEST_WORKFLOW_ACK"]),
        ("!TEST_*", ["OTHER_FLOW", "PATHOLOGY_RESULTS"]),
        ("*FLOW*", ["TEST_WORKFLOW", "TEST_WORKFLOW_ACK", "OTHER_FLOW"]),
        ("!*FLOW*", ["PATHOLOGY_RESULTS"]),
        ("*_*", ["TEST_WORKFLOW", "TEST_WORKFLOW_ACK", "OTHER_FLOW", "PATHOLOGY_RESULTS"]),
        ("NOPE", []),
    ],
)
async def test_workflow_filter(
    mb2: Mesh, mb2_v1: Mesh, by_workflow: dict[str, str], workflow_filter: str, expected: list[str]
) -> None:
    want = [by_workflow[wf] for wf in expected]
    status, body = await inbox(mb2, {"workflow_filter": workflow_filter})
    assert (status, body["messages"]) == (200, want)
    assert parse_qs(urlsplit(body["links"]["self"]).query)["workflow_filter"] == [workflow_filter]
    assert (await inbox(mb2_v1, {"workflow_filter": workflow_filter}))[1] == {"messages": want}


async def test_workflow_filter_underscore_is_literal(mb1: Mesh, mb2: Mesh) -> None:
    wanted = await mb1.send_ok(MB2, b"x", workflow_id="A_B")
    await mb1.send_ok(MB2, b"x", workflow_id="AXB")
    assert (await inbox(mb2, {"workflow_filter": "A_*"}))[1]["messages"] == [wanted]


@pytest.mark.parametrize("workflow_filter", ["X", "Y" * 256])
async def test_workflow_filter_length_is_validated(mb2: Mesh, workflow_filter: str) -> None:
    status, body = await inbox(mb2, {"workflow_filter": workflow_filter})
    assert status == 400
    assert body["detail"][0]["loc"] == ["query", "workflow_filter"]


async def test_workflow_filter_pages_keep_the_filter(mb1: Mesh, mb2: Mesh) -> None:
    wanted = []
    for i in range(12):
        wanted.append(await mb1.send_ok(MB2, b"x", workflow_id="KEEP"))
        await mb1.send_ok(MB2, b"x", workflow_id="DROP" if i % 2 else "KEEP_NOT")
    status, first = await inbox(mb2, {"workflow_filter": "KEEP", "max_results": "10"})
    assert status == 200
    assert first["messages"] == wanted[:10]
    response = await mb2.client.get(first["links"]["next"], headers=mb2.headers())
    assert (await body_of(response))["messages"] == wanted[10:]


async def test_messages_to_others_are_not_listed(mb1: Mesh, mb2: Mesh) -> None:
    await mb1.send_ok(MB1, b"self")
    assert await inbox_ids(mb2) == []


# Count ---------------------------------------------------------------------------------------------------


async def test_count_v1(mb1: Mesh, mb2_v1: Mesh) -> None:
    await mb1.send_ok(MB2, b"x")
    await mb1.send_ok(MB2, b"y")
    response = await mb2_v1.client.get(f"{mb2_v1.base}/count", headers=mb2_v1.headers())
    body = await body_of(response)
    assert response.status == 200
    assert set(body) == {"count", "internalID", "allResultsIncluded"}
    assert body["count"] == 2
    assert body["allResultsIncluded"] is True
    assert isinstance(body["internalID"], str) and body["internalID"]


async def test_count_v2(mb1: Mesh, mb2: Mesh) -> None:
    await mb1.send_ok(MB2, b"x")
    response = await mb2.client.get(f"{mb2.base}/count", headers=mb2.headers())
    assert await body_of(response) == {"count": 1}


# Acknowledge ---------------------------------------------------------------------------------------------


async def count_of(mesh: Mesh) -> int:
    response = await mesh.client.get(f"{mesh.base}/count", headers=mesh.headers())
    return int((await body_of(response))["count"])


async def test_ack_v1_body(mb1: Mesh, mb2_v1: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    response = await ack(mb2_v1, message_id)
    assert response.status == 200
    assert await body_of(response) == {"messageId": message_id}


async def test_ack_v2_empty_and_message_leaves_inbox(mb1: Mesh, mb2: Mesh) -> None:
    keep = await mb1.send_ok(MB2, b"keep")
    message_id = await mb1.send_ok(MB2, b"x")
    assert await count_of(mb2) == 2
    response = await ack(mb2, message_id)
    assert response.status == 200
    assert await response.read() == b""
    assert await inbox_ids(mb2) == [keep]
    assert await count_of(mb2) == 1
    assert (await inbox(mb2))[1]["approx_inbox_count"] == 1


async def test_repeat_ack_is_200(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    assert (await ack(mb2, message_id)).status == 200
    assert (await ack(mb2, message_id)).status == 200
    assert (await ack(mb2, message_id.lower())).status == 200


async def test_ack_by_other_mailbox_is_403(mb1: Mesh, mb2: Mesh, mb3: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    for other in (mb1, mb3):
        response = await ack(other, message_id)
        assert response.status == 403
        assert v2_error(await body_of(response))[2] == "Forbidden"
    assert await inbox_ids(mb2) == [message_id]


async def test_ack_unknown_is_404(mb2: Mesh, mb2_v1: Mesh) -> None:
    response = await ack(mb2_v1, "20240101000000000000_ABCDEF")
    assert response.status == 404
    assert v1_error(await body_of(response)) == ("RECEIVE", "20", "Message does not exist")


async def test_download_and_head_after_ack_are_410(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    assert (await download(mb2, message_id)).status == 200
    assert (await ack(mb2, message_id)).status == 200
    response = await download(mb2, message_id)
    assert response.status == 410
    assert v2_error(await body_of(response))[1] == "Message already accepted"
    assert (await head(mb2, message_id)).status == 410


async def test_ack_uploading_message_is_noop(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"a", extra={"mex-Chunk-Range": "1:2"})
    assert (await ack(mb2, message_id)).status == 200
    response = await mb1.client.post(
        f"{mb1.base}/outbox/{message_id}/2", data=b"b", headers=mb1.headers({"mex-Chunk-Range": "2:2"})
    )
    assert response.status == 202
    assert await inbox_ids(mb2) == [message_id]


async def test_v1_ack_of_lower_case_id(mb1: Mesh, mb2: Mesh) -> None:
    message_id = await mb1.send_ok(MB2, b"x")
    v1 = Mesh(mb2.client, MB2, accept=V1)
    response = await ack(v1, message_id.lower())
    assert await body_of(response) == {"messageId": message_id}


async def test_v1_continue_from_an_acknowledged_id(mb2: Mesh, mb2_v1: Mesh, twenty_five: list[str]) -> None:
    """A v1 client acknowledges its page before asking for the next one from the last ID."""
    first = (await inbox(mb2_v1, {"max_results": "10"}))[1]["messages"]
    for message_id in first:
        assert (await ack(mb2, message_id)).status == 200
    status, body = await inbox(mb2_v1, {"max_results": "10", "continue_from": first[-1]})
    assert (status, body["messages"]) == (200, twenty_five[10:20])
