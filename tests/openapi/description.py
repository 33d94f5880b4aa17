"""Walking the packaged OpenAPI description: its operations, and the responses they name errors in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

from broker import openapi

METHODS = ("get", "put", "post", "delete", "head", "options", "patch", "trace")


@cache
def document() -> dict[str, Any]:
    """The packaged description, read once for the test session (callers must not change it)."""
    return openapi.document()


@dataclass(frozen=True)
class Operation:
    method: str  # upper case, as aiohttp's routes have it
    path: str
    body: dict[str, Any]


def operations(doc: dict[str, Any] | None = None) -> Iterator[Operation]:
    doc = document() if doc is None else doc
    for path, item in doc["paths"].items():
        for method in METHODS:
            if method in item:
                yield Operation(method.upper(), path, item[method])


def resolve(doc: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local $ref (`#/components/...`) to what it names."""
    while "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def parameters(doc: dict[str, Any], path: str, operation: Operation) -> list[dict[str, Any]]:
    """The operation's parameters and its path item's, references resolved."""
    shared = doc["paths"][path].get("parameters", [])
    return [resolve(doc, p) for p in [*shared, *operation.body.get("parameters", [])]]


def responses(doc: dict[str, Any] | None = None) -> Iterator[tuple[Operation, int, dict[str, Any]]]:
    """(operation, status, response) for every response of every operation, references resolved."""
    doc = document() if doc is None else doc
    for operation in operations(doc):
        for status, response in operation.body["responses"].items():
            yield operation, int(status), resolve(doc, response)
