"""Counts, inside a ``bench_gateway.py --serve`` process, which gateway requests the fast
path answered and which it declined, and at which of its checks (``--census``).

``install()`` wraps, at class level, the fast path's ``start`` (``corral.gateway.fast_path.
FastPath``; ``corral.gateway.lane.Lane`` in revisions before its rename, so a baseline's
tree is counted the same way) and the steps it takes in order: the router's ``match``,
``Access.check_now`` (and, within it, ``PreviewService.cached``), ``Pool.take_idle``; and
``Gateway.serve``, the ASGI path. A declined request is counted under the last step it
reached:

    headers     a header it refuses (a body, Upgrade, Expect, X-Forwarded-*) or a preflight
    no-target   the router read no sandbox port
    no-route    the sandbox's route not cached (or hibernated)
    no-grant    check_now answered None with the route cached (a key not cached, a refusal)
    query-token a ?token= grant (a cookie is to be set)
    no-idle     no idle pooled connection to the sandbox's port

and every request the ASGI gateway served (``Gateway.serve``) is counted too, so
``asgi - declined`` is what reached the gateway without being offered to the fast path
(a connection made without one, a WebSocket). Counts are by sandbox port and route
(``path`` or ``host``). The wrappers cost CPU: a census run's figures are for counting,
not for timing.
"""

from __future__ import annotations

import importlib
import json
from collections import Counter
from pathlib import Path
from typing import Any

COUNTS: Counter[str] = Counter()
_step = [""]


def _key(target: Any, outcome: str) -> str:
    route = "host" if not getattr(target, "prefix", "") else "path"
    return f"{getattr(target, 'port', 0)} {route} {outcome}"


def install() -> None:
    """Wrap the fast path's class and its steps (this process's ``corral``)."""
    try:
        module = importlib.import_module("corral.gateway.fast_path")
        fast_path = module.FastPath
    except ImportError:
        module = importlib.import_module("corral.gateway.lane")
        fast_path = module.Lane
    from corral.gateway.access import Access
    from corral.gateway.dispatch import Gateway
    from corral.gateway.routing import Router, Target
    from corral.services.previews import PreviewService

    def start(original: Any) -> Any:
        def wrapped(self: Any, scope: Any, client: Any, keep_alive: bool) -> Any:
            _step[0] = "headers"
            target = None

            def note(found: Any) -> None:
                nonlocal target
                target = found

            _targets.append(note)
            try:
                answer = original(self, scope, client, keep_alive)
            finally:
                _targets.pop()
            COUNTS[_key(target, "served" if answer is not None else _step[0])] += 1
            return answer

        return wrapped

    _targets: list[Any] = []

    def match(original: Any) -> Any:
        def wrapped(self: Any, scope: Any) -> Any:
            found = original(self, scope)
            if _targets:
                _targets[-1](found)
                _step[0] = "no-route" if isinstance(found, Target) and found.port else "no-target"
            return found

        return wrapped

    def cached(original: Any) -> Any:
        def wrapped(self: Any, sandbox_id: str) -> Any:
            route = original(self, sandbox_id)
            if _targets and route is not None and not route.hibernated:
                _step[0] = "no-grant"
            return route

        return wrapped

    def check_now(original: Any) -> Any:
        def wrapped(self: Any, target: Any, scope: Any, credentials: Any) -> Any:
            grant = original(self, target, scope, credentials)
            if _targets and grant is not None:
                _step[0] = "query-token" if grant.query_token else "no-idle"
            return grant

        return wrapped

    def serve(original: Any) -> Any:
        async def wrapped(self: Any, found: Any, scope: Any, receive: Any, send: Any) -> None:
            COUNTS[_key(found, "asgi " + str(scope.get("type")))] += 1
            await original(self, found, scope, receive, send)

        return wrapped

    for owner, name, wrap in (
        (fast_path, "start", start),
        (Router, "match", match),
        (PreviewService, "cached", cached),
        (Access, "check_now", check_now),
        (Gateway, "serve", serve),
    ):
        setattr(owner, name, wrap(getattr(owner, name)))


def dump(path: Path) -> None:
    path.write_text(json.dumps(dict(COUNTS), indent=1, sort_keys=True))
