"""AuthService.authenticate: a credential told by its form (an API key or a JWT), each
checked by its own method; any other form refused with the caller's words."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.auth.service import NEITHER, AuthService, is_api_key, is_jwt
from corral.errors import Unauthenticated
from corral.store.database import Database
from corral.store.keys import SqlKeyStore


@pytest.fixture
async def auth(tmp_path: Path) -> AsyncIterator[AuthService]:
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    yield AuthService(SqlKeyStore(db), "s" * 40)
    await db.close()


async def owner_key(auth: AuthService) -> str:
    org = await auth.keys.add_org("org-authenticate", "authenticate")
    return (await auth.create_key(org.id, "owner")).raw


async def test_a_key_and_a_token_are_told_by_their_form(auth: AuthService) -> None:
    raw = await owner_key(auth)
    by_key = await auth.authenticate(raw)
    assert by_key.key_id == raw.split("_")[1] and by_key.org_id == "org-authenticate"
    worker = auth.issue_token(by_key, "sb-aaaaaaaaaaaaaaaa")
    assert (await auth.authenticate(worker)).sandbox_id == "sb-aaaaaaaaaaaaaaaa"
    user = auth.issue_user_token(by_key).token
    by_token = await auth.authenticate(user)
    assert (by_token.key_id, by_token.sandbox_id) == (by_key.key_id, None)


async def test_each_form_is_judged_by_its_own_check(auth: AuthService) -> None:
    await owner_key(auth)
    with pytest.raises(Unauthenticated, match=r"^invalid API key: expected the form"):
        await auth.authenticate("ek_bad", "never said")
    with pytest.raises(Unauthenticated, match=r"^invalid API key$"):
        await auth.authenticate("ek_nosuchkey01_" + "x" * 32, "never said")
    with pytest.raises(Unauthenticated, match=r"^invalid token$"):
        await auth.authenticate("a.b.c", "never said")


@pytest.mark.parametrize("credential", ["abc", "", "pat_abc", "a.b", "Bearer ek_a_b"])
async def test_any_other_form_is_refused_in_the_callers_words(auth: AuthService, credential: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        await auth.authenticate(credential, "send a key of ours")
    assert refused.value.message == "send a key of ours"
    with pytest.raises(Unauthenticated) as default:
        await auth.authenticate(credential)
    assert default.value.message == NEITHER


async def test_without_tokens_a_valid_jwt_is_refused_and_a_key_still_taken(auth: AuthService) -> None:
    raw = await owner_key(auth)
    owner = await auth.authenticate(raw, tokens=False)
    token = auth.issue_user_token(owner).token
    assert (await auth.authenticate(token)).key_id == owner.key_id  # valid, where tokens are taken
    with pytest.raises(Unauthenticated) as refused:
        await auth.authenticate(token, "keys only here", tokens=False)
    assert refused.value.message == "keys only here"


def test_the_forms() -> None:
    assert is_api_key("ek_a_b") and not is_api_key("a.b.c") and not is_api_key(" ek_a_b")
    assert is_jwt("aa.bb.cc") and is_jwt("aa.bb.") and not is_jwt("ek_a_b") and not is_jwt("a.b")
