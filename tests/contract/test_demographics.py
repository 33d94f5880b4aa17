"""The Demographics contract on the local directory and on PDS FHIR (a local PDS-shaped server), the store
methods behind the local directory, and what only the PDS client promises: retries, timeouts, cache."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from broker.clock import ManualClock
from broker.demographics.local import LocalDemographics
from broker.demographics.pds import PdsDemographics
from broker.demographics.protocol import Demographics, DemographicsUnavailable
from broker.models import Patient
from broker.store.protocol import MetadataStore
from tests.contract.factories import workflow
from tests.pds_server import FakePds

SMITH = Patient("9990000018", date(1967, 1, 26), "Smith", "A99901")
NUNEZ = Patient("9990000026", date(1985, 7, 14), "O'Brien-Núñez", "")
UNKNOWN = "9990000034"


# The store methods of the local directory ---------------------------------------------------------------------


async def test_put_and_get_patients(store: MetadataStore) -> None:
    assert await store.get_patient(SMITH.nhs_number) is None
    await store.put_patients([SMITH, NUNEZ])
    assert await store.get_patient(SMITH.nhs_number) == SMITH
    assert await store.get_patient(NUNEZ.nhs_number) == NUNEZ
    assert await store.get_patient(UNKNOWN) is None


async def test_put_patients_replaces_by_nhs_number(store: MetadataStore) -> None:
    await store.put_patients([SMITH])
    moved = Patient(SMITH.nhs_number, None, "Smith-Jones", "B22222")
    await store.put_patients([moved])
    assert await store.get_patient(SMITH.nhs_number) == moved
    await store.put_patients([])
    assert await store.get_patient(SMITH.nhs_number) == moved


async def test_workflow_patient_addressing_flag(store: MetadataStore) -> None:
    await store.put_workflow(workflow("TOC_FHIR_IP_DISCH", receivers=("GP1",), patient_addressing=True))
    await store.put_workflow(workflow("PLAIN"))
    found = await store.get_workflow("TOC_FHIR_IP_DISCH")
    assert found is not None and found.patient_addressing and found.receivers == ("GP1",)
    plain = await store.get_workflow("PLAIN")
    assert plain is not None and not plain.patient_addressing
    assert [w.patient_addressing for w in await store.list_workflows()] == [False, True]
    await store.put_workflow(workflow("TOC_FHIR_IP_DISCH"))
    cleared = await store.get_workflow("TOC_FHIR_IP_DISCH")
    assert cleared is not None and not cleared.patient_addressing


# The Demographics contract on both sources ----------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _local(store: MetadataStore, patients: list[Patient]) -> AsyncIterator[Demographics]:
    local = LocalDemographics(store)
    await local.load(patients)
    yield local


@contextlib.asynccontextmanager
async def _pds(store: MetadataStore, patients: list[Patient]) -> AsyncIterator[Demographics]:
    async with pds_client(FakePds({p.nhs_number: p for p in patients})) as (client, _pds):
        yield client


SOURCES: dict[str, Callable[[MetadataStore, list[Patient]], contextlib.AbstractAsyncContextManager[Demographics]]]
SOURCES = {"local": _local, "pds": _pds}


@pytest.fixture(params=sorted(SOURCES))
async def demographics(request: Any, store: MetadataStore) -> AsyncIterator[Demographics]:
    async with SOURCES[request.param](store, [SMITH, NUNEZ]) as source:
        yield source


async def test_lookup_found(demographics: Demographics) -> None:
    assert await demographics.lookup(SMITH.nhs_number) == SMITH
    assert await demographics.lookup(NUNEZ.nhs_number) == NUNEZ


async def test_lookup_not_found(demographics: Demographics) -> None:
    assert await demographics.lookup(UNKNOWN) is None


# What only the PDS client promises ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def pds_client(fake: FakePds, **options: Any) -> AsyncIterator[tuple[PdsDemographics, FakePds]]:
    server = TestServer(fake.app(), host="127.0.0.1")
    await server.start_server()
    settings: dict[str, Any] = {"timeout_seconds": 0.3, "retries": 2, "cache_seconds": 60, "backoff_seconds": 0.01}
    settings.update(options)
    client = PdsDemographics(str(server.make_url("/FHIR/R4/")), **settings)
    await client.open()
    try:
        yield client, fake
    finally:
        await client.close()
        await server.close()


async def test_pds_sends_request_id_and_credentials() -> None:
    async with pds_client(FakePds({SMITH.nhs_number: SMITH}), api_key="k3y", bearer_token="t0k") as (client, fake):
        assert await client.lookup(SMITH.nhs_number) == SMITH
    (request,) = fake.requests
    assert request.path == f"/FHIR/R4/Patient/{SMITH.nhs_number}"
    assert request.headers["apikey"] == "k3y"
    assert request.headers["Authorization"] == "Bearer t0k"
    assert len(request.headers["X-Request-ID"]) == 36


async def test_pds_retries_server_errors_then_answers() -> None:
    fake = FakePds({SMITH.nhs_number: SMITH}, faults=deque([503, 500]))
    async with pds_client(fake) as (client, _):
        assert await client.lookup(SMITH.nhs_number) == SMITH
    assert len(fake.requests) == 3
    assert len({r.headers["X-Request-ID"] for r in fake.requests}) == 3


async def test_pds_timeout_is_retried_then_unavailable() -> None:
    fake = FakePds({SMITH.nhs_number: SMITH}, faults=deque(["slow"] * 3), slow_seconds=1.0)
    async with pds_client(fake, timeout_seconds=0.1, retries=2) as (client, _):
        with pytest.raises(DemographicsUnavailable, match="after 3 attempts"):
            await client.lookup(SMITH.nhs_number)
    assert len(fake.requests) == 3


async def test_pds_unreachable_is_unavailable() -> None:
    server = TestServer(FakePds().app(), host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/FHIR/R4"))
    await server.close()
    client = PdsDemographics(url, timeout_seconds=0.3, retries=1, cache_seconds=60, backoff_seconds=0.01)
    await client.open()
    try:
        with pytest.raises(DemographicsUnavailable, match="after 2 attempts"):
            await client.lookup(SMITH.nhs_number)
    finally:
        await client.close()


@pytest.mark.parametrize("fault", ["garbage", 200])
async def test_pds_malformed_answer_is_unavailable(fault: str | int) -> None:
    # 200 from the fault list is an OperationOutcome body: JSON, but not a Patient.
    async with pds_client(FakePds({SMITH.nhs_number: SMITH}, faults=deque([fault]))) as (client, fake):
        with pytest.raises(DemographicsUnavailable, match="malformed"):
            await client.lookup(SMITH.nhs_number)
    assert len(fake.requests) == 1


async def test_pds_client_errors_are_not_retried() -> None:
    async with pds_client(FakePds({SMITH.nhs_number: SMITH}, faults=deque([401]))) as (client, fake):
        with pytest.raises(DemographicsUnavailable, match="HTTP 401"):
            await client.lookup(SMITH.nhs_number)
    assert len(fake.requests) == 1


async def test_pds_cache_answers_repeats_until_it_expires() -> None:
    clock = ManualClock()
    async with pds_client(FakePds({SMITH.nhs_number: SMITH}), cache_seconds=30, clock=clock) as (client, fake):
        assert await client.lookup(SMITH.nhs_number) == SMITH
        assert await client.lookup(UNKNOWN) is None
        assert await client.lookup(SMITH.nhs_number) == SMITH
        assert await client.lookup(UNKNOWN) is None
        assert len(fake.requests) == 2
        clock.advance(timedelta(seconds=31))
        assert await client.lookup(SMITH.nhs_number) == SMITH
        assert len(fake.requests) == 3


async def test_pds_cache_off() -> None:
    async with pds_client(FakePds({SMITH.nhs_number: SMITH}), cache_seconds=0) as (client, fake):
        await client.lookup(SMITH.nhs_number)
        await client.lookup(SMITH.nhs_number)
    assert len(fake.requests) == 2
