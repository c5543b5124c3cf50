"""The compute kill switch: turns off traffic into sandboxes, globally or for one org.

The gateway consults it before every request it would forward and answers 503 while it
is engaged (spec 000: "Compute kill-switch engaged for your account or globally").
Flipping it takes effect for the next request; connections already forwarded
(WebSockets, streams) are not cut. It lives in memory on ``Core.kill_switch``: the
setting ``gateway_enabled=false`` starts it engaged globally; ``engage``/``release``
flip it at run time, in this process only.

It also makes sandbox creation answer 503 (``corral.services.admission``).

Switches kept in the store (``corral killswitch on|off [--org NAME]``, which works on
the store and so on every control plane sharing it) are a second layer: ``load``
replaces that layer with what the store holds (``corral.services.stored_switches`` does it
every ``kill_switch_refresh_s``). A switch is engaged when either layer engages it;
``release`` does not release a stored switch.
"""

from __future__ import annotations


class KillSwitch:
    def __init__(self, *, engaged: bool = False) -> None:
        self._global = engaged
        self._orgs: set[str] = set()
        self._stored_global = False
        self._stored_orgs: frozenset[str] = frozenset()

    def engaged(self, org_id: str | None = None) -> bool:
        """True if traffic is off everywhere, or for ``org_id``."""
        if self._global or self._stored_global:
            return True
        return org_id is not None and (org_id in self._orgs or org_id in self._stored_orgs)

    def load(self, engaged_globally: bool, orgs: frozenset[str]) -> None:
        """Replace the stored layer (see the module docstring)."""
        self._stored_global = engaged_globally
        self._stored_orgs = orgs

    def engage(self, org_id: str | None = None) -> None:
        """Turn traffic off for ``org_id``, or everywhere when None."""
        if org_id is None:
            self._global = True
        else:
            self._orgs.add(org_id)

    def release(self, org_id: str | None = None) -> None:
        """Undo ``engage`` for ``org_id``, or the global switch when None."""
        if org_id is None:
            self._global = False
        else:
            self._orgs.discard(org_id)
