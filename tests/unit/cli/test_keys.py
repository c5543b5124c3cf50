"""``corral keys ...`` on a store in a temporary data dir."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from corral.auth.principal import Principal, Role
from corral.auth.service import KEY_FORMAT, AuthService
from corral.cli.main import app
from corral.errors import Unauthenticated
from corral.store.database import Database
from corral.store.keys import SqlKeyStore

runner = CliRunner()


def authenticate(data_dir: Path, raw: str) -> Principal:
    async def go() -> Principal:
        db = await Database.open(f"sqlite+aiosqlite:///{data_dir / 'corral.db'}")
        try:
            return await AuthService(SqlKeyStore(db), "secret").authenticate_key(raw)
        finally:
            await db.close()

    return asyncio.run(go())


def test_create_prints_a_working_key_last_and_ls_lists_it(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["keys", "create", "--role", "developer", "--name", "ci", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    raw = result.stdout.strip().splitlines()[-1]
    assert KEY_FORMAT.match(raw)
    principal = authenticate(tmp_path, raw)
    assert principal.role is Role.DEVELOPER

    listed = runner.invoke(app, ["keys", "ls", "--data-dir", str(tmp_path)])
    assert listed.exit_code == 0
    key_id = KEY_FORMAT.match(raw).group(1)  # type: ignore[union-attr]
    row = next(line.split() for line in listed.stdout.splitlines() if line.startswith(key_id))
    assert row[1:3] == ["developer", "ci"]
    assert row[-1] == "active"
    assert raw.split("_")[2] not in listed.stdout  # never the secret


def test_revoke_stops_the_key_working(tmp_path: Path) -> None:
    raw = runner.invoke(
        app, ["keys", "create", "--role", "viewer", "--data-dir", str(tmp_path)]
    ).stdout.split()[-1]
    key_id = raw.split("_")[1]
    result = runner.invoke(app, ["keys", "revoke", key_id, "--data-dir", str(tmp_path)])
    assert (result.exit_code, result.stdout.strip()) == (0, f"revoked {key_id}")
    try:
        authenticate(tmp_path, raw)
    except Unauthenticated:
        pass
    else:
        raise AssertionError("a revoked key still authenticates")
    listed = runner.invoke(app, ["keys", "ls", "--data-dir", str(tmp_path)]).stdout
    assert "revoked" in listed

    other = runner.invoke(
        app, ["keys", "create", "--role", "viewer", "--data-dir", str(tmp_path)]
    ).stdout.split()[-1]
    result = runner.invoke(
        app, ["keys", "revoke", other, "--data-dir", str(tmp_path)]
    )  # the whole key works too
    assert (result.exit_code, result.stdout.strip()) == (0, f"revoked {other.split('_')[1]}")


def test_an_unknown_role_is_a_usage_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "create", "--role", "emperor", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "emperor" in result.output


def test_an_unknown_org_is_an_error_not_a_new_org(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["keys", "create", "--role", "admin", "--org", "acme", "--data-dir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: org 'acme' not found"


def test_revoking_an_unknown_key_is_an_error(tmp_path: Path) -> None:
    runner.invoke(app, ["keys", "create", "--role", "admin", "--data-dir", str(tmp_path)])
    result = runner.invoke(app, ["keys", "revoke", "nosuchkey0000", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "key nosuchkey0000 not found" in result.stderr
