"""AuditService.egress_allowed: the network's allowed connections recorded under the
sandbox's org, as egress_denied records its denials."""

from __future__ import annotations

from corral.core import Core
from corral.services.sandboxes import CreateSandbox
from tests.unit.services.conftest import owner


async def test_allowed_connections_are_recorded_under_the_sandboxes_org(core: Core) -> None:
    me = await owner(core)
    sb = await core.sandboxes.create(me, CreateSandbox())
    await core.audit.egress_allowed(sb.id, {"dst": "198.18.0.2", "port": 443, "proto": "tcp", "host": None})
    await core.audit.egress_allowed("sb-unknown00000000", {"dst": "10.0.0.1"})  # dropped, not raised
    page = await core.audit.org_trail(me, kinds=["egress_allowed"])
    assert [(e.sandbox_id, e.data["dst"], e.data["port"]) for e in page.events] == [
        (sb.id, "198.18.0.2", 443)
    ]
