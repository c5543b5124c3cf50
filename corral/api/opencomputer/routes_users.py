"""User routes (corral's extension; control plane only): an org's members and roles
(``corral.services.members`` has the rules).

    GET    /users                      sandbox:read: the org's users, oldest first
    POST   /users     {email, role, name?}   keys:manage: 201 the user (its token is
                                       minted by ``corral users token EMAIL`` on the node)
    PUT    /users/{userId}  {role}     keys:manage: the user, with the role
    DELETE /users/{userId}             keys:manage: 204; the user's tokens stop at once

A role that does not exist is a 400 naming ``role``; a role (given or held) above the
caller's own is a 403; another org's user is a 404; a taken email a 409 naming ``email``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from corral.api.opencomputer.auth import CoreDep, Surface
from corral.api.opencomputer.mapping import rfc3339
from corral.api.opencomputer.schemas import AddUserBody, UserOut, UserRoleBody
from corral.auth.principal import Principal
from corral.domain import User


def user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id,
        email=user.email,
        name=user.name,
        role=user.role,
        createdAt=rfc3339(user.created_at),
    )


def router(surface: Surface) -> APIRouter:
    r = APIRouter(prefix="/users", tags=["users"])
    caller = Depends(surface.principal)

    @r.get("", summary="List the org's users")
    async def list_users(core: CoreDep, principal: Principal = caller) -> list[UserOut]:
        return [user_out(u) for u in await core.members.list(principal)]

    @r.post("", status_code=201, summary="Add a user to the org")
    async def add_user(core: CoreDep, body: AddUserBody, principal: Principal = caller) -> UserOut:
        return user_out(await core.members.add(principal, body.email, body.role, body.name or ""))

    @r.put("/{user_id}", summary="Give a user another role")
    async def set_role(
        core: CoreDep, user_id: str, body: UserRoleBody, principal: Principal = caller
    ) -> UserOut:
        return user_out(await core.members.set_role(principal, user_id, body.role))

    @r.delete("/{user_id}", status_code=204, summary="Remove a user from the org")
    async def remove_user(core: CoreDep, user_id: str, principal: Principal = caller) -> Response:
        await core.members.remove(principal, user_id)
        return Response(status_code=204)

    return r
