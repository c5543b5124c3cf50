"""The layer contract (DESIGN.md decision 10), checked on every module's imports.

Every ``import`` and ``from ... import`` of every module under ``corral/`` counts,
wherever it is written (module level, inside a function, under ``TYPE_CHECKING``).
The top-level packages and modules of ``corral`` fall in five layers:

- ``TOP``: ``api``, ``gateway``, ``cli``. They may import everything below but the
  adapters. Each package directory under ``corral/api/`` is a *surface* (opencomputer,
  xgen, and any added later: no edit here needed); a surface imports no other
  surface, and the gateway imports none. Code shared by the surfaces is a module of
  ``corral/api/`` itself, not a package.
- the composition root (``COMPOSITION_ROOTS``: ``corral.core``), under the top: it
  builds the services over the adapters, and is the only module that imports
  adapters; it imports nothing of the top (the app and the CLI take what it built).
- ``SERVICES``: ``services``, ``auth``: the use cases. They import the base and each
  other, never a layer above, never an adapter.
- ``ADAPTERS``: ``store``, ``runtime``, ``network``, ``agent``: each imports the base
  and itself only (not another adapter, nothing above).
- the base: everything else (``domain``, ``ports``, ``errors``, ``ids``, ``settings``,
  ``metrics``, ...; a new top-level module lands here by default). It imports only
  the base.

What breaks the contract today and is too large to fix in passing is in
``EXCEPTIONS``, each with its reason; an exception that no longer matches an import
fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import corral

TOP = frozenset({"api", "gateway", "cli"})
SERVICES = frozenset({"services", "auth"})
ADAPTERS = frozenset({"store", "runtime", "network", "agent"})

COMPOSITION_ROOTS = {
    # Builds the stores, the runtime, the network and the services for the server, and
    # the stores and templates of the CLI's local commands (keys, org, users,
    # killswitch, template).
    "corral.core",
}

EXCEPTIONS: dict[tuple[str, str], str] = {
    # The runtime makes the clients of its sandboxes' agents (it alone knows their
    # sockets, and the process runtime starts the agent program): the Agent port is
    # split and its client injected with the fakes of issue 10, item 5.
    ("corral.runtime.runc", "corral.agent.client"): "runtime makes agent clients",
    ("corral.runtime.process", "corral.agent.client"): "runtime makes agent clients",
    ("corral.runtime.process", "corral.agent.wire"): "the process runtime starts the agent",
    # Settings refuse a network pool or a DNS upstream of a shape the network adapter
    # would refuse at start-up, with the adapter's own parser (imported lazily, when a
    # setting is validated), so `corral serve` says so in one line.
    ("corral.settings", "corral.network.pool"): "settings validate with the adapter's parser",
    ("corral.settings", "corral.network.resolver"): "settings validate with the adapter's parser",
}


@dataclass(frozen=True)
class Edge:
    importer: str  # a module, dotted
    imported: str  # the module or package it names
    line: int


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def edges(root: Path) -> list[Edge]:
    """Every import of the package at ``root`` of a module of the same package."""
    package = root.name
    paths = sorted(root.rglob("*.py"))
    modules = {module_name(p, root) for p in paths}
    found: list[Edge] = []
    for path in paths:
        name = module_name(path, root)
        here = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [Edge(name, a.name, node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here[: len(here) - node.level + 1] if node.level else []
                target = ".".join([*base, *([node.module] if node.module else [])])
                for alias in node.names:  # `from corral import ids` imports corral.ids
                    sub = f"{target}.{alias.name}"
                    found.append(Edge(name, sub if sub in modules else target, node.lineno))
    ours = (e for e in found if e.imported == package or e.imported.startswith(package + "."))
    return list(dict.fromkeys(ours))  # `from m import a, b` is one import of m


def _part(module: str, index: int) -> str:
    parts = module.split(".")
    return parts[index] if len(parts) > index else ""


def layer(module: str, roots: frozenset[str] = frozenset()) -> str:
    if module in roots:
        return "root"
    top = _part(module, 1)
    if top in TOP:
        return "top"
    if top in SERVICES:
        return "services"
    if top in ADAPTERS:
        return "adapter"
    return "base"


def surface(module: str, surfaces: frozenset[str]) -> str | None:
    """The surface a module belongs to (``corral.api.<surface>...``), if any."""
    name = _part(module, 2)
    return name if _part(module, 1) == "api" and name in surfaces else None


def broken_rule(edge: Edge, surfaces: frozenset[str], roots: frozenset[str] = frozenset()) -> str | None:
    """Which rule ``edge`` breaks, or None."""
    src, dst = layer(edge.importer, roots), layer(edge.imported, roots)
    if dst == "adapter" and src not in ("adapter", "root"):
        return "only a composition root imports adapters"
    if src == "base" and dst != "base":
        return "the base imports only the base"
    if src == "adapter" and (
        dst in ("top", "root", "services")
        or (dst == "adapter" and _part(edge.importer, 1) != _part(edge.imported, 1))
    ):
        return "an adapter imports only the base and itself"
    if src == "services" and dst in ("top", "root"):
        return "services import nothing above them"
    if src == "root" and dst == "top":
        return "the composition root imports nothing of the top"
    into = surface(edge.imported, surfaces)
    if into is not None:
        if _part(edge.importer, 1) == "gateway":
            return "the gateway imports no surface"
        own = surface(edge.importer, surfaces)
        if own is not None and own != into:
            return "a surface imports no other surface"
    return None


def violations(
    root: Path,
    roots: frozenset[str] = frozenset(),
    exceptions: dict[tuple[str, str], str] | None = None,
) -> list[str]:
    """Every import of the package at ``root`` that breaks the contract and is not
    excepted, and every exception that no longer matches an import, one line each."""
    excepted = exceptions or {}
    api = root / "api"
    surfaces = (
        frozenset(p.name for p in api.iterdir() if (p / "__init__.py").exists())
        if api.is_dir()
        else frozenset()
    )
    found: list[str] = []
    used: set[tuple[str, str]] = set()
    for edge in edges(root):
        rule = broken_rule(edge, surfaces, roots)
        if rule is None:
            continue
        if (edge.importer, edge.imported) in excepted:
            used.add((edge.importer, edge.imported))
            continue
        found.append(f"{edge.importer}:{edge.line} imports {edge.imported}: {rule}")
    found += [
        f"exception {a} -> {b} matches no import any more: remove it" for a, b in excepted.keys() - used
    ]
    return found


CORRAL = Path(corral.__file__).parent


def test_corral_keeps_its_layers() -> None:
    assert violations(CORRAL, frozenset(COMPOSITION_ROOTS), EXCEPTIONS) == []


def test_the_composition_roots_exist() -> None:
    names = {module_name(p, CORRAL) for p in CORRAL.rglob("*.py")}
    assert COMPOSITION_ROOTS <= names


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "corral"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for directory in {p.parent for p in root.rglob("*.py")}:
        while directory != tmp_path:
            (directory / "__init__.py").touch()
            directory = directory.parent
    return root


def test_the_check_finds_each_kind_of_violation(tmp_path: Path) -> None:
    root = _package(
        tmp_path,
        {
            "domain.py": "from corral.services import sandboxes\n",
            "services/sandboxes.py": "def f():\n    from corral.store import keys\n",
            "core.py": "from corral.store.keys import SqlKeyStore\nfrom corral.api import app\n",
            "services/audit.py": "from corral.core import Core\n",
            "store/keys.py": "from corral.runtime import runc\n",
            "runtime/runc.py": "from corral import domain\nfrom . import bundle\n",
            "runtime/bundle.py": "",
            "network/node.py": "from corral.api import app\n",
            "api/app.py": "from corral.api.one import routes\nfrom corral.api.two import routes as r\n",
            "api/one/routes.py": "from ..two import schemas\nfrom corral.api import app\n",
            "api/two/schemas.py": "",
            "api/two/routes.py": "from corral.network import node\n",
            "gateway/replies.py": "from corral.api.one.routes import x\n",
            "cli/main.py": "from corral.api import app\nfrom corral import core\n",
        },
    )
    found = violations(root, frozenset({"corral.core"}))
    assert sorted(found) == sorted(
        [
            "corral.domain:1 imports corral.services.sandboxes: the base imports only the base",
            "corral.services.sandboxes:2 imports corral.store.keys: only a composition root imports adapters",
            "corral.services.audit:1 imports corral.core: services import nothing above them",
            "corral.core:2 imports corral.api.app: the composition root imports nothing of the top",
            "corral.store.keys:1 imports corral.runtime.runc: an adapter imports only the base and itself",
            "corral.network.node:1 imports corral.api.app: an adapter imports only the base and itself",
            "corral.api.one.routes:1 imports corral.api.two.schemas: a surface imports no other surface",
            "corral.api.two.routes:1 imports corral.network.node: only a composition root imports adapters",
            "corral.gateway.replies:1 imports corral.api.one.routes: the gateway imports no surface",
        ]
    )


def test_a_new_surface_is_covered_without_an_edit(tmp_path: Path) -> None:
    root = _package(
        tmp_path, {"api/e2b/routes.py": "from corral.api.xgen import errors\n", "api/xgen/errors.py": ""}
    )
    assert violations(root) == [
        "corral.api.e2b.routes:1 imports corral.api.xgen.errors: a surface imports no other surface"
    ]


def test_an_exception_is_used_or_removed(tmp_path: Path) -> None:
    root = _package(tmp_path, {"store/keys.py": "from corral.runtime import runc\n", "runtime/runc.py": ""})
    assert violations(root, exceptions={("corral.store.keys", "corral.runtime.runc"): "why"}) == []
    stale = {("corral.store.keys", "corral.network.node"): "why"}
    assert violations(root, exceptions=stale) == [
        "corral.store.keys:1 imports corral.runtime.runc: an adapter imports only the base and itself",
        "exception corral.store.keys -> corral.network.node matches no import any more: remove it",
    ]


@pytest.mark.parametrize(
    "module", ["corral.domain", "corral.domain.egress", "corral.domain.config_json", "corral.ports"]
)
def test_the_domain_loads_no_adapter(module: str) -> None:
    """Parsing an egress policy (the API does) loads no nftables, runc or SQL code."""
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('corral.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert not [m for m in ast.literal_eval(loaded) if layer(m, frozenset(COMPOSITION_ROOTS)) != "base"]
