"""Request bodies are JSON whatever type they declare, as the peers' servers take them.

``curl -d '{...}'`` (the README's and the spec's own examples) sends
``application/x-www-form-urlencoded``; a client that sets no type sends none; a
browser's ``fetch`` with a string body sends ``text/plain``. FastAPI parses a body as
JSON only when its type says JSON, so all three were refused with "request body must
be a JSON object". ``JsonBodies`` wraps the whole app (every surface, mounted ones
included) and, for a request with a body method whose type is absent, a form or plain
text, says ``application/json`` instead. No route of corral takes a form, and the
routes that take raw bytes (file writes) read the body as it comes, whatever its type.
A body that is not JSON is then refused as such (400 "request body is not valid JSON").

``JsonBody`` is the base of every surface's request bodies: strict about the types of
the fields it knows, blind to the ones it does not, and refusing text that is not text.
JSON may spell a lone UTF-16 surrogate (``"\\ud800"``), which no UTF-8 encoder takes: a
sandbox created with one in its metadata was stored, then every answer naming it failed
(a 500, the org's listing with it). Such a string is a 400 naming its field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator
from starlette.types import ASGIApp, Receive, Scope, Send

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
TAKEN_AS_JSON = frozenset({b"", b"application/x-www-form-urlencoded", b"text/plain"})
JSON = b"application/json"


def as_json(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]] | None:
    """``headers`` with the content type made JSON, or None when they stay as they are."""
    found = None
    for index, (name, value) in enumerate(headers):
        if name.lower() == b"content-type":
            if found is not None:
                return None  # two types: leave the request to be refused as it is
            found = index
    if found is None:
        return [*headers, (b"content-type", JSON)]
    media = headers[found][1].split(b";", 1)[0].strip().lower()
    if media not in TAKEN_AS_JSON:
        return None
    changed = list(headers)
    changed[found] = (b"content-type", JSON)
    return changed


class JsonBodies:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in BODY_METHODS:
            headers = as_json(scope["headers"])
            if headers is not None:
                scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


class JsonBody(BaseModel):
    """Base of request bodies: see the module docstring."""

    model_config = ConfigDict(extra="ignore", strict=True)

    @field_validator("*", mode="after")
    @classmethod
    def _text_is_unicode(cls, value: Any, info: ValidationInfo) -> Any:
        if not encodable(value):
            raise ValueError("must be text without lone surrogates (\\ud800-\\udfff)")
        return value


def encodable(value: object) -> bool:
    """Whether every string in ``value`` (and in its lists and dicts, keys included)
    encodes as UTF-8."""
    if isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(encodable(k) and encodable(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(encodable(item) for item in value)
    return True
