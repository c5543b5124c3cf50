"""API keys and worker tokens against a real SQLite store."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import jwt
import pytest

from corral.auth.principal import Role
from corral.auth.service import KEY_CACHE_S, AuthService, load_or_create_secret
from corral.domain import ApiKey
from corral.errors import InvalidInput, Unauthenticated
from corral.store.database import Database
from corral.store.keys import SqlKeyStore


@pytest.fixture
async def auth(tmp_path: Path) -> AuthService:
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    service = AuthService(SqlKeyStore(db), load_or_create_secret(tmp_path / "jwt-secret"), 60)
    yield service  # type: ignore[misc]
    await db.close()


async def test_bootstrap_generates_key_once(auth: AuthService, tmp_path: Path) -> None:
    key_file = tmp_path / "admin-key"
    raw = await auth.bootstrap(None, key_file)
    assert raw is not None and raw.startswith("ek_")
    assert key_file.read_text().strip() == raw
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert await auth.bootstrap(None, key_file) is None
    principal = await auth.authenticate_key(raw)
    assert principal.role is Role.OWNER


async def test_a_bad_seed_writes_nothing_and_a_half_done_bootstrap_is_finished(
    auth: AuthService, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInput, match="ek_<id>_<secret>"):
        await auth.bootstrap("ek_makerun_" + "c" * 32, tmp_path / "admin-key")  # id too short
    assert await auth.keys.list_orgs() == []  # the next start begins from nothing
    await auth.keys.add_org("org-crashed", "default")  # a start that stopped before its key
    raw = await auth.bootstrap(None, tmp_path / "admin-key")
    assert raw is not None
    assert (await auth.authenticate_key(raw)).org_id == "org-crashed"
    assert [org.name for org in await auth.keys.list_orgs()] == ["default"]


async def test_seeded_key_and_rejections(auth: AuthService, tmp_path: Path) -> None:
    seed = "ek_testkey01_" + "s" * 32
    assert await auth.bootstrap(seed, tmp_path / "admin-key") == seed
    assert not (tmp_path / "admin-key").exists()
    assert (await auth.authenticate_key(seed)).key_id == "testkey01"
    for bad in ("", "nope", "ek_testkey01_" + "x" * 32, "ek_unknown00_" + "s" * 32):
        with pytest.raises(Unauthenticated):
            await auth.authenticate_key(bad)


async def test_revoked_key_is_refused(auth: AuthService, tmp_path: Path) -> None:
    raw = await auth.bootstrap(None, tmp_path / "admin-key")
    assert raw
    principal = await auth.authenticate_key(raw)
    assert principal.key_id
    await auth.keys.revoke(principal.org_id, principal.key_id)
    with pytest.raises(Unauthenticated):
        await auth.authenticate_key(raw)


async def test_bad_role_is_invalid(auth: AuthService, tmp_path: Path) -> None:
    raw = await auth.bootstrap(None, tmp_path / "admin-key")
    assert raw
    org = (await auth.authenticate_key(raw)).org_id
    with pytest.raises(InvalidInput) as err:
        await auth.create_key(org, "superuser")
    assert err.value.field == "role"


async def test_worker_tokens(auth: AuthService, tmp_path: Path) -> None:
    raw = await auth.bootstrap(None, tmp_path / "admin-key")
    assert raw
    owner = await auth.authenticate_key(raw)
    token = auth.issue_token(owner, "sb-aaaaaaaaaaaaaaaa")
    p = await auth.authenticate_token(token)
    assert p.sandbox_id == "sb-aaaaaaaaaaaaaaaa" and p.org_id == owner.org_id
    assert p.may_see("sb-aaaaaaaaaaaaaaaa") and not p.may_see("sb-bbbbbbbbbbbbbbbb")
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode(claims, "another-secret-of-enough-length-for-hs256!", algorithm="HS256")
    unsigned = jwt.encode(claims, None, algorithm="none")
    expired = jwt.encode({**claims, "exp": int(time.time()) - 5}, auth.jwt_secret, algorithm="HS256")
    for bad in (forged, unsigned, expired, "garbage"):
        with pytest.raises(Unauthenticated):
            await auth.authenticate_token(bad)


async def test_a_verified_key_is_remembered_for_a_few_seconds(tmp_path: Path) -> None:
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    now = [100.0]
    auth = AuthService(SqlKeyStore(db), "s" * 32, 60, clock=lambda: now[0])
    try:
        raw = await auth.bootstrap(None, tmp_path / "admin-key")
        assert raw
        lookups = 0
        real = auth.keys.get_key

        async def counted(key_id: str) -> ApiKey | None:
            nonlocal lookups
            lookups += 1
            return await real(key_id)

        auth.keys.get_key = counted  # type: ignore[method-assign]
        first = await auth.authenticate_key(raw)
        assert await auth.authenticate_key(f" {raw} ") == first and lookups == 1
        with pytest.raises(Unauthenticated):
            await auth.authenticate_key(raw[:-1] + ("A" if raw[-1] != "A" else "B"))
        now[0] += KEY_CACHE_S + 0.1
        await auth.authenticate_key(raw)
        assert lookups == 3, "expired: verified again"
        assert first.key_id
        await auth.keys.revoke(first.org_id, first.key_id)  # in this process: forgotten at once
        with pytest.raises(Unauthenticated):
            await auth.authenticate_key(raw)
    finally:
        await db.close()


async def test_a_revocation_by_another_process_on_the_same_database_is_seen_at_once(
    auth: AuthService, tmp_path: Path
) -> None:
    raw = await auth.bootstrap(None, tmp_path / "admin-key")
    assert raw
    principal = await auth.authenticate_key(raw)  # now remembered
    assert principal.key_id
    other = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")  # as the CLI does
    try:
        await SqlKeyStore(other).revoke(principal.org_id, principal.key_id)
    finally:
        await other.close()
    with pytest.raises(Unauthenticated):
        await auth.authenticate_key(raw)


def test_the_jwt_secret_is_made_whole_once_and_a_short_one_refused(tmp_path: Path) -> None:
    path = tmp_path / "data" / "jwt-secret"
    made = load_or_create_secret(path)
    assert len(made) == 64 and load_or_create_secret(path) == made
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["jwt-secret"]  # nothing left beside it
    path.write_text("")  # what a crash of the old code could leave
    replaced = load_or_create_secret(path)
    assert len(replaced) == 64 and replaced != made
    path.write_text("short\n")
    with pytest.raises(InvalidInput, match="shorter than 32"):
        load_or_create_secret(path)


def test_a_configured_jwt_secret_must_be_long_enough(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from corral.settings import Settings

    with pytest.raises(ValidationError, match="at least 32 characters"):
        Settings(data_dir=tmp_path, jwt_secret="short")  # type: ignore[call-arg]
    assert Settings(data_dir=tmp_path, jwt_secret="s" * 32).jwt_secret == "s" * 32  # type: ignore[call-arg]


async def test_requests_that_bring_an_unverified_key_at_once_share_one_lookup(
    auth: AuthService, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A burst that arrives as the key's cache entry has expired makes one lookup."""
    raw = await auth.bootstrap(None, tmp_path / "admin-key")
    assert raw is not None
    org = (await auth.authenticate_key(raw)).org_id
    auth.forget_key((await auth.authenticate_key(raw)).key_id or "")  # the cache emptied
    lookups: list[str] = []
    get_key = auth.keys.get_key

    async def counted(key_id: str) -> ApiKey | None:
        lookups.append(key_id)
        return await get_key(key_id)

    monkeypatch.setattr(auth.keys, "get_key", counted)
    principals = await asyncio.gather(*(auth.authenticate_key(raw) for _ in range(50)))
    assert len(lookups) == 1
    assert {p.org_id for p in principals} == {org}
    bad = raw[:-4] + "0000"  # a wrong secret: every caller is refused, still one lookup more
    refused = await asyncio.gather(*(auth.authenticate_key(bad) for _ in range(20)), return_exceptions=True)
    assert all(isinstance(r, Unauthenticated) for r in refused)
    assert len(lookups) == 2
