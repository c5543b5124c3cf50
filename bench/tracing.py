"""Wall-clock spans of corral's own functions, without touching corral's code.

``install(prefixes, out)`` wraps every function and method defined in the loaded
modules whose names start with one of ``prefixes`` (coroutine functions and plain
functions; not generators, properties or dunders) so each call records a span: its
qualified name, start, end and the span that was running when it was called (a
context variable, so asyncio tasks inherit their creator as parent). Spans are written
as JSON lines to ``out`` when they end.

Every other module's reference to a wrapped function (``from x import f``) is rebound
too, so the spans do not depend on how a function was imported. Install after the
application's modules are imported and before it starts serving.

``load(path)`` and ``tree(spans, root_name)`` turn the lines back into per-call trees
and aggregate them by call path.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import json
import sys
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from types import FunctionType, ModuleType
from typing import IO, Any

_current: ContextVar[int | None] = ContextVar("bench_span", default=None)
_ids = itertools.count(1)


class _Sink:
    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def emit(self, sid: int, parent: int | None, name: str, start: float, end: float) -> None:
        self.out.write(json.dumps({"id": sid, "parent": parent, "name": name, "start": start, "end": end}))
        self.out.write("\n")
        self.out.flush()


def _wrap(fn: FunctionType, name: str, sink: _Sink) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_span(*args: Any, **kwargs: Any) -> Any:
            sid = next(_ids)
            parent = _current.get()
            token = _current.set(sid)
            start = time.monotonic()
            try:
                return await fn(*args, **kwargs)
            finally:
                end = time.monotonic()
                _current.reset(token)
                sink.emit(sid, parent, name, start, end)

        return async_span

    @functools.wraps(fn)
    def sync_span(*args: Any, **kwargs: Any) -> Any:
        sid = next(_ids)
        parent = _current.get()
        token = _current.set(sid)
        start = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            end = time.monotonic()
            _current.reset(token)
            sink.emit(sid, parent, name, start, end)

    return sync_span


def _wrappable(obj: object) -> bool:
    return (
        isinstance(obj, FunctionType)
        and not inspect.isgeneratorfunction(obj)
        and not inspect.isasyncgenfunction(obj)
        and not obj.__name__.startswith("__")
    )


def install(prefixes: Iterable[str], out: IO[str], skip: Iterable[str] = ()) -> int:
    """Wrap the functions of the matching loaded modules; return how many."""
    sink = _Sink(out)
    prefixes = tuple(prefixes)
    skipped = tuple(skip)
    replaced: dict[int, Callable[..., Any]] = {}
    modules: list[ModuleType] = [
        m for n, m in list(sys.modules.items()) if n.startswith(prefixes) and not n.startswith(skipped)
    ]
    for module in modules:
        for attr, obj in list(vars(module).items()):
            if _wrappable(obj) and obj.__module__ == module.__name__:
                wrapper = _wrap(obj, f"{module.__name__}.{obj.__qualname__}", sink)
                replaced[id(obj)] = wrapper
                setattr(module, attr, wrapper)
            elif inspect.isclass(obj) and obj.__module__ == module.__name__:
                for mattr, member in list(vars(obj).items()):
                    if isinstance(member, staticmethod | classmethod):
                        continue
                    if _wrappable(member):
                        wrapper = _wrap(member, f"{module.__name__}.{member.__qualname__}", sink)
                        replaced[id(member)] = wrapper
                        setattr(obj, mattr, wrapper)
    # rebind `from module import name` copies everywhere
    for module in list(sys.modules.values()):
        try:
            namespace = vars(module)
        except TypeError:
            continue
        for attr, obj in list(namespace.items()):
            if isinstance(obj, FunctionType) and id(obj) in replaced and namespace.get(attr) is obj:
                namespace[attr] = replaced[id(obj)]
    return len(replaced)


@dataclass
class Span:
    id: int
    parent: int | None
    name: str
    start: float
    end: float
    children: list[Span] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return self.end - self.start


def load(path: Path) -> dict[int, Span]:
    spans: dict[int, Span] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        raw = json.loads(line)
        spans[raw["id"]] = Span(raw["id"], raw["parent"], raw["name"], raw["start"], raw["end"])
    for span in spans.values():
        if span.parent is not None and span.parent in spans:
            spans[span.parent].children.append(span)
    for span in spans.values():
        span.children.sort(key=lambda s: s.start)
    return spans


@dataclass
class PathStats:
    """Durations of one call path (root > ... > name) over all the roots."""

    path: tuple[str, ...]
    first_offset: list[float] = field(default_factory=list)
    totals: list[float] = field(default_factory=list)  # per root: summed duration of this path
    calls: int = 0


def aggregate(roots: list[Span], min_share: float = 0.0) -> list[PathStats]:
    """Per call path, the time spent in it per root (summed over repeated calls), in the
    order paths first start; paths under ``min_share`` of the root's median are dropped."""
    table: dict[tuple[str, ...], PathStats] = {}
    for root in roots:
        per_root: dict[tuple[str, ...], tuple[float, float, int]] = {}

        def walk(span: Span, path: tuple[str, ...], root: Span = root, acc: Any = per_root) -> None:
            total, offset, calls = acc.get(path, (0.0, span.start - root.start, 0))
            acc[path] = (total + span.duration, offset, calls + 1)
            for child in span.children:
                walk(child, (*path, _short(child.name)))

        walk(root, (_short(root.name),))
        for path, (total, offset, calls) in per_root.items():
            stats = table.setdefault(path, PathStats(path))
            stats.totals.append(total)
            stats.first_offset.append(offset)
            stats.calls += calls
    if not roots:
        return []
    root_total = sorted(r.duration for r in roots)[len(roots) // 2]
    rows = [s for s in table.values() if _median(s.totals) >= min_share * root_total]
    return _depth_first(rows)


def _depth_first(rows: list[PathStats]) -> list[PathStats]:
    by_parent: dict[tuple[str, ...], list[PathStats]] = {}
    for row in rows:
        by_parent.setdefault(row.path[:-1], []).append(row)
    out: list[PathStats] = []

    def visit(prefix: tuple[str, ...]) -> None:
        for row in sorted(by_parent.get(prefix, []), key=lambda r: _median(r.first_offset)):
            out.append(row)
            visit(row.path)

    visit(())
    return out


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0.0


def _short(name: str) -> str:
    return name.removeprefix("corral.")
