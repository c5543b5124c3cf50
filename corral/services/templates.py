"""Templates: the built-in ones (mmdebstrap recipes) and templates built from
Dockerfiles (``runtime/builder.py``).

Contracts:
- A Dockerfile template is its org's: names are per org (``[a-z0-9][a-z0-9._-]{0,62}``;
  another form is InvalidInput naming ``name``), so two orgs may each have ``app``, and
  to every other org a template does not exist: every route, creates and ``FROM``
  included, answers for another org's template what it answers for a name nobody has,
  and no message names another org's template, sandbox or checkpoint. Only the
  built-in templates are shared, and their names are nobody's. What a name means to an
  org is ``template_names.TemplateNames``; a template's builds are in the catalog under
  its id (``TemplateBuild.image``), never under a name another org could say.
- ``build`` needs ``sandbox:create``. It waits for the build and returns the template
  ``ready``, or ``failed`` with the builder's error (a Dockerfile that does not parse,
  a step that fails, a base that cannot be pulled); nothing half-built is left. It is
  not an error of the call: the template exists, failed, and says why. ``log`` gets
  the build's output line by line. Rebuilding a name replaces it once the new build is
  ready; while it builds, and if it fails, sandboxes get the previous build. A second
  build of a name while one runs is Conflict. Builtin names are Conflict;
  Unavailable without a builder (the process runtime). LimitExceeded (429, retry
  later) when the org already has ``max_running_per_org`` builds running (each build's
  own limits are the builder's: ``runtime/confinement.py``). Its ``FROM`` may name the
  built-ins and the org's own templates (``TemplateNames.usable``); any other name is
  an image of a registry, as if no template had it.
- ``list`` and ``get`` need ``sandbox:read``: the built-in templates, then the org's.
- ``recover`` (start-up) marks builds a crash interrupted failed.
- ``delete`` needs ``sandbox:delete``: Conflict for a built-in template, and while a
  running or hibernated sandbox or a checkpoint of the org uses the template (delete
  those first; the message names them), NotFound for an unknown name. It removes every
  build of it.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.domain import BuildStatus, CheckpointStatus, SandboxStatus, Template, TemplateBuild
from corral.errors import Conflict, CorralError, InvalidInput, LimitExceeded, NotFound, Unavailable
from corral.ids import new_id
from corral.ports import Builder, CheckpointStore, TemplateBuildStore
from corral.services.sandboxes import SandboxService
from corral.services.standby import Standby
from corral.services.template_names import NAME

TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
TEARDOWN_WAIT_S = 10.0
IN_USE = (SandboxStatus.STARTING, SandboxStatus.RUNNING, SandboxStatus.PAUSED, SandboxStatus.HIBERNATED)


@dataclass(frozen=True)
class TemplateInfo:
    """A template as the API shows it."""

    id: str
    name: str
    tag: str
    status: str  # ready | building | failed (built-ins: ready, or "not built" yet)
    builtin: bool
    created_at: datetime | None
    error: str | None = None
    digest: str | None = None


class TemplateService:
    def __init__(
        self,
        builds: TemplateBuildStore,
        builder: Builder | None,
        checkpoints: CheckpointStore,
        sandboxes: SandboxService,
        *,
        max_running_per_org: int = 0,
        standby: Standby | None = None,
    ) -> None:
        """``max_running_per_org``: builds an org may run at once (0: no cap);
        ``standby``: the sandboxes started ahead, released for a template deleted."""
        self.builds = builds
        self.standby = standby
        self.max_running_per_org = max_running_per_org
        self.builder = builder
        self.checkpoints = checkpoints
        self.sandboxes = sandboxes
        self.templates = sandboxes.templates
        self.names = sandboxes.names
        self._building: set[tuple[str, str]] = set()  # (org id, name)

    async def build(
        self,
        principal: Principal,
        name: str,
        dockerfile: str,
        tag: str | None = None,
        log: Callable[[str], None] = lambda _line: None,
    ) -> TemplateBuild:
        previous = await self.check(principal, name, dockerfile, tag)
        tag = tag or "latest"
        assert self.builder is not None
        building = (principal.org_id, name)
        self._building.add(building)
        try:
            template_id = previous.id if previous else new_id("tpl")
            row = TemplateBuild(
                id=template_id,
                org_id=principal.org_id,
                name=name,
                image=previous.image if previous else template_id,
                tag=tag,
                status=BuildStatus.BUILDING,
                dockerfile=dockerfile,
                created_at=previous.created_at if previous else datetime.now(UTC),
                digest=previous.digest if previous else None,
            )
            await self.builds.put(row)
            try:
                usable = await self.names.usable(principal.org_id)
                template = await self.builder.build(row.image, dockerfile, log, usable)
            except CorralError as exc:
                row = replace(row, status=BuildStatus.FAILED, error=exc.message)
            else:
                row = replace(row, status=BuildStatus.READY, digest=template.digest, error=None)
            await self.builds.put(row)
            return row
        finally:
            self._building.discard(building)

    async def check(
        self, principal: Principal, name: str, dockerfile: str, tag: str | None = None
    ) -> TemplateBuild | None:
        """What ``build`` refuses before it starts (see the module docstring); returns
        the template's current row, if any."""
        require(principal, Scope.SANDBOX_CREATE)
        if not NAME.fullmatch(name or ""):
            raise InvalidInput("name must match [a-z0-9][a-z0-9._-]{0,62}", field="name")
        if not TAG.fullmatch(tag or "latest"):
            raise InvalidInput("tag must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", field="tag")
        if not dockerfile.strip():
            raise InvalidInput("dockerfile is required", field="dockerfile")
        if name in self.templates.known():
            raise Conflict(f"{name!r} is a built-in template", field="name")
        if self.builder is None:
            raise Unavailable("templates from Dockerfiles need the runc runtime (and buildah) on this node")
        previous = await self.builds.get(principal.org_id, name)
        if (principal.org_id, name) in self._building:
            raise Conflict(f"template {name!r} is being built", field="name")
        cap = self.max_running_per_org
        if cap and sum(1 for org, _ in self._building if org == principal.org_id) >= cap:
            raise LimitExceeded(
                f"the org has {cap} template builds running, its most at once "
                "(setting build_max_running_per_org); retry when one ends"
            )
        return previous  # no await since the count: build() claims its slot at once

    async def list(self, principal: Principal) -> list[TemplateInfo]:
        require(principal, Scope.SANDBOX_READ)
        built = {t.name: t for t in await self.templates.list()}
        found = [self._builtin(name, built) for name in self.templates.known()]
        found += [_info(b) for b in await self.builds.list(principal.org_id)]
        return found

    async def get(self, principal: Principal, name: str) -> TemplateInfo:
        require(principal, Scope.SANDBOX_READ)
        if name in self.templates.known():
            return self._builtin(name, {t.name: t for t in await self.templates.list() if t.name == name})
        return _info(await self._own(principal, name))

    async def delete(self, principal: Principal, name: str) -> None:
        require(principal, Scope.SANDBOX_DELETE)
        if name in self.templates.known():
            raise Conflict(f"{name!r} is a built-in template and cannot be deleted", field="name")
        row = await self._own(principal, name)
        if (principal.org_id, name) in self._building:
            raise Conflict(f"template {name!r} is being built", field="name")
        org = principal.org_id  # another org's sandbox never runs on this template
        users = [
            sb.id
            for sb in await self.sandboxes.store.list(org)
            if sb.template == name and sb.status in IN_USE
        ]
        users += [
            cp.id
            for cp in await self.checkpoints.list_all()
            if cp.org_id == org and cp.config.template == name and cp.status is not CheckpointStatus.FAILED
        ]
        if users:
            raise Conflict(f"template {name!r} is used by {', '.join(users[:10])}; delete those first")
        if self.builder is not None:
            # A sandbox killed a moment ago may still have its root mounted over the
            # template while the runtime finishes its teardown in the background.
            if self.standby is not None:
                await self.standby.release(row.image)
            await self.sandboxes.runtime.settle(TEARDOWN_WAIT_S)
            await self.builder.remove(row.image)
        await self.builds.remove(org, name)

    async def recover(self) -> builtins.list[str]:
        """At start-up: builds a crash interrupted are failed (their leftovers are
        removed by the next build of the name)."""
        failed = []
        for row in await self.builds.list():
            if row.status is BuildStatus.BUILDING:
                await self.builds.put(
                    replace(row, status=BuildStatus.FAILED, error="interrupted by a restart")
                )
                failed.append(row.name)
        return failed

    async def _own(self, principal: Principal, name: str) -> TemplateBuild:
        """The org's template ``name``; NotFound, whoever else has one of that name."""
        row = await self.builds.get(principal.org_id, name) if NAME.fullmatch(name or "") else None
        if row is None:
            raise NotFound(f"template {name!r} not found")
        return row

    def _builtin(self, name: str, built: dict[str, Template]) -> TemplateInfo:
        template = built.get(name)
        return TemplateInfo(
            id=name,
            name=name,
            tag="latest",
            status="ready",
            builtin=True,
            created_at=template.created_at if template else None,
            digest=template.digest if template else None,
        )


def _info(row: TemplateBuild) -> TemplateInfo:
    return TemplateInfo(
        id=row.id,
        name=row.name,
        tag=row.tag,
        status=row.status.value,
        builtin=False,
        created_at=row.created_at,
        error=row.error,
        digest=row.digest,
    )
