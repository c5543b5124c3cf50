"""Who calls a sandbox's envd (port 49983 through ``E2B_SANDBOX_URL``), and as which
user of the sandbox.

A call names its sandbox in ``E2b-Sandbox-Id`` (else its token does) and carries
``X-Access-Token``: the
``envdAccessToken`` a create or connect answered, a worker token of that sandbox
(``AuthService.issue_token``: it stops with the key it was issued to, and after
``token_ttl_s``; ``Sandbox.connect`` hands out a fresh one). Anything else is
Unauthenticated ("a wrong access token": Connect ``unauthenticated``, HTTP 401).

Users: E2B's default user ``user`` is corral's user ``sandbox`` (uid 1000, home
``/home/sandbox``, made by ``WorkspaceService.prepare`` where the template lacks it);
``root`` is root (home ``/root``). Any other name is InvalidInput naming ``username``.
A relative path is taken from the user's home, as envd does.
"""

from __future__ import annotations

import base64
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectrpc.request import RequestContext

from corral.auth.principal import Principal
from corral.core import Core
from corral.errors import InvalidInput, Unauthenticated
from corral.services.workspace import UID

SANDBOX_ID = "e2b-sandbox-id"
SANDBOX_PORT = "e2b-sandbox-port"
ACCESS_TOKEN = "x-access-token"
ENVD_PORT = 49983
WRONG_TOKEN = "invalid access token: send X-Access-Token with the sandbox's envdAccessToken"


@dataclass(frozen=True)
class User:
    """A user of the sandbox as commands and files run: ``uid`` (None: root), ``name``
    and ``home``."""

    name: str
    uid: int | None
    home: str

    @property
    def run_as(self) -> str:
        return "root" if self.uid is None else str(self.uid)

    def envs(self) -> dict[str, str]:
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name}

    def path(self, path: str, field: str = "path") -> str:
        """``path`` made absolute from this user's home; InvalidInput naming ``field``."""
        if not path:
            raise InvalidInput(f"{field} is required", field=field)
        if "\0" in path or len(path) > 4096:
            raise InvalidInput(f"{field} is malformed", field=field)
        return posixpath.normpath(posixpath.join(self.home, path))


ROOT = User("root", None, "/root")
DEFAULT = User("user", UID, "/home/sandbox")


def user_named(name: str | None) -> User:
    """The user an E2B username stands for (see the module docstring)."""
    if name in (None, "", "user"):
        return DEFAULT
    if name == "root":
        return ROOT
    raise InvalidInput("username must be 'user' or 'root'", field="username")


@dataclass(frozen=True)
class Caller:
    principal: Principal
    sandbox_id: str


async def authenticate(core: Core, sandbox_id: str, token: str) -> Caller:
    """The caller of sandbox ``sandbox_id`` with access token ``token``; Unauthenticated
    unless it is a live worker token of that very sandbox. Without ``sandbox_id`` the
    sandbox is the token's (SDK 2.20's ``Sandbox.connect`` drops ``E2b-Sandbox-Id``)."""
    if not token:
        raise Unauthenticated(WRONG_TOKEN)
    try:
        principal = await core.auth.authenticate_token(token)
    except Unauthenticated:
        raise Unauthenticated(WRONG_TOKEN) from None
    if principal.sandbox_id is None or principal.sandbox_id != (sandbox_id or principal.sandbox_id):
        raise Unauthenticated(WRONG_TOKEN)
    return Caller(principal, principal.sandbox_id)


Context = RequestContext[Any, Any]
"""A Connect call's context (its headers, its deadline)."""


class Callers:
    """The callers of every sandbox's envd on this server."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def of(self, headers: Mapping[str, str]) -> tuple[Caller, User]:
        """The caller of a request with these headers, and the user it acts as
        (``Authorization: Basic <base64 of "name:">``, the SDK's form; default ``user``)."""
        caller = await authenticate(self.core, headers.get(SANDBOX_ID) or "", headers.get(ACCESS_TOKEN) or "")
        return caller, user_named(basic_user(headers.get("authorization") or ""))

    async def prepare(self, caller: Caller, user: User) -> None:
        """The default user and its home made where the template lacks them."""
        if user.uid is not None:
            await self.core.workspace.prepare(caller.principal, caller.sandbox_id)


def basic_user(authorization: str) -> str | None:
    """The user name of ``Authorization: Basic``; None without one; InvalidInput naming
    ``username`` for a malformed one."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the Authorization header's Basic user is malformed", field="username") from None
    return decoded.partition(":")[0]
