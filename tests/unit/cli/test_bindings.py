"""``corral bindings add|ls|rm`` on a store in a temporary data dir: the secret is
taken from a hidden prompt and never printed."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from corral.cli.main import app
from corral.store.bindings import SqlBindingStore
from corral.store.database import Database
from corral.store.keys import SqlKeyStore

runner = CliRunner()
SECRET = "Bearer sk-cli-secret-0123456789"


def corral(tmp_path: Path, *args: str, code: int = 0, given: str | None = None) -> str:
    result = runner.invoke(app, [*args, "--data-dir", str(tmp_path)], input=given)
    assert result.exit_code == code, result.output
    return result.output


def stored(data_dir: Path, org: str) -> list[tuple[str, str, str, str]]:
    async def go() -> list[tuple[str, str, str, str]]:
        db = await Database.open(f"sqlite+aiosqlite:///{data_dir / 'corral.db'}")
        try:
            org_id = (await SqlKeyStore(db).org_by_name(org)).id
            return [(b.name, b.url, b.header, b.secret) for b in await SqlBindingStore(db).list(org_id)]
        finally:
            await db.close()

    return asyncio.run(go())


def test_add_ls_rm(tmp_path: Path) -> None:
    corral(tmp_path, "org", "create", "acme")
    add = ["bindings", "add", "model", "--org", "acme", "--url", "https://api.example.com/v1/"]
    printed = corral(tmp_path, *add, "--header", "Authorization", given=SECRET + "\n")
    assert "added binding model -> https://api.example.com/v1" in printed and SECRET not in printed
    assert stored(tmp_path, "acme") == [("model", "https://api.example.com/v1", "Authorization", SECRET)]
    listed = corral(tmp_path, "bindings", "ls", "--org", "acme")
    assert "model" in listed and "https://api.example.com/v1" in listed and SECRET not in listed
    assert "exists" in corral(tmp_path, *add, "--header", "Authorization", given="x\n", code=1)
    other = ["bindings", "add", "other", "--org", "acme"]
    assert "header" in corral(tmp_path, *other, "--url", "http://h", "--header", "Host", given="x\n", code=1)
    assert "url" in corral(tmp_path, *other, "--url", "ftp://h", "--header", "A", given="x\n", code=1)
    corral(tmp_path, "org", "create", "other")
    assert "no bindings in org other" in corral(tmp_path, "bindings", "ls", "--org", "other")  # orgs apart
    corral(tmp_path, "bindings", "rm", "model", "--org", "acme")
    assert stored(tmp_path, "acme") == []
    assert "has no binding named model" in corral(
        tmp_path, "bindings", "rm", "model", "--org", "acme", code=1
    )
