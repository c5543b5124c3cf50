"""User JWTs, the API key exchange, and the key check's constant work."""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import jwt
import pytest

from corral.auth import service
from corral.auth.principal import Role
from corral.auth.scopes import Scope
from corral.auth.service import AuthService
from corral.domain import User
from corral.errors import Unauthenticated
from corral.store.database import Database
from corral.store.keys import SqlKeyStore
from corral.store.users import SqlUserStore

SECRET = "test-secret-of-enough-length-for-hs256-0123456789"


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def auth(tmp_path: Path, clock: Clock) -> AsyncIterator[AuthService]:
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    yield AuthService(SqlKeyStore(db), SECRET, 60, 900, clock=clock, users=SqlUserStore(db))
    await db.close()


async def test_exchange_gives_a_15_minute_token_that_authenticates_as_the_key(
    auth: AuthService, tmp_path: Path
) -> None:
    raw = await auth.bootstrap(None, tmp_path / "admin-key")
    assert raw
    issued = await auth.exchange(raw)
    assert issued.expires_in == 900
    assert abs((issued.expires_at - datetime.now(UTC)).total_seconds() - 900) < 5
    principal = await auth.authenticate_token(issued.token)
    key = await auth.authenticate_key(raw)
    assert (principal.org_id, principal.role, principal.key_id) == (key.org_id, Role.OWNER, key.key_id)
    assert principal.sandbox_id is None and principal.user_id is None
    with pytest.raises(Unauthenticated):
        await auth.exchange("ek_nosuchkey_" + "x" * 32)


def test_user_tokens_carry_sub_org_role_and_optional_scopes(auth: AuthService) -> None:
    user = User("usr-aaaaaaaaaaaaaaaa", "org-bbbbbbbb", "a@example.com", "A", "developer", datetime.now(UTC))
    token = auth.issue_user_token(user).token
    claims = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert {k: claims[k] for k in ("sub", "org", "role", "typ")} == {
        "sub": user.id, "org": user.org_id, "role": "developer", "typ": "user",
    }  # fmt: skip
    principal = auth.verify_token(token)
    assert (principal.user_id, principal.org_id, principal.role) == (user.id, user.org_id, Role.DEVELOPER)
    narrowed = jwt.encode({**claims, "scopes": ["sandbox:read", "no:such"]}, SECRET, algorithm="HS256")
    assert auth.verify_token(narrowed).scopes == {Scope.SANDBOX_READ}


def test_bad_tokens_are_unauthenticated(auth: AuthService) -> None:
    now = int(time.time())
    claims = {
        "sub": "usr-x",
        "org": "org-bbbbbbbb",
        "role": "owner",
        "typ": "user",
        "iat": now,
        "exp": now + 60,
    }
    cases = {
        "expired": jwt.encode({**claims, "exp": now - 1}, SECRET, algorithm="HS256"),
        "alg none": jwt.encode(claims, None, algorithm="none"),
        "other secret": jwt.encode(claims, "another-secret-of-enough-length-for-hs256!", algorithm="HS256"),
        "unknown type": jwt.encode({**claims, "typ": "admin"}, SECRET, algorithm="HS256"),
        "unknown role": jwt.encode({**claims, "role": "emperor"}, SECRET, algorithm="HS256"),
        "no org": jwt.encode({k: v for k, v in claims.items() if k != "org"}, SECRET, algorithm="HS256"),
        "scopes not a list": jwt.encode({**claims, "scopes": "sandbox:read"}, SECRET, algorithm="HS256"),
    }
    assert auth.verify_token(jwt.encode(claims, SECRET, algorithm="HS256")).role is Role.OWNER
    for name, token in cases.items():
        with pytest.raises(Unauthenticated) as err:
            auth.verify_token(token)
        assert err.value.message.startswith("token expired" if name == "expired" else "invalid token"), name


async def test_a_key_check_does_the_same_work_whether_or_not_the_key_id_exists(
    auth: AuthService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = await auth.bootstrap(None, tmp_path / "admin-key")
    assert raw
    key_id = raw.split("_")[1]
    work: list[str] = []
    real_hash, real_compare = service.hash_secret, hmac.compare_digest
    real_get = auth.keys.get_key

    def counted_hash(secret: str) -> str:
        work.append("hash")
        return real_hash(secret)

    def counted_compare(a: str, b: str) -> bool:
        work.append(f"compare:{len(a)}:{len(b)}")
        return bool(real_compare(a, b))

    async def counted_get(kid: str) -> object:
        work.append("lookup")
        return await real_get(kid)

    monkeypatch.setattr(service, "hash_secret", counted_hash)
    monkeypatch.setattr(hmac, "compare_digest", counted_compare)
    monkeypatch.setattr(auth.keys, "get_key", counted_get)
    traces = []
    for candidate in (f"ek_{key_id}_" + "W" * 32, "ek_nosuchkey0_" + "W" * 32):
        work.clear()
        with pytest.raises(Unauthenticated) as err:
            await auth.authenticate_key(candidate)
        traces.append((list(work), err.value.message))
    assert traces[0] == traces[1] == (["lookup", "hash", "compare:64:64"], "invalid API key")


async def test_last_used_is_written_at_most_once_a_minute(
    auth: AuthService, clock: Clock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    raw = await auth.bootstrap(None, tmp_path / "admin-key")
    assert raw
    writes: list[str] = []
    real = auth.keys.mark_used

    async def counted(key_id: str) -> None:
        writes.append(key_id)
        await real(key_id)

    monkeypatch.setattr(auth.keys, "mark_used", counted)
    for _ in range(5):
        await auth.authenticate_key(raw)
    assert len(writes) == 1
    key = await auth.keys.get_key(writes[0])
    assert key is not None and key.last_used_at is not None
    clock.now += service.TOUCH_INTERVAL_S + 1
    await auth.authenticate_key(raw)
    assert len(writes) == 2


async def test_revoking_a_key_revokes_the_tokens_it_minted_at_once(auth: AuthService, tmp_path: Path) -> None:
    raw = await auth.bootstrap(None, tmp_path / "admin-key")
    assert raw
    owner = await auth.authenticate_key(raw)
    worker = auth.issue_token(owner, "sb-aaaaaaaaaaaaaaaa")
    exchanged = (await auth.exchange(raw)).token
    assert (await auth.authenticate_token(worker)).sandbox_id == "sb-aaaaaaaaaaaaaaaa"
    assert (await auth.authenticate_token(exchanged)).key_id == owner.key_id
    assert owner.key_id
    await auth.keys.revoke(owner.org_id, owner.key_id)  # within the cache's few seconds
    for token in (worker, exchanged):
        with pytest.raises(Unauthenticated) as err:
            await auth.authenticate_token(token)
        assert "revoked" in err.value.message


async def test_a_worker_token_holds_only_its_sandboxs_worker_scopes(
    auth: AuthService, tmp_path: Path
) -> None:
    raw = await auth.bootstrap(None, tmp_path / "admin-key")
    assert raw
    worker = await auth.authenticate_token(
        auth.issue_token(await auth.authenticate_key(raw), "sb-aaaaaaaaaaaaaaaa")
    )
    assert worker.role is Role.OWNER
    assert worker.scopes == {Scope.SANDBOX_READ, Scope.SANDBOX_WRITE, Scope.SANDBOX_EXEC}
    read_only = replace(await auth.authenticate_key(raw), granted=frozenset({Scope.SANDBOX_READ}))
    narrowed = await auth.authenticate_token(auth.issue_token(read_only, "sb-aaaaaaaaaaaaaaaa"))
    assert narrowed.scopes == {Scope.SANDBOX_READ}  # no more than the token that asked for it
    assert (await auth.authenticate_token(auth.issue_token(narrowed, "sb-aaaaaaaaaaaaaaaa"))).scopes == {
        Scope.SANDBOX_READ
    }  # nor its refresh


async def test_a_users_tokens_follow_the_user(auth: AuthService, clock: Clock) -> None:
    org = await auth.keys.add_org("org-uuuuuuuu", "users")
    user = User("usr-aaaaaaaaaaaaaaaa", org.id, "a@example.com", "A", "admin", datetime.now(UTC))
    assert auth.users is not None
    await auth.users.add(user)
    token = auth.issue_user_token(user).token
    assert (await auth.authenticate_token(token)).role is Role.ADMIN
    stranger = User("usr-bbbbbbbbbbbbbbbb", org.id, "b@example.com", "B", "owner", datetime.now(UTC))
    with pytest.raises(Unauthenticated):  # never added: no such user
        await auth.authenticate_token(auth.issue_user_token(stranger).token)
    forged_up = auth.issue_user_token(replace(user, role="owner")).token  # a token above the user's role
    clock.now += 10
    assert (await auth.authenticate_token(forged_up)).role is Role.ADMIN
