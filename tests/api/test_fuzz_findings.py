"""What schemathesis found (tests/openapi/test_fuzz.py), one focused test each, so a regression names its cause."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from tests.api.helpers import MB1, body_of, download, head, inbox_ids
from tests.support import Mesh

REPORT = {"mailbox_id": MB1, "code": "14", "description": "Not collected", "workflow_id": "TEST_WORKFLOW"}


@pytest.mark.parametrize("field", ["description", "subject", "workflow_id", "local_id", "code", "linked_message_id"])
@pytest.mark.parametrize("control", ["\n", "\r", "\x00", "\t", "\x7f"])
async def test_an_injected_report_with_a_control_character_is_refused(
    client: TestClient, mb1: Mesh, field: str, control: str
) -> None:
    """Found: a REPORT injected with a newline in a field that becomes one of its mex-* headers was stored, and
    every download of it was a 500 (aiohttp refuses to write the header). Now the injection is a 400, refusing
    what a send refuses in a mex-* header."""
    response = await client.post("/messageexchange/admin/report", json={**REPORT, field: f"a{control}b"})
    assert response.status == 400, await response.text()
    assert (await body_of(response))["detail"][0]["loc"] == ["body", field]
    assert await inbox_ids(mb1) == []


async def test_an_event_with_a_control_character_is_refused(client: TestClient, mb1: Mesh) -> None:
    """Found with the above: an event's code, event and description become a REPORT's mex-Status* headers."""
    response = await client.post("/messageexchange/admin/report", json=REPORT)
    report_id = (await body_of(response))["message_id"]
    for field in ("description", "code", "event", "linked_message_id"):
        response = await client.post(f"/admin/message/{report_id}/event", json={"status": "accepted", field: "a\r\nb"})
        assert response.status == 400, field
        assert (await body_of(response))["detail"][0]["loc"] == ["body", field]
    assert (await download(mb1, report_id)).status == 200
    assert (await head(mb1, report_id)).status == 200


async def test_a_report_in_any_script_still_downloads(client: TestClient, mb1: Mesh) -> None:
    response = await client.post("/messageexchange/admin/report", json={**REPORT, "description": "ünïcödé ✓"})
    report_id = (await body_of(response))["message_id"]
    downloaded = await download(mb1, report_id)
    assert downloaded.status == 200
    assert downloaded.headers["mex-StatusDescription"] == "ünïcödé ✓"
