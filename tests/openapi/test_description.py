"""broker/openapi.yaml is in step with the code: routes and their auth (routes.py), the error table (errors.py),
the mex-* headers and their limits (headers.py) and the download headers (views.py); it is valid OpenAPI 3.1
and served at /openapi.json."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from broker import headers, routes, views
from broker.app import create_app
from broker.errors import ErrorCode
from broker.keys import Auth
from broker.models import Event, Message, MessageMeta, MessageType, Party, Status
from broker.settings import Settings
from tests.conftest import SHARED_KEY
from tests.openapi.description import Operation, document, operations, parameters, resolve, responses

#: Where each operation may come from (the info description explains them).
ORIGINS = {"live", "sandbox", "sandbox-admin", "broker"}
#: What each route's auth policy reads as in OpenAPI's terms.
SECURITY = {Auth.MAILBOX: [{"nhsmesh": []}], Auth.OPTIONAL: [{}, {"nhsmesh": []}], Auth.NONE: []}
_PATTERN = re.compile(r"\{(\w+):[^}]*\}")
#: Table flags for codes no operation answers: sent only as a REPORT's status, kept for parity but never raised,
#: or answered to a connection before any request is read.
ANSWERED_ELSEWHERE = ("reported_only", "not_raised", "before_routing")


def template(path: str) -> str:
    """aiohttp's `{name:regex}` as OpenAPI's `{name}`."""
    return _PATTERN.sub(r"{\1}", path)


def route_table() -> dict[tuple[str, str], routes.Route]:
    """Every Route that routes.py defines, under any name, by (method, path template)."""
    found: dict[tuple[str, str], routes.Route] = {}
    for value in vars(routes).values():
        candidates = value if isinstance(value, tuple) else (value,)
        for route in candidates:
            if isinstance(route, routes.Route):
                found[(route.method, template(route.path))] = route
    return found


def described() -> dict[tuple[str, str], Operation]:
    return {(op.method, op.path): op for op in operations()}


def every_route_settings(tmp_path: Path) -> Settings:
    """A node with every optional route switched on: sandbox admin, and /metrics on the MESH port."""
    return Settings(
        data_dir=tmp_path / "data", shared_key=SHARED_KEY, demo=True, sandbox_admin=True, metrics_on_mesh_port=True
    )


def test_it_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"].startswith("3.1.")
    OpenAPIV31SpecValidator(doc).validate()


def assert_same(code: set[tuple[str, str]] | set[str], description: set[tuple[str, str]] | set[str]) -> None:
    undescribed, stale = sorted(code - description), sorted(description - code)  # type: ignore[operator]
    assert not undescribed and not stale, f"not in broker/openapi.yaml: {undescribed}; only there: {stale}"


def test_every_route_in_routes_py_is_described_and_nothing_else() -> None:
    assert_same(set(route_table()), set(described()))


def test_the_app_serves_exactly_the_described_routes(tmp_path: Path) -> None:
    app = create_app(every_route_settings(tmp_path))
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        # The web page's sub-application is for people, not MESH clients (the description says so).
        if route.resource and not route.resource.canonical.startswith(routes.UI)
    }
    assert_same(served, set(described()))


def test_each_operation_has_its_routes_auth() -> None:
    doc = document()
    table = route_table()
    for key, operation in described().items():
        security = operation.body.get("security", doc["security"])
        assert security == SECURITY[table[key].auth], key


def test_each_operation_says_where_it_comes_from_and_admin_routes_say_so() -> None:
    admin = {(route.method, template(route.path)) for route in routes.SANDBOX_ADMIN}
    for key, operation in described().items():
        origin = operation.body.get("x-mesh-origin")
        assert origin in ORIGINS, key
        is_admin = key in admin
        assert (origin == "sandbox-admin") == is_admin, key
        assert ("sandbox-admin" in operation.body["tags"]) == is_admin, key
        if is_admin:
            assert operation.body["x-mesh-enabled-by"] == "MESH_SANDBOX_ADMIN=on", key
    assert "x-mesh-enabled-by" in described()[("GET", "/metrics")].body


def test_the_error_table_is_errors_py() -> None:
    table = document()["components"]["x-mesh-error-codes"]
    assert_same({code.name for code in ErrorCode}, set(table))
    for code in ErrorCode:
        expected = {k: v for k, v in dataclasses.asdict(code.spec).items() if v is not None}
        entry = {k: v for k, v in table[code.name].items() if k not in ANSWERED_ELSEWHERE}
        assert entry == expected, code.name


def test_each_response_names_real_errors_of_its_own_status() -> None:
    table = document()["components"]["x-mesh-error-codes"]
    for operation, status, response in responses():
        for name in response.get("x-mesh-errors", []):
            assert name in table, (operation.path, status, name)
            assert table[name]["status"] == status, (operation.method, operation.path, status, name)
            assert not any(table[name].get(flag) for flag in ANSWERED_ELSEWHERE), name


def test_every_error_code_is_answered_by_some_operation_or_said_not_to_be() -> None:
    table = document()["components"]["x-mesh-error-codes"]
    answered = {name for _op, _status, response in responses() for name in response.get("x-mesh-errors", [])}
    for code in ErrorCode:
        entry = table[code.name]
        said_not = any(entry.get(flag) for flag in ANSWERED_ELSEWHERE)
        assert (code.name in answered) != said_not, code.name


def test_a_response_whose_errors_say_when_to_retry_describes_retry_after() -> None:
    for operation, status, response in responses():
        retried = [name for name in response.get("x-mesh-errors", []) if ErrorCode[name].spec.retry_after]
        if retried:
            assert "Retry-After" in response.get("headers", {}), (operation.method, operation.path, status, retried)


def test_every_error_response_has_the_mesh_error_shapes() -> None:
    doc = document()
    for operation, status, response in responses():
        if not response.get("x-mesh-errors"):
            continue
        content = response["content"]
        v1 = resolve(doc, content["application/json"]["schema"])
        v1_shapes = [s["$ref"] for s in v1.get("anyOf", [])] or [content["application/json"]["schema"]["$ref"]]
        assert "#/components/schemas/V1Error" in v1_shapes, (operation.path, status)
        if response["x-mesh-errors"] != ["BAD_ACCEPT"]:  # a bad Accept header is always answered in v1
            v2 = content["application/vnd.mesh.v2+json"]["schema"]
            assert v2 == {"$ref": "#/components/schemas/V2Error"}, (operation.path, status)


def test_every_mex_request_header_in_headers_py_is_described() -> None:
    doc = document()
    described_headers = {
        p["name"].lower() for op in operations() for p in parameters(doc, op.path, op) if p["in"] == "header"
    }
    constants = {value for name, value in vars(headers).items() if name.isupper() and isinstance(value, str)}
    mex = {value.lower() for value in constants if value.lower().startswith("mex-")}
    assert mex  # the constants are still there to be found
    assert mex <= described_headers, sorted(mex - described_headers)


def test_send_header_limits_are_headers_py() -> None:
    doc = document()
    send = described()[("POST", "/messageexchange/{mailbox_id}/outbox")]
    limits = {p["name"]: p["schema"].get("maxLength") for p in parameters(doc, send.path, send) if p["in"] == "header"}
    for name, limit in headers.MAX_LENGTHS.items():
        assert limits[name] == limit, name
    assert {p["name"] for p in parameters(doc, send.path, send) if p.get("required") and p["in"] == "header"} == {
        headers.TO,
        headers.WORKFLOW_ID,
    }


def test_handshake_requires_the_headers_the_handler_requires() -> None:
    doc = document()
    for method in ("GET", "POST"):
        handshake = described()[(method, "/messageexchange/{mailbox_id}")]
        required = {p["name"] for p in parameters(doc, handshake.path, handshake) if p.get("required")}
        assert required - {"mailbox_id"} == set(headers.HANDSHAKE_REQUIRED), method


def _download_header_names() -> set[str]:
    """Every header views.message_headers can write: a DATA message with every field set, and a REPORT."""
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    party = Party("X26ABC1", "TESTMB1", "X26", "X26", "Org", "England")
    data = Message(
        message_id="20260102030405000000_ABCDEF",
        message_type=MessageType.DATA,
        sender=party,
        recipient=dataclasses.replace(party, mailbox_id="X26ABC2"),
        workflow_id="TEST_WORKFLOW",
        total_chunks=2,
        content_encoding="gzip",
        meta=MessageMeta("subject", "local", "partner", "file.dat", "text/plain", "md5:1", True, True),
        status=Status.ACCEPTED,
        created_at=at,
        status_at=at,
        events=(Event(Status.ACCEPTED, at, "TRANSFER", "00", "Transferred to recipient mailbox"),),
    )
    report = dataclasses.replace(
        data,
        message_type=MessageType.REPORT,
        linked_message_id="20260101000000000000_FEDCBA",
        events=(Event(Status.ACCEPTED, at, "SEND", "14", "Message not collected", "20260101000000000000_FEDCBA"),),
    )
    names: set[str] = set()
    for message in (data, report):
        names |= set(views.message_headers(message, 1, gzip_response=True, content_type="text/plain"))
    return names


def test_download_and_head_headers_are_those_views_py_writes() -> None:
    doc = document()
    written = {name.lower() for name in _download_header_names()} - {"content-type"}
    download = described()[("GET", "/messageexchange/{mailbox_id}/inbox/{message_id}")]
    for status in ("200", "206"):
        documented = {name.lower() for name in resolve(doc, download.body["responses"][status])["headers"]}
        # The handler adds the digest of a chunk sent as stored (our extension) to what views.py writes.
        assert_same(written | {"content-digest"}, documented)
    head = described()[("HEAD", "/messageexchange/{mailbox_id}/inbox/{message_id}")]
    documented = {name.lower() for name in head.body["responses"]["200"]["headers"]}
    assert_same(written - {"content-encoding"}, documented)  # HEAD never gzips


async def test_it_is_served_at_openapi_json_without_authentication(aiohttp_client, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(every_route_settings(tmp_path)))
    for _ in range(2):  # rendered once, then served as it was
        response = await client.get("/openapi.json")
        assert response.status == 200
        assert response.content_type == "application/json"
        assert orjson.loads(await response.read()) == document()


@pytest.mark.parametrize("key", [("GET", "/openapi.json"), ("GET", "/metrics")])
def test_the_brokers_own_routes_are_marked_as_its_own(key: tuple[str, str]) -> None:
    assert described()[key].body["x-mesh-origin"] == "broker"
