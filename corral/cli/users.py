"""``corral users ...``: users of orgs and their tokens, in this node's store.

Contracts: ``users add EMAIL --org NAME --role ROLE`` prints the new user's id; an
email is unique across orgs. ``users role EMAIL --role ROLE`` changes a user's role and
``users rm EMAIL`` removes the user: their tokens follow at once on a server sharing
this SQLite store (a token acts with the lower of its role and the user's; a removed
user's tokens are 401), within seconds on another node of a shared PostgreSQL store. ``users token EMAIL`` prints a user JWT (HS256, signed
with the setting ``jwt_secret`` or ``<data dir>/jwt-secret``, the server's own) as the
last line: ``Authorization: Bearer <token>`` on every surface, valid ``--ttl``
seconds (default the setting ``user_token_ttl_s``, 900).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from corral.auth.scopes import Role
from corral.auth.service import AuthService, load_or_create_secret
from corral.cli.console import out, print_table, reported, when
from corral.cli.local import DatabaseOption, DataDirOption
from corral.cli.store import with_stores
from corral.domain import User
from corral.ids import new_id
from corral.settings import Settings

if TYPE_CHECKING:
    from corral.core import LocalStores

app = typer.Typer(help="Manage users and mint their tokens in this node's store.", no_args_is_help=True)

Email = Annotated[str, typer.Argument(help="The user's email, which names them.", show_default=False)]


@app.command("add")
def add(
    email: Email,
    org: Annotated[str, typer.Option("--org", help="Org name.")],
    role: Annotated[Role, typer.Option("--role", help="Role of the user.", case_sensitive=False)],
    name: Annotated[str, typer.Option("--name", help="Display name.")] = "",
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Add a user to an org."""

    async def work(stores: LocalStores, _settings: Settings) -> User:
        owner = await stores.keys.org_by_name(org)
        user = User(new_id("usr"), owner.id, email.strip().lower(), name, role.value, datetime.now(UTC))
        await stores.users.add(user)
        return user

    with reported():
        user = with_stores(data_dir, database_url, work)
        out.print(f"added {user.role} {user.email} to org {org} ({user.id})")


@app.command("ls")
def ls(
    org: Annotated[str, typer.Option("--org", help="Org name.")],
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """List the users of an org."""

    async def work(stores: LocalStores, _settings: Settings) -> list[User]:
        return await stores.users.list((await stores.keys.org_by_name(org)).id)

    with reported():
        users = with_stores(data_dir, database_url, work)
        table = Table(box=None, header_style="bold", pad_edge=False)
        for column in ("EMAIL", "ROLE", "NAME", "ID", "CREATED"):
            table.add_column(column, no_wrap=True)
        for user in users:
            table.add_row(user.email, user.role, user.name or "-", user.id, when(user.created_at))
        print_table(table)


@app.command("role")
def role(
    email: Email,
    new_role: Annotated[Role, typer.Option("--role", help="The user's new role.", case_sensitive=False)],
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Give a user another role (their tokens follow)."""

    async def work(stores: LocalStores, _settings: Settings) -> User:
        users = stores.users
        user = await users.by_email(email.strip().lower())
        await users.set_role(user.id, new_role.value)
        stores.keys.stamp_revocation()
        return user

    with reported():
        user = with_stores(data_dir, database_url, work)
        out.print(f"{user.email} is now {new_role.value} (was {user.role})")


@app.command("rm")
def rm(email: Email, data_dir: DataDirOption = None, database_url: DatabaseOption = None) -> None:
    """Remove a user (their tokens stop working)."""

    async def work(stores: LocalStores, _settings: Settings) -> User:
        users = stores.users
        user = await users.by_email(email.strip().lower())
        await users.remove(user.id)
        stores.keys.stamp_revocation()
        return user

    with reported():
        user = with_stores(data_dir, database_url, work)
        out.print(f"removed {user.email} ({user.id})")


@app.command("token")
def token(
    email: Email,
    ttl: Annotated[
        int | None, typer.Option("--ttl", help="Seconds the token is valid.", min=60, max=86400)
    ] = None,
    data_dir: DataDirOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Print a user JWT for EMAIL (the token is the last line)."""

    async def work(stores: LocalStores, settings: Settings) -> tuple[User, str, datetime]:
        user = await stores.users.by_email(email.strip().lower())
        secret = settings.jwt_secret or load_or_create_secret(settings.data_dir / "jwt-secret")
        issued = AuthService(stores.keys, secret, user_token_ttl_s=settings.user_token_ttl_s)
        minted = issued.issue_user_token(user, ttl)
        return user, minted.token, minted.expires_at

    with reported():
        user, jwt, expires = with_stores(data_dir, database_url, work)
        out.print(f"token of {user.email} ({user.role}), valid until {when(expires)} UTC:")
        out.print(jwt)
