"""API-tier fixtures: a demo broker (X26ABC1..3, sandbox admin on) behind aiohttp's test client."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from broker.app import create_app
from broker.settings import Settings
from tests.api.helpers import MB1, MB2, MB3
from tests.conftest import BACKENDS, production_settings
from tests.support import V1, V2, Mesh

AiohttpClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture(params=BACKENDS)
async def app(request: pytest.FixtureRequest, settings: Settings) -> web.Application:
    if request.param == "postgres+s3":
        settings = await production_settings(settings, request)
    return create_app(settings)


@pytest.fixture
async def client(aiohttp_client: AiohttpClient, app: web.Application) -> TestClient:
    return await aiohttp_client(app)


@pytest.fixture
def mb1(client: TestClient) -> Mesh:
    """X26ABC1 speaking v2 (the usual sender)."""
    return Mesh(client, MB1, accept=V2)


@pytest.fixture
def mb2(client: TestClient) -> Mesh:
    """X26ABC2 speaking v2 (the usual recipient)."""
    return Mesh(client, MB2, accept=V2)


@pytest.fixture
def mb3(client: TestClient) -> Mesh:
    """X26ABC3 speaking v2 (a stranger to most messages)."""
    return Mesh(client, MB3, accept=V2)


@pytest.fixture
def mb1_v1(client: TestClient) -> Mesh:
    return Mesh(client, MB1, accept=V1)


@pytest.fixture
def mb2_v1(client: TestClient) -> Mesh:
    return Mesh(client, MB2, accept=V1)
