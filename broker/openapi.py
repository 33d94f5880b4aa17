"""The API's OpenAPI 3.1 description (broker/openapi.yaml, shipped in the package), served as JSON."""

from __future__ import annotations

import asyncio
from importlib import resources
from typing import Any

import orjson
import yaml

RESOURCE = "openapi.yaml"
#: libyaml's loader where PyYAML was built with it: a sixth of the pure-Python loader's time on this document.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def document() -> dict[str, Any]:
    """The description as plain data, YAML anchors and merge keys expanded."""
    text = resources.files("broker").joinpath(RESOURCE).read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.load(text, Loader=_LOADER)
    return loaded


class Description:
    """The description as JSON bytes, rendered on first use (tens of milliseconds, off the event loop) and kept:
    most nodes are never asked for it, and it cannot change while the process runs."""

    def __init__(self) -> None:
        self._json: bytes | None = None

    async def json(self) -> bytes:
        if self._json is None:
            self._json = await asyncio.to_thread(lambda: orjson.dumps(document()))
        return self._json
