"""Which template a name means to an org: corral's built-in templates, which every org
shares, and the org's own Dockerfile templates; nothing else.

Contracts:
- A built-in's name (``Templates.known()``) means that template for every org. Any other
  name means the org's Dockerfile template of that name (its row in the store), whose
  builds are in the node's catalog under the row's ``image`` (the template's id; its
  name for templates built before they were per org). Another org's template of that
  name, a catalog name that is not a built-in's (another org's template id, an old
  template's name) and a name nobody has are one and the same: not found. Nothing here
  says whether another org has a template.
- ``get`` is the template a create starts from: the newest build of the catalog name;
  NotFound naming ``templateID`` without one (a first build still running or failed).
- ``find`` is that exact build (hibernated sandboxes and checkpoints start again on
  it); None if it is gone or no longer the org's.
- ``usable`` maps each name an org's Dockerfile may put in ``FROM`` to its catalog
  name: the built-ins and the org's templates with a build.
"""

from __future__ import annotations

import re

from corral.domain import Template
from corral.errors import NotFound
from corral.ports import TemplateBuildStore, Templates

NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


class TemplateNames:
    def __init__(self, templates: Templates, builds: TemplateBuildStore) -> None:
        self.templates = templates
        self.builds = builds

    def builtin(self, name: str) -> bool:
        return name in self.templates.known()

    async def image(self, org_id: str, name: str) -> str | None:
        """The catalog name of what ``name`` means to ``org_id``; None if nothing."""
        if self.builtin(name):
            return name
        row = await self.builds.get(org_id, name) if NAME.fullmatch(name or "") else None
        return row.image if row is not None and row.digest else None

    async def get(self, org_id: str, name: str) -> Template:
        image = await self.image(org_id, name)
        try:
            if image is None:
                raise NotFound(f"template {name!r} not found")
            return await self.templates.get(image)
        except NotFound as exc:
            raise NotFound(f"template {name!r} not found", field="templateID") from exc

    async def find(self, org_id: str, name: str, digest: str) -> Template | None:
        image = await self.image(org_id, name)
        return None if image is None else await self.templates.find(image, digest)

    async def usable(self, org_id: str) -> dict[str, str]:
        usable = {name: name for name in self.templates.known()}
        for row in await self.builds.list(org_id):
            if row.digest and row.name not in usable:
                usable[row.name] = row.image
        return usable
