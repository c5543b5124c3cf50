"""Wiring: builds the services over their adapters, and starts and stops them.

``Core.open`` connects the store (migrating it), seeds the first key, reconciles the
node with the store and starts the idle reaper. Tests pass their own runtime and
templates (fakes or real ones).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from corral.auth.service import AuthService, load_or_create_secret
from corral.ports import Runtime, Templates
from corral.services.commands import CommandService
from corral.services.files import FileService
from corral.services.sandboxes import SandboxService
from corral.settings import Settings
from corral.store.database import Database
from corral.store.keys import SqlKeyStore
from corral.store.sandboxes import SqlSandboxStore

log = logging.getLogger("corral")


@dataclass
class Core:
    settings: Settings
    db: Database
    runtime: Runtime
    templates: Templates
    auth: AuthService
    sandboxes: SandboxService
    commands: CommandService
    files: FileService
    bootstrap_key: str | None = None

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        runtime: Runtime | None = None,
        templates: Templates | None = None,
        reconcile: bool = True,
    ) -> Core:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        runtime = runtime or default_runtime(settings)
        templates = templates or default_templates(settings)
        db = await Database.open(settings.db_url)
        keys = SqlKeyStore(db)
        auth = AuthService(
            keys, load_or_create_secret(settings.data_dir / "jwt-secret"), settings.worker_token_ttl_s
        )
        sandboxes = SandboxService(SqlSandboxStore(db), runtime, templates, settings)
        core = cls(
            settings=settings,
            db=db,
            runtime=runtime,
            templates=templates,
            auth=auth,
            sandboxes=sandboxes,
            commands=CommandService(sandboxes, settings.exec_output_limit),
            files=FileService(sandboxes),
        )
        core.bootstrap_key = await auth.bootstrap(settings.api_key, settings.data_dir / "admin-key")
        if reconcile:
            await sandboxes.reconcile()
        sandboxes.start_reaper()
        return core

    async def close(self) -> None:
        """Stop background work. Sandboxes keep running."""
        await self.sandboxes.stop_reaper()
        await self.db.close()


def default_runtime(settings: Settings) -> Runtime:
    if settings.runtime == "process":
        from corral.runtime.process import ProcessRuntime

        return ProcessRuntime(settings.data_dir / "process-sandboxes")
    from corral.runtime.runc import RuncRuntime

    return RuncRuntime(settings)


def default_templates(settings: Settings) -> Templates:
    from corral.runtime.templates import TemplateStore

    return TemplateStore(settings)
