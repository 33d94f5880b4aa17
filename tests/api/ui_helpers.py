"""A browser stand-in for the web page over aiohttp's test client: keeps the page's cookies (all Secure, which the
client's own jar will not send over plain HTTP), follows nothing by itself, reads forms' CSRF tokens."""

from __future__ import annotations

import html
import re
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class WebUser:
    def __init__(self, client: TestClient):
        self.client = client
        self.cookies: dict[str, str] = {}

    async def request(self, method: str, path: str, **kwargs: Any) -> ClientResponse:
        headers = dict(kwargs.pop("headers", {}))
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        url = path if path.startswith("http") else self.client.make_url(path)
        response = await self.client.session.request(method, url, headers=headers, allow_redirects=False, **kwargs)
        await response.read()
        for name, morsel in response.cookies.items():
            if morsel.value and morsel["max-age"] != "0":
                self.cookies[name] = morsel.value
            else:
                self.cookies.pop(name, None)
        return response

    async def get(self, path: str, **kwargs: Any) -> ClientResponse:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, data: Any = None, **kwargs: Any) -> ClientResponse:
        return await self.request("POST", path, data=data, **kwargs)

    async def page(self, path: str) -> tuple[int, str]:
        response = await self.get(path)
        return response.status, await response.text()

    async def csrf(self, path: str) -> str:
        status, text = await self.page(path)
        assert status == 200, (path, status, text[:500])
        found = CSRF.search(text)
        assert found is not None, text[:500]
        return found.group(1)

    async def sign_in(self, mailbox_id: str, password: str = "password") -> ClientResponse:
        token = await self.csrf("/ui/sign-in")
        return await self.post("/ui/sign-in", {"csrf_token": token, "mailbox_id": mailbox_id, "password": password})


def error_summary(text: str) -> list[str]:
    """The error summary's messages, as a person reads them."""
    found = re.search(r'<ul class="error-summary-list">(.*?)</ul>', text, re.S)
    if found is None:
        return []
    items = re.findall(r"<li>(.*?)</li>", found.group(1), re.S)
    return [html.unescape(re.sub(r"<[^>]+>", "", item)).strip() for item in items]
