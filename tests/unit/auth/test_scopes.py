"""Roles, scopes and ``require``: the table in ``corral.auth.scopes``."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest

from corral.auth.principal import Principal
from corral.auth.scopes import ROLE_SCOPES, Role, Scope, parse_role, require, require_role_at_most
from corral.errors import Forbidden, InvalidInput

ORDER = [Role.VIEWER, Role.DEVELOPER, Role.ADMIN, Role.OWNER]


def test_each_role_holds_every_scope_of_the_roles_below_it() -> None:
    for lower, higher in itertools.pairwise(ORDER):
        assert ROLE_SCOPES[lower] < ROLE_SCOPES[higher], (lower, higher)
    assert ROLE_SCOPES[Role.OWNER] == frozenset(Scope)


@pytest.mark.parametrize(
    ("role", "allowed", "refused"),
    [
        (
            Role.VIEWER,
            {Scope.SANDBOX_READ, Scope.SESSIONS_READ},
            {Scope.SANDBOX_CREATE, Scope.SESSIONS_WRITE},
        ),
        (Role.DEVELOPER, {Scope.SANDBOX_CREATE, Scope.SANDBOX_EXEC}, {Scope.AUDIT_READ, Scope.KEYS_MANAGE}),
        (Role.ADMIN, {Scope.AUDIT_READ, Scope.KEYS_MANAGE}, {Scope.ORGS_MANAGE}),
        (Role.OWNER, {Scope.ORGS_MANAGE, Scope.SANDBOX_DELETE}, set()),
    ],
)
def test_require(role: Role, allowed: set[Scope], refused: set[Scope]) -> None:
    principal = Principal("org-aaaaaaaa", role)
    for scope in allowed:
        require(principal, scope)
    for scope in refused:
        with pytest.raises(Forbidden, match=scope.value):
            require(principal, scope)


def test_a_token_narrows_scopes_and_never_widens_them() -> None:
    viewer = Principal(
        "org-aaaaaaaa", Role.VIEWER, granted=frozenset({Scope.SANDBOX_READ, Scope.ORGS_MANAGE})
    )
    assert viewer.scopes == {Scope.SANDBOX_READ}
    nothing = Principal("org-aaaaaaaa", Role.OWNER, granted=frozenset())
    with pytest.raises(Forbidden):
        require(nothing, Scope.SANDBOX_READ)
    assert replace(viewer, client_id="ci").scopes == viewer.scopes  # survives replace


def test_unknown_role_is_invalid_input_naming_role() -> None:
    assert parse_role("admin") is Role.ADMIN
    with pytest.raises(InvalidInput) as err:
        parse_role("emperor")
    assert err.value.field == "role"


def test_no_role_can_grant_a_role_above_its_own() -> None:
    admin = Principal("org-aaaaaaaa", Role.ADMIN)
    require_role_at_most(admin, Role.ADMIN)
    with pytest.raises(Forbidden):
        require_role_at_most(admin, Role.OWNER)
