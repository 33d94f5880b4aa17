"""Browser tests of the web page: Debian's Chromium driven by Playwright against a real `mesh-broker serve`.

Nothing is downloaded: Chromium comes from Debian (`make chromium`), axe-core from npm (`make axe`); a test that
needs either fails with the command that installs it. One broker serves the module, in demo mode with a small
upload limit, and signs people in through the suite's own OpenID Connect provider as well as by password.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.devsupport import oidc_provider
from tests.integration.broker_process import BrokerProcess

ROOT = Path(__file__).resolve().parents[2]
#: Where each page's screenshot goes (committed, shown in the README); MESH_UI_SCREENSHOTS names another folder.
SCREENSHOTS = Path(os.environ.get("MESH_UI_SCREENSHOTS", ROOT / "docs" / "screenshots"))
AXE = ROOT / ".cache" / "axe" / "node_modules" / "axe-core" / "axe.min.js"
CHROMIUM_NAMES = ("chromium", "chromium-browser")
#: The page's upload limit here: small, so that refusing an oversized file takes a moment.
UPLOAD_LIMIT = 1_000_000
OIDC_SUBJECT = "user-7d3f"
OIDC_MAILBOXES = ["X26ABC1", "X26ABC3"]


def chromium_path() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise RuntimeError("Debian's Chromium is not installed: run `make chromium` (apt-get install chromium)")


@pytest.fixture(scope="session")
def axe_source() -> str:
    if not AXE.exists():
        raise RuntimeError(f"axe-core is not installed at {AXE}: run `make axe` (npm install, version pinned)")
    return AXE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Module-scoped, not session-scoped: Playwright's sync API keeps an event loop running in this thread while
    it is open, and every asyncio test after it would then fail to start its own loop."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path())
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def oidc() -> Iterator[oidc_provider.Provider]:
    with oidc_provider.in_thread(OIDC_SUBJECT) as provider:
        yield provider


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, oidc: oidc_provider.Provider) -> Iterator[BrokerProcess]:
    base = tmp_path_factory.mktemp("ui-broker")
    users = base / "users.json"
    users.write_text(json.dumps({OIDC_SUBJECT: OIDC_MAILBOXES}))
    process = BrokerProcess(base / "data")
    process.env.update(
        {
            "MESH_DEMO": "on",
            "MESH_EVENT_LOOP": "asyncio",
            "MESH_UI_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
            "MESH_UI_NETWORK_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT),
            "MESH_UI_LOCKOUT_FAILURES": "3",
            "MESH_UI_LOCKOUT_ADDRESS_FAILURES": "1000",
            "MESH_UI_OIDC_ISSUER": oidc.issuer,
            "MESH_UI_OIDC_CLIENT_ID": oidc.client_id,
            "MESH_UI_OIDC_CLIENT_SECRET": oidc.client_secret,
            "MESH_UI_OIDC_REDIRECT_URL": f"{process.url}/ui/oidc/callback",
            "MESH_UI_OIDC_USERS": str(users),
        }
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
