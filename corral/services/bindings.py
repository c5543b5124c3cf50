"""Service bindings (DESIGN.md decision 8): an org's upstreams, called from its
sandboxes through corral's forwarder, which adds the secret on the host's side.

Managing (an org's owner or admin over the API, an operator with ``corral bindings``
on the store): ``add``, ``list``, ``remove`` need ``bindings:manage`` (Forbidden
otherwise; worker tokens never manage bindings). ``add``: InvalidInput naming
``name``, ``url``, ``header`` or ``secret``; Conflict (``name``) when the org has one
of that name. ``remove``: NotFound for a name the org does not have. Adding and
removing are recorded in the org's audit trail (name, url, header; never the secret).
No answer of this service's callers needs the secret: surfaces render bindings with
``view`` fields only.

Using (a surface's session service, for one sandbox): ``check(org_id, names)``
answers before anything is started whether ``open_for`` could open them (the same
InvalidInput; ``serviceBindings`` names the field). ``open_for(org_id,
sandbox_id, names)`` grants the sandbox the named bindings of its org at the
forwarder and returns each name -> the base URL the sandbox calls it at (a URL of the
bridge, holding a token of that sandbox's: it is the sandbox's credential, not the
secret). InvalidInput naming ``serviceBindings`` for a malformed name or one the org
does not have (nothing is granted then); Unavailable when this node has no forwarder;
NotFound when the sandbox has no address. ``close_for(sandbox_id)``: idempotent, the
sandbox's calls are refused from then on. ``grant(sandbox_id, bindings)`` grants
bindings corral made itself (model access: services/models.py) with no check of the
org's. Every call through the forwarder is a ``binding_invoked`` record of the sandbox,
but for the model binding's, which ``models`` meters (``recorder``: the forwarder's
``on_call``, given to it when it is made).
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import UTC, datetime

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.domain.bindings import Binding, binding, check_name
from corral.domain.model_usage import ModelUsage
from corral.errors import Forbidden, InvalidInput, NotFound, Unavailable
from corral.ports import BindingCallFn, BindingStore, Forwarder, Runtime
from corral.services.audit import AuditService
from corral.services.models import MODEL_BINDING, SANDBOX, ModelService

INVOKED = "binding_invoked"
ADDED = "binding_added"
REMOVED = "binding_removed"
FIELD = "serviceBindings"
MAX_OPEN = 32  # bindings one sandbox may open


class BindingService:
    def __init__(
        self, store: BindingStore, runtime: Runtime, audit: AuditService, forwarder: Forwarder | None
    ) -> None:
        self.store = store
        self.runtime = runtime
        self.audit = audit
        self.forwarder = forwarder

    # -- managing ----------------------------------------------------------------------

    async def add(self, principal: Principal, name: str, url: str, header: str, secret: str) -> Binding:
        _manager(principal)
        added = binding(principal.org_id, name, url, header, secret, datetime.now(UTC))
        await self.store.add(added)
        await self.audit.record_for(principal, ADDED, None, binding=name, url=added.url, header=header)
        return added

    async def list(self, principal: Principal) -> list[Binding]:
        _manager(principal)
        return await self.store.list(principal.org_id)

    async def remove(self, principal: Principal, name: str) -> None:
        _manager(principal)
        if not await self.store.remove(principal.org_id, check_name(name)):
            raise NotFound(f"binding {name} not found", field="name")
        await self.audit.record_for(principal, REMOVED, None, binding=name)

    # -- using -------------------------------------------------------------------------

    async def check(self, org_id: str, names: Sequence[str]) -> builtins.list[Binding]:
        """The org's bindings of these names, each once, in order; InvalidInput naming
        ``serviceBindings`` for a malformed name, one the org does not have, or too many."""
        wanted = list(dict.fromkeys(check_name(name, FIELD) for name in names))
        if len(wanted) > MAX_OPEN:
            raise InvalidInput(f"at most {MAX_OPEN} service bindings per sandbox", field=FIELD)
        found = []
        for name in wanted:
            held = await self.store.get(org_id, name)
            if held is None:
                raise InvalidInput(f"no service binding named {name}", field=FIELD)
            found.append(held)
        return found

    async def open_for(self, org_id: str, sandbox_id: str, names: Sequence[str]) -> dict[str, str]:
        found = await self.check(org_id, names)
        if not found:
            return {}
        return await self.grant(sandbox_id, found)

    async def grant(self, sandbox_id: str, bindings: Sequence[Binding]) -> dict[str, str]:
        if self.forwarder is None:
            raise Unavailable("service bindings need the forwarder, which this node does not run")
        address = await self.runtime.address(sandbox_id)
        return self.forwarder.grant(sandbox_id, address, bindings)

    async def close_for(self, sandbox_id: str) -> None:
        if self.forwarder is not None:
            self.forwarder.revoke(sandbox_id)


def recorder(audit: AuditService, models: ModelService | None = None) -> BindingCallFn:
    """The forwarder's ``on_call``: each call a ``binding_invoked`` record of the
    sandbox, a call of the model binding metered by ``models`` instead."""

    async def invoked(sandbox_id: str, org_id: str, call: dict[str, object]) -> None:
        if models is not None and call.get("binding") == MODEL_BINDING:
            usage = ModelUsage(
                str(call.get("model") or ""), _int(call.get("input_tokens")), _int(call.get("output_tokens"))
            )
            status, took = _int(call.get("status")), _int(call.get("duration_ms"))
            await models.metered(org_id, sandbox_id, SANDBOX, status, usage, took)
            return
        await audit.record(INVOKED, org_id=org_id, sandbox_id=sandbox_id, data=call)

    return invoked


def _manager(principal: Principal) -> None:
    require(principal, Scope.BINDINGS_MANAGE)
    if principal.sandbox_id is not None:
        raise Forbidden("a worker token cannot manage service bindings")


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
