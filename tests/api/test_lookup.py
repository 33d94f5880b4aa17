"""E12 endpoint lookup and E13 workflow search: no auth needed, an invalid one is refused."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.api.helpers import MB1, MB2, MB3, body_of
from tests.support import V1, V2, Tokens

LOOKUP = "/messageexchange/endpointlookup"


async def test_lookup_v1(client: TestClient) -> None:
    response = await client.get(f"{LOOKUP}/X26/TEST_WORKFLOW", headers={"Accept": V1})
    assert response.status == 200
    body = await body_of(response)
    assert set(body) == {"query_id", "results"}
    assert isinstance(body["query_id"], str) and body["query_id"]
    assert body["results"] == [{"address": MB2, "description": "TESTMB2", "endpoint_type": "MESH"}]


async def test_lookup_without_accept_is_v1(client: TestClient) -> None:
    body = await body_of(await client.get(f"{LOOKUP}/X26/TEST_WORKFLOW"))
    assert "query_id" in body


async def test_lookup_v2(client: TestClient) -> None:
    response = await client.get(f"{LOOKUP}/X26/TEST_WORKFLOW_ACK", headers={"Accept": V2})
    assert response.status == 200
    assert await body_of(response) == {"results": [{"mailbox_id": MB1, "mailbox_name": "TESTMB1"}]}


async def test_lookup_filters_by_ods_code(client: TestClient) -> None:
    body = await body_of(await client.get(f"{LOOKUP}/X27/TEST_WORKFLOW2", headers={"Accept": V2}))
    assert body == {"results": [{"mailbox_id": MB3, "mailbox_name": "TESTMB3"}]}


async def test_lookup_no_match_is_empty_200(client: TestClient) -> None:
    for path in ("X99/TEST_WORKFLOW", "X26/NO_SUCH_WORKFLOW"):
        response = await client.get(f"{LOOKUP}/{path}", headers={"Accept": V2})
        assert response.status == 200
        assert await body_of(response) == {"results": []}
    body = await body_of(await client.get(f"{LOOKUP}/X99/TEST_WORKFLOW", headers={"Accept": V1}))
    assert body["results"] == []


async def test_lookup_with_valid_auth(client: TestClient) -> None:
    response = await client.get(f"{LOOKUP}/X26/TEST_WORKFLOW", headers={"Authorization": Tokens(MB1)()})
    assert response.status == 200


async def test_lookup_with_invalid_auth_is_403(client: TestClient) -> None:
    for authorization in ("NHSMESH garbage", Tokens(MB1)(password="wrong")):
        response = await client.get(f"{LOOKUP}/X26/TEST_WORKFLOW", headers={"Authorization": authorization})
        assert response.status == 403


async def test_workflow_search(client: TestClient) -> None:
    for accept in (V1, V2):
        response = await client.get("/messageexchange/workflowsearch/TEST_WORKFLOW2", headers={"Accept": accept})
        assert response.status == 200
        body = await body_of(response)
        assert sorted(r["mailbox_id"] for r in body["results"]) == [MB1, MB2, MB3]
        assert set(body["results"][0]) == {"mailbox_id", "mailbox_name"}


async def test_workflow_search_no_match(client: TestClient) -> None:
    response = await client.get("/messageexchange/workflowsearch/NOPE")
    assert (response.status, await body_of(response)) == (200, {"results": []})


async def test_workflow_search_with_invalid_auth_is_403(client: TestClient) -> None:
    response = await client.get(
        "/messageexchange/workflowsearch/TEST_WORKFLOW", headers={"Authorization": Tokens(MB1, shared_key=b"x")()}
    )
    assert response.status == 403


async def test_lookup_blank_ods_code_is_400(client: TestClient) -> None:
    response = await client.get(f"{LOOKUP}/%20/TEST_WORKFLOW")
    assert response.status == 400
    assert (await body_of(response))["errorDescription"] == "ods code missing"
    response = await client.get(f"{LOOKUP}/X26/%20")
    assert response.status == 400
    assert (await body_of(response))["errorDescription"] == "workflow id missing"
