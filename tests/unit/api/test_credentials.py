"""Reading a request's credentials (corral.api.credentials): as sent, trimmed, the first
of each header, judged by their form only."""

from __future__ import annotations

import pytest

from corral.api.credentials import Credentials, is_api_key, is_jwt, read
from corral.errors import InvalidInput, Unauthenticated


def scope(*headers: tuple[bytes, bytes], query: bytes = b"") -> dict[str, object]:
    return {"type": "http", "headers": list(headers), "query_string": query}


def test_bearer_and_api_key() -> None:
    creds = read(scope((b"authorization", b"  bearer ek_a_b "), (b"x-api-key", b" ek_c_d")))
    assert (creds.authorization, creds.bearer, creds.api_key) == ("bearer ek_a_b", "ek_a_b", "ek_c_d")
    assert creds.key == "ek_c_d"  # X-API-Key first
    assert read(scope((b"authorization", b"Bearer ek_a_b"))).key == "ek_a_b"
    assert read(scope((b"authorization", b"Bearer a.b.c"))).key == ""


def test_other_schemes_are_kept_but_not_a_bearer() -> None:
    creds = read(scope((b"authorization", b"Basic dTpw")))
    assert (creds.authorization, creds.bearer) == ("Basic dTpw", "")
    assert read(scope((b"authorization", b"Bearer "))).bearer == ""
    assert read(scope()).authorization is None


@pytest.mark.parametrize("name", [b"authorization", b"x-api-key", b"x-oc-preview-token"])
def test_a_credential_header_twice_is_refused_not_decided_by_the_first(name: bytes) -> None:
    with pytest.raises(InvalidInput, match="sent more than once") as refused:
        read(scope((name, b"Bearer one"), (b"accept", b"*/*"), (name, b"Bearer two")))
    assert refused.value.field == name.decode().title()


def test_query() -> None:
    creds = read(scope(query=b"a=1&token=%20abc%2B+d&api_key=k"))
    assert (creds.query("token"), creds.query("api_key"), creds.query("x")) == ("abc++d", "k", "")


def test_bearer_in_api_key_is_refused() -> None:
    read(scope((b"x-api-key", b"ek_a_b"))).require_bare_api_key()
    with pytest.raises(Unauthenticated, match="without 'Bearer '"):
        read(scope((b"x-api-key", b"Bearer ek_a_b"))).require_bare_api_key()


def test_forms() -> None:
    assert is_api_key("ek_a_b") and not is_api_key("a.b.c")
    assert is_jwt("aa.bb.cc") and is_jwt("aa.bb.") and not is_jwt("ek_a_b") and not is_jwt("a.b")
    assert isinstance(read(scope()), Credentials)


def test_a_websocket_credential_in_an_offered_subprotocol() -> None:
    offered = (b"sec-websocket-protocol", b"corral, corral.credential.ek_a_b-c")
    assert read(scope(offered)).protocol == "ek_a_b-c"
    assert read(scope((b"sec-websocket-protocol", b"chat, superchat"))).protocol == ""
    assert read(scope()).protocol == ""
