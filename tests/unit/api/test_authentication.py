"""Every surface's principal dependency (corral/api/authentication.py) on the real app:
the order of its steps, what each charges, and each surface's own 401 texts kept."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI
from starlette.requests import HTTPConnection

from corral.api import authentication
from corral.api.credentials import Credentials
from corral.auth.principal import Principal
from corral.auth.ratelimit import COPASS
from corral.core import Core
from corral.errors import Forbidden, InvalidInput, LimitExceeded, Unauthenticated
from tests.support.app import KEY
from tests.unit.api.harness import serving

LIMIT = 3  # requests a minute on the copass surface, for the charging tests


@dataclass
class World:
    app: FastAPI
    client: httpx.AsyncClient  # sends no credential of its own
    user_token: str  # a user JWT of the owner key
    worker_token: str  # a worker token of sb-aaaaaaaaaaaaaaaa

    @property
    def core(self) -> Core:
        core: Core = self.app.state.core
        return core


@pytest_asyncio.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    async with serving(tmp_path, rate_limit_copass=LIMIT) as (app, _owners):
        core: Core = app.state.core
        owner = await core.auth.authenticate_key(KEY)
        user = core.auth.issue_user_token(owner).token
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://corral.test") as client:
            yield World(app, client, user, core.auth.issue_token(owner, "sb-aaaaaaaaaaaaaaaa"))


def conn(app: FastAPI, *headers: tuple[str, str], client: str = "10.0.0.7") -> HTTPConnection:
    scope = {
        "type": "http",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
        "query_string": b"",
        "client": (client, 40000),
        "app": app,
    }
    return HTTPConnection(scope)


def bearer(creds: Credentials) -> str:
    if not creds.bearer:
        raise Unauthenticated("this surface's own missing text")
    return creds.bearer


async def principal(
    w: World,
    *headers: tuple[str, str],
    tokens: bool = True,
    check: Callable[[Principal], None] | None = None,
) -> Principal:
    extra = {} if check is None else {"check": check}
    return await authentication.principal(
        conn(w.app, *headers), w.core, COPASS, bearer, "this surface's refusal", tokens=tokens, **extra
    )


async def test_a_key_or_a_token_and_the_client_id(world: World) -> None:
    by_key = await principal(world, ("Authorization", f"Bearer {KEY}"), ("X-Client-Id", "agent-7"))
    assert (by_key.key_id, by_key.client_id) == ("apitest01", "agent-7")
    by_token = await principal(world, ("Authorization", f"Bearer {world.user_token}"))
    assert by_token.key_id == "apitest01" and by_token.client_id is None


async def test_the_surfaces_own_texts_and_a_keys_only_surface(world: World) -> None:
    with pytest.raises(Unauthenticated, match="^this surface's own missing text$"):
        await principal(world)
    with pytest.raises(Unauthenticated, match="^this surface's refusal$"):
        await principal(world, ("Authorization", "Bearer abc"))
    with pytest.raises(Unauthenticated, match="^this surface's refusal$"):
        await principal(world, ("Authorization", f"Bearer {world.user_token}"), tokens=False)


async def test_failed_credentials_are_charged_to_the_address_until_429(world: World) -> None:
    for _ in range(LIMIT):
        with pytest.raises(Unauthenticated):
            await principal(world, ("Authorization", "Bearer ek_nosuchkey01_" + "x" * 32))
    with pytest.raises(LimitExceeded):
        await principal(world, ("Authorization", "Bearer abc"))
    # the owner's own bucket is another: still full
    assert (await principal(world, ("Authorization", f"Bearer {KEY}"))).key_id == "apitest01"


async def test_a_header_twice_and_a_refused_principal_are_not_charged(world: World) -> None:
    def no_worker_token(found: Principal) -> None:
        if found.sandbox_id is not None:
            raise Forbidden("not here")

    for _ in range(LIMIT + 2):
        with pytest.raises(InvalidInput, match="sent more than once"):
            await principal(world, ("Authorization", f"Bearer {KEY}"), ("Authorization", f"Bearer {KEY}"))
        with pytest.raises(Forbidden, match="not here"):
            await principal(world, ("Authorization", f"Bearer {world.worker_token}"), check=no_worker_token)
    for _ in range(LIMIT):  # the owner key's bucket is whole: nothing above took from it
        await principal(world, ("Authorization", f"Bearer {KEY}"), check=no_worker_token)
    with pytest.raises(LimitExceeded):
        await principal(world, ("Authorization", f"Bearer {KEY}"))


# Each surface says in its own words what it wants; these are its clients' contract.
REFUSALS = [
    # OpenComputer, control plane and worker routes
    ("/api/sandboxes", {}, 401, "missing API key: send the header X-API-Key: ek_<id>_<secret>"),
    ("/api/sandboxes", {"X-API-Key": "abc"}, 401, "credential must be an API key (ek_<id>_<secret>) or a"),
    ("/api/sandboxes", {"X-API-Key": f"Bearer {KEY}"}, 401, "without 'Bearer '"),
    ("/api/sandboxes", {"Authorization": "Basic dTpw"}, 401, "must be 'Bearer <API key or worker token>'"),
    ("/api/sandboxes", {"Authorization": "Bearer {worker}"}, 403, "a worker token is good for its own"),
    ("/sandboxes/sb-aaaaaaaaaaaaaaaa/exec", {}, 401, "missing token: send the header Authorization: Bearer"),
    ("/sandboxes/sb-aaaaaaaaaaaaaaaa/exec", {"Authorization": "Bearer {worker}"}, 404, "not found"),
    # xgen
    ("/api/v1/sandboxes", {}, 401, "send Authorization: Bearer <token> or Authorization: ApiKey <key>"),
    ("/api/v1/sandboxes", {"Authorization": "ApiKey {user}"}, 401, "ApiKey takes an API key"),
    ("/api/v1/sandboxes", {"Authorization": "Basic dTpw"}, 401, "must be 'Bearer <token>' or 'ApiKey <key>'"),
    (
        "/api/v1/sandboxes",
        {"Authorization": "Bearer abc"},
        401,
        "a token from /api/v1/auth/token or an API key",
    ),
    ("/api/v1/sandboxes", {"Authorization": f"ApiKey {KEY}"}, 200, "["),
    # Copass
    (
        "/api/v1/storage/sandboxes/ns/compute/templates",
        {},
        401,
        "Bearer <API key ek_<id>_<secret> or user JWT>",
    ),
    (
        "/api/v1/storage/sandboxes/ns/compute/templates",
        {"Authorization": "Basic x"},
        401,
        "'Bearer <credential>'",
    ),
    ("/api/v1/storage/sandboxes/ns/compute/templates", {"Authorization": "Bearer abc"}, 401, "or a user JWT"),
    # Enclave
    ("/sessions", {}, 401, "Bearer <user JWT or API key ek_<id>_<secret>>"),
    ("/sessions", {"Authorization": "Basic dTpw"}, 401, "must be 'Bearer <user JWT or API key>'"),
    ("/sessions", {"Authorization": "Bearer abc"}, 401, "must be a user JWT or an API key ek_<id>_<secret>"),
    ("/sessions", {"Authorization": "Bearer {user}"}, 200, '"sessions":[]'),
    # agent runs (a run's read route: ?token= too)
    ("/api/sessions/nosuch", {}, 401, "missing credential: send Authorization: Bearer <API key>"),
    ("/api/sessions/nosuch", {"Authorization": "Basic dTpw"}, 401, "must be 'Bearer <API key>'"),
    ("/api/sessions/nosuch?token=abc", {}, 401, "the credential must be an API key ek_<id>_<secret>"),
    ("/api/sessions/nosuch?token={user}", {}, 404, "thread nosuch not found"),
]


@pytest.mark.parametrize(("path", "headers", "status", "text"), REFUSALS)
async def test_each_surface_answers_in_its_own_words(
    world: World, path: str, headers: dict[str, str], status: int, text: str
) -> None:
    fill = {"worker": world.worker_token, "user": world.user_token}
    sent = {name: value.format(**fill) for name, value in headers.items()}
    answer = await world.client.get(path.format(**fill), headers=sent)
    assert answer.status_code == status, answer.text
    assert text in answer.text
