"""GPPROVIDER_<NHS number>_<date of birth>_<surname> sends end to end: routed to the practice's one mailbox,
or accepted and answered with an EPL REPORT in the sender's inbox; 417 off flagged workflows; 503 without PDS."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from broker.app import create_app
from broker.services.directory import DEMO_PATIENTS
from broker.settings import Settings
from tests.api.helpers import MB1, body_of, download, inbox_ids, send_chunk, start_chunked, track, v1_error, v2_error
from tests.conftest import BACKENDS, production_settings
from tests.pds_server import FakePds
from tests.support import V1, V2, Mesh

AiohttpClient = Callable[..., Awaitable[TestClient]]
WORKFLOW = "GPCONNECT_SEND_DOCUMENT"
PRACTICE = "X26GP01"
#: Demo patients (services/directory.py): Smith and O'Brien-Núñez at A99901 (one mailbox), Jones at A99902
#: (two mailboxes), Taylor at A99903 (none).
SMITH = "GPPROVIDER_9990000018_19670126_Smith"
ADDRESS_FORM = "GPPROVIDER_<NHS number>_<date of birth>_<surname>"
ROUTE_HEADERS = {"mex-LocalID": "doc-42", "mex-Subject": "Discharge summary", "mex-FileName": "summary.xml"}


def gp(mesh: Mesh, name: str) -> Mesh:
    return Mesh(mesh.client, name, accept=mesh.accept)


async def test_routed_to_the_practice_mailbox(mb1: Mesh) -> None:
    practice = gp(mb1, PRACTICE)
    message_id = await mb1.send_ok(SMITH, b"<document/>", workflow_id=WORKFLOW, extra=ROUTE_HEADERS)

    assert await inbox_ids(practice) == [message_id]
    response = await download(practice, message_id)
    assert response.status == 200
    assert await response.read() == b"<document/>"
    assert response.headers["mex-To"] == PRACTICE
    assert response.headers["mex-From"] == MB1
    assert response.headers["mex-WorkflowID"] == WORKFLOW

    tracked = await body_of(await track(mb1, message_id))
    assert (tracked["status"], tracked["recipient"], tracked["recipient_ods_code"]) == ("accepted", PRACTICE, "A99901")
    assert "9990000018" not in str(tracked) and "Smith" not in str(tracked)
    assert await inbox_ids(mb1) == []


@pytest.mark.parametrize(
    "address",
    [
        "GPPROVIDER_9990000026_19850714_OBrien-Nunez",  # accents, apostrophe and case ignored
        "GPPROVIDER_9990000026_14071985_o brien núñez",  # DDMMYYYY, unambiguous
        "gpprovider_9990000018_19670126_SMITH",
    ],
)
async def test_address_forms(mb1: Mesh, address: str) -> None:
    message_id = await mb1.send_ok(address, b"x", workflow_id="TOC_FHIR_IP_DISCH")
    assert await inbox_ids(gp(mb1, PRACTICE)) == [message_id]


@pytest.mark.parametrize(
    ("address", "code", "description"),
    [
        ("GPPROVIDER_9990000034_19900302_Jones", "EPL-150", "Too many mailbox matches"),
        ("GPPROVIDER_9990000042_20011130_Taylor", "EPL-151", "No mailbox matched"),
        ("GPPROVIDER_9990000019_19670126_Smith", "EPL-152", "Invalid NHS number"),
        ("GPPROVIDER_999000001_19670126_Smith", "EPL-152", "Invalid NHS number"),
        ("GPPROVIDER_9990000050_19670126_Smith", "EPL-153", "NHS number not found"),
        ("GPPROVIDER_9990000018_19670127_Smith", "EPL-154", "Supplied NHS number does not match the demographics"),
        ("GPPROVIDER_9990000018_19670126_Smyth", "EPL-154", "Supplied NHS number does not match the demographics"),
        ("GPPROVIDER_9990000018_1967-01-26_Smith", "EPL-154", "Date of birth is not a date in YYYYMMDD form"),
        (
            "GPPROVIDER_9990000018_19670126",
            "EPL-154",
            "Address must be GPPROVIDER_<NHS number>_<date of birth>_<surname>",
        ),
    ],
)
async def test_failed_trace_is_reported_to_the_sender(mb1: Mesh, address: str, code: str, description: str) -> None:
    message_id = await mb1.send_ok(address, b"<document/>", workflow_id=WORKFLOW, extra=ROUTE_HEADERS)

    (report_id,) = await inbox_ids(mb1)
    response = await download(mb1, report_id)
    assert response.status == 200
    assert await response.read() == b""
    headers = response.headers
    assert (headers["mex-MessageType"], headers["mex-LinkedMsgID"]) == ("REPORT", message_id)
    assert (headers["mex-StatusCode"], headers["mex-StatusEvent"], headers["mex-StatusSuccess"]) == (
        code,
        "SEND",
        "ERROR",
    )
    assert headers["mex-StatusDescription"] == description
    assert (headers["mex-WorkflowID"], headers["mex-LocalID"], headers["mex-Subject"]) == (
        WORKFLOW,
        "doc-42",
        "Discharge summary",
    )
    assert headers["mex-To"] == MB1

    tracked = await body_of(await track(mb1, message_id))
    assert (tracked["status"], tracked["status_success"], tracked["recipient"]) == ("error", False, "")
    assert "9990000" not in str(tracked)
    v1 = await body_of(await track(Mesh(mb1.client, MB1, accept=V1), message_id))
    assert (v1["statusSuccess"], v1["failureDiagnostic"]) == ("ERROR", description)
    for practice in ("X26GP01", "X26GP02A", "X26GP02B"):
        assert await inbox_ids(gp(mb1, practice)) == []


async def test_unflagged_workflow_is_417(mb1: Mesh, mb1_v1: Mesh) -> None:
    response = await mb1.send(SMITH, b"x", workflow_id="TEST_WORKFLOW")
    assert response.status == 417
    event, code, description = v2_error(await body_of(response))
    assert (event, code) == ("SEND", "12")
    assert "GPPROVIDER addressing is not enabled for this workflow" in description
    response = await mb1_v1.send(SMITH, b"x", workflow_id="NEVER_REGISTERED")
    assert response.status == 417
    assert v1_error(await body_of(response))[1] == "12"
    assert await inbox_ids(mb1) == []


async def test_restricted_flagged_workflow_checks_the_sender(app: web.Application, mb1: Mesh) -> None:
    from broker.keys import DIRECTORY
    from broker.models import Workflow

    await app[DIRECTORY].add_workflow(Workflow("GP_CLOSED", True, ("X26ABC2",), (PRACTICE,), patient_addressing=True))
    response = await mb1.send(SMITH, b"x", workflow_id="GP_CLOSED")
    assert response.status == 417
    assert v2_error(await body_of(response))[1] == "16"
    message_id = await gp(mb1, "X26ABC2").send_ok(SMITH, b"x", workflow_id="GP_CLOSED")
    assert await inbox_ids(gp(mb1, PRACTICE)) == [message_id]


async def test_empty_body_on_a_failed_trace_is_417_without_report(mb1: Mesh) -> None:
    response = await mb1.send("GPPROVIDER_9990000050_19670126_Smith", b"", workflow_id=WORKFLOW)
    assert response.status == 417
    assert v2_error(await body_of(response))[1] == "02"
    assert await inbox_ids(mb1) == []


async def test_chunked_send_routes_at_chunk_one(mb1: Mesh) -> None:
    message_id = await start_chunked(mb1, SMITH, b"part one|", 2, extra={"mex-WorkflowID": WORKFLOW})
    assert (await send_chunk(mb1, message_id, 2, 2, b"part two")).status == 202
    practice = gp(mb1, PRACTICE)
    assert await inbox_ids(practice) == [message_id]
    assert await (await download(practice, message_id, 2)).read() == b"part two"


async def test_chunked_send_with_failed_trace_finishes_its_upload(mb1: Mesh) -> None:
    address = "GPPROVIDER_9990000042_20011130_Taylor"
    message_id = await start_chunked(mb1, address, b"part one|", 3, extra={"mex-WorkflowID": WORKFLOW})
    assert (await send_chunk(mb1, message_id, 2, 3, b"part two")).status == 202
    assert (await send_chunk(mb1, message_id, 3, 3, b"part three")).status == 202
    assert (await send_chunk(mb1, message_id, 4, 4, b"too far")).status == 406
    (report_id,) = await inbox_ids(mb1)
    assert (await download(mb1, report_id)).headers["mex-StatusCode"] == "EPL-151"
    assert (await body_of(await track(mb1, message_id)))["status"] == "error"


# Demographics from PDS ------------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=BACKENDS)
async def pds_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    if request.param == "postgres+s3":
        settings = await production_settings(settings, request)
    return settings


def with_pds(settings: Settings, url: str) -> Settings:
    return settings.with_(demographics="pds", pds_url=url, pds_timeout_seconds=0.5, pds_retries=1)


async def test_pds_down_is_503_and_stores_nothing(aiohttp_client: AiohttpClient, pds_settings: Settings) -> None:
    app = create_app(with_pds(pds_settings, f"http://127.0.0.1:{closed_port()}/FHIR/R4"))
    sender = Mesh(await aiohttp_client(app), MB1, accept=V2)
    response = await sender.send(SMITH, b"x", workflow_id=WORKFLOW, extra={"mex-LocalID": "kept-nowhere"})
    assert response.status == 503
    assert v2_error(await body_of(response)) == (
        "SEND",
        "DemographicsUnavailable",
        "The demographics service is unavailable; try again later",
    )
    tracked = await sender.client.get(f"{sender.base}/outbox/tracking/kept-nowhere", headers=sender.headers())
    assert tracked.status == 404
    assert await inbox_ids(sender) == []
    assert await inbox_ids(Mesh(sender.client, PRACTICE)) == []


async def test_routed_with_pds(aiohttp_client: AiohttpClient, pds_settings: Settings) -> None:
    fake = FakePds({p.nhs_number: p for p in DEMO_PATIENTS})
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    try:
        app = create_app(with_pds(pds_settings, str(server.make_url("/FHIR/R4"))))
        sender = Mesh(await aiohttp_client(app), MB1, accept=V2)
        message_id = await sender.send_ok(SMITH, b"x", workflow_id=WORKFLOW)
        assert await inbox_ids(Mesh(sender.client, PRACTICE)) == [message_id]
        await sender.send_ok("GPPROVIDER_9990000050_19670126_Smith", b"x", workflow_id=WORKFLOW)
        (report_id,) = await inbox_ids(sender)
        assert (await download(sender, report_id)).headers["mex-StatusCode"] == "EPL-153"
        assert [r.path for r in fake.requests] == ["/FHIR/R4/Patient/9990000018", "/FHIR/R4/Patient/9990000050"]
    finally:
        await server.close()
