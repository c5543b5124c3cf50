"""Template names per org (services/template_names.py) and migration 0006, which keeps
templates built when names were one namespace per server their org's."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from corral.domain import BuildStatus, Template, TemplateBuild
from corral.errors import NotFound
from corral.ports import ProgressFn
from corral.services.template_names import TemplateNames
from corral.store.checkpoints import SqlTemplateBuildStore
from corral.store.database import MIGRATIONS, Database

ALPHA, BETA = "org-alphaaaaa", "org-betaaaaaa"
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Catalog:
    """The node's catalog: built-ins and whatever builds it holds, by catalog name."""

    def __init__(self, builds: dict[str, str]) -> None:
        self.builds = builds  # catalog name -> digest

    def known(self) -> list[str]:
        return ["base"]

    async def get(self, name: str) -> Template:
        if name != "base" and name not in self.builds:
            raise NotFound(f"template {name!r} not found")
        return Template(name, self.builds.get(name, "b" * 64), "/", NOW)

    async def build(self, name: str, progress: ProgressFn | None = None, force: bool = False) -> Template:
        return await self.get(name)

    async def list(self) -> list[Template]:
        return [await self.get(n) for n in ["base", *self.builds]]

    async def find(self, name: str, digest: str) -> Template | None:
        found = await self.get(name) if name == "base" or name in self.builds else None
        return found if found is not None and found.digest == digest else None


def _at_0005_with_a_template(path: Path) -> None:
    """A store as corral left it before templates were per org: alpha's ``app``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
        conn.execute(
            text(
                "INSERT INTO template_builds (name, id, org_id, tag, status, dockerfile, digest, error, "
                "created_at) VALUES ('app', 'tpl-oldoldoldoldold0', :org, 'latest', 'ready', 'FROM base', "
                ":digest, NULL, :now)"
            ),
            {"org": ALPHA, "digest": "a" * 64, "now": NOW},
        )
    engine.dispose()


async def test_a_template_built_before_the_migration_stays_its_orgs_alone(tmp_path: Path) -> None:
    _at_0005_with_a_template(tmp_path / "corral.db")
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    try:
        builds = SqlTemplateBuildStore(db)
        old = await builds.get(ALPHA, "app")
        assert old is not None and (old.id, old.image, old.status) == (
            "tpl-oldoldoldoldold0",
            "app",
            BuildStatus.READY,
        )
        names = TemplateNames(Catalog({"app": "a" * 64}), builds)
        assert (await names.get(ALPHA, "app")).name == "app"  # where its builds already are
        assert await names.find(ALPHA, "app", "a" * 64) is not None
        for org, name in ((BETA, "app"), (BETA, "tpl-oldoldoldoldold0"), (ALPHA, "tpl-oldoldoldoldold0")):
            with pytest.raises(NotFound) as err:
                await names.get(org, name)
            assert err.value.field == "templateID" and err.value.message == f"template {name!r} not found"
            assert await names.find(org, name, "a" * 64) is None
        # beta may now have an ``app`` of its own, built under its id
        await builds.put(
            TemplateBuild("tpl-betabetabetabeta", BETA, "app", "tpl-betabetabetabeta", "latest",
                          BuildStatus.READY, "FROM base", NOW, "c" * 64)
        )  # fmt: skip
        names = TemplateNames(Catalog({"app": "a" * 64, "tpl-betabetabetabeta": "c" * 64}), builds)
        assert (await names.get(BETA, "app")).digest == "c" * 64
        assert (await names.get(ALPHA, "app")).digest == "a" * 64
        assert await names.usable(BETA) == {"base": "base", "app": "tpl-betabetabetabeta"}
        assert [b.name for b in await builds.list(ALPHA)] == ["app"] and len(await builds.list()) == 2
        await builds.remove(BETA, "app")
        assert await builds.get(ALPHA, "app") is not None
    finally:
        await db.close()


async def test_a_first_build_still_running_is_not_found(tmp_path: Path) -> None:
    db = await Database.open(f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}")
    try:
        builds = SqlTemplateBuildStore(db)
        await builds.put(
            TemplateBuild("tpl-buildingbuildin", ALPHA, "app", "tpl-buildingbuildin", "latest",
                          BuildStatus.BUILDING, "FROM base", NOW)
        )  # fmt: skip
        names = TemplateNames(Catalog({}), builds)
        with pytest.raises(NotFound):
            await names.get(ALPHA, "app")
        assert await names.usable(ALPHA) == {"base": "base"}
    finally:
        await db.close()
