"""``corral org``, ``corral keys --org``, ``corral users`` and ``corral killswitch`` on a
store in a temporary data dir."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.auth.principal import Principal, Role
from corral.auth.service import AuthService, load_or_create_secret
from corral.cli.main import app
from corral.errors import Unauthenticated
from corral.store.database import Database
from corral.store.keys import SqlKeyStore
from corral.store.users import SqlUserStore

runner = CliRunner()


def corral(tmp_path: Path, *args: str, code: int = 0) -> str:
    result = runner.invoke(app, [*args, "--data-dir", str(tmp_path)])
    assert result.exit_code == code, result.output
    return result.stdout if code == 0 else result.output


def principal_of(data_dir: Path, credential: str) -> Principal:
    async def go() -> Principal:
        db = await Database.open(f"sqlite+aiosqlite:///{data_dir / 'corral.db'}")
        try:
            secret = load_or_create_secret(data_dir / "jwt-secret")
            auth = AuthService(SqlKeyStore(db), secret, users=SqlUserStore(db))
            if credential.startswith("ek_"):
                return await auth.authenticate_key(credential)
            return await auth.authenticate_token(credential)
        finally:
            await db.close()

    return asyncio.run(go())


def test_org_create_then_keys_of_that_org(tmp_path: Path) -> None:
    created = corral(tmp_path, "org", "create", "acme")
    org_id = created.split("(")[1].rstrip(")\n")
    assert created.startswith("created org acme (org-")
    assert "org 'acme' exists" in corral(tmp_path, "org", "create", "acme", code=1)
    assert "org name" in corral(tmp_path, "org", "create", "no spaces", code=1)
    assert "acme" in corral(tmp_path, "org", "ls")
    raw = corral(tmp_path, "keys", "create", "--org", "acme", "--role", "developer").splitlines()[-1]
    who = principal_of(tmp_path, raw)
    assert (who.org_id, who.role) == (org_id, Role.DEVELOPER)
    assert "'emperor' is not one of" in corral(
        tmp_path, "keys", "create", "--org", "acme", "--role", "emperor", code=2
    )


def test_users_and_their_tokens(tmp_path: Path) -> None:
    corral(tmp_path, "org", "create", "acme")
    added = corral(
        tmp_path, "users", "add", "Ada@Example.com", "--org", "acme", "--role", "admin", "--name", "Ada"
    )
    assert added.startswith("added admin ada@example.com to org acme (usr-")
    assert "exists" in corral(
        tmp_path, "users", "add", "ada@example.com", "--org", "acme", "--role", "viewer", code=1
    )
    assert "ada@example.com" in corral(tmp_path, "users", "ls", "--org", "acme")
    token = corral(tmp_path, "users", "token", "ada@example.com", "--ttl", "120").splitlines()[-1]
    who = principal_of(tmp_path, token)
    assert who.role is Role.ADMIN and who.user_id and who.user_id.startswith("usr-") and who.key_id is None
    assert "not found" in corral(tmp_path, "users", "token", "nobody@example.com", code=1)
    # the token follows its user: a lower role, then no user at all
    assert "is now viewer (was admin)" in corral(
        tmp_path, "users", "role", "ada@example.com", "--role", "viewer"
    )
    assert principal_of(tmp_path, token).role is Role.VIEWER
    assert corral(tmp_path, "users", "rm", "ada@example.com").startswith("removed ada@example.com")
    with pytest.raises(Unauthenticated, match="the user it was issued to is gone"):
        principal_of(tmp_path, token)
    assert "not found" in corral(tmp_path, "users", "rm", "ada@example.com", code=1)


def test_killswitch_on_off_status(tmp_path: Path) -> None:
    corral(tmp_path, "org", "create", "acme")
    assert corral(tmp_path, "killswitch", "status") == "no kill switch is on\n"
    assert (
        corral(tmp_path, "killswitch", "on", "--org", "acme", "--reason", "abuse")
        == "kill switch on for org acme\n"
    )
    assert corral(tmp_path, "killswitch", "on") == "kill switch on for every org\n"
    status = corral(tmp_path, "killswitch", "status").splitlines()
    assert [line.split()[:2] for line in status[1:]] == [["org", "acme"], ["every", "org"]]
    assert "abuse" in status[1]
    corral(tmp_path, "killswitch", "off")
    assert "every org" not in corral(tmp_path, "killswitch", "status")
    assert "org 'nope' not found" in corral(tmp_path, "killswitch", "on", "--org", "nope", code=1)
