"""SQL implementation of ``corral.ports.UserStore``: people of an org, named by the
``sub`` of their JWTs."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from corral.domain import User
from corral.errors import Conflict, NotFound
from corral.store.database import Database, utc
from corral.store.models import UserRow


class SqlUserStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, user: User) -> None:
        """Conflict (naming ``email``) when the email is taken, in any org."""
        try:
            async with self.db.session() as s, s.begin():
                if await s.scalar(select(UserRow.id).where(UserRow.email == user.email)) is not None:
                    raise Conflict(f"user {user.email!r} exists", field="email")
                s.add(
                    UserRow(
                        id=user.id,
                        org_id=user.org_id,
                        email=user.email,
                        name=user.name,
                        role=user.role,
                        created_at=user.created_at,
                    )
                )
        except IntegrityError as exc:  # a concurrent add of the same email won
            raise Conflict(f"user {user.email!r} exists", field="email") from exc

    async def get(self, user_id: str) -> User | None:
        async with self.db.session() as s:
            row = await s.get(UserRow, user_id)
            return None if row is None else _user(row)

    async def by_email(self, email: str) -> User:
        async with self.db.session() as s:
            row = await s.scalar(select(UserRow).where(UserRow.email == email))
            if row is None:
                raise NotFound(f"user {email!r} not found", field="email")
            return _user(row)

    async def remove(self, user_id: str) -> None:
        async with self.db.session() as s, s.begin():
            await s.execute(delete(UserRow).where(UserRow.id == user_id))

    async def set_role(self, user_id: str, role: str) -> None:
        async with self.db.session() as s, s.begin():
            await s.execute(update(UserRow).where(UserRow.id == user_id).values(role=role))

    async def list(self, org_id: str) -> list[User]:
        async with self.db.session() as s:
            rows = await s.scalars(
                select(UserRow).where(UserRow.org_id == org_id).order_by(UserRow.created_at)
            )
            return [_user(r) for r in rows.all()]


def _user(r: UserRow) -> User:
    return User(r.id, r.org_id, r.email, r.name, r.role, utc(r.created_at))
