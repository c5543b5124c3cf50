"""No route of any surface sends a dependency or its handler to FastAPI's thread pool: a
plain function there is a thread hop on every request (``CoreDep``'s ``get_core`` was
one, on every route that names the core)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from starlette.routing import BaseRoute, Mount

from corral.api.authentication import get_core
from tests.support.app import make_app, make_settings


def _routes(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[tuple[str, APIRoute]]:
    for context in iter_route_contexts(routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            yield prefix + (context.path or route.path), route
        elif isinstance(route, Mount) and isinstance(inner := getattr(route.app, "routes", None), list):
            yield from _routes(inner, prefix + route.path)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _on_the_loop(call: Callable[..., Any]) -> bool:
    """What FastAPI awaits on the loop: a coroutine or async generator function, or an
    object whose ``__call__`` is one (the security schemes)."""
    for candidate in (call, getattr(call, "__call__", None)):  # noqa: B004 -- the method itself
        if inspect.iscoroutinefunction(candidate) or inspect.isasyncgenfunction(candidate):
            return True
    return False


def test_the_core_dependency_runs_on_the_loop() -> None:
    assert inspect.iscoroutinefunction(get_core)


def test_no_route_dependency_or_handler_goes_to_the_thread_pool(tmp_path: Path) -> None:
    app = make_app(make_settings(tmp_path))
    seen, sync = 0, []
    for path, route in _routes(app.routes):
        seen += 1
        for call in [route.endpoint, *_calls(route.dependant)]:
            if not _on_the_loop(call):
                sync.append(f"{sorted(route.methods or ())} {path}: {getattr(call, '__qualname__', call)!r}")
    assert seen > 100  # every surface's routes were walked (the sub-applications too)
    assert not sync, "\n".join(sync)
