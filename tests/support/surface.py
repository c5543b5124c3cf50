"""What the suites of the surfaces (tests/enclave, tests/xgen, tests/copass, tests/e2b,
...) share: a real ``corral serve`` of their own on runc (``runc_env``, ``served``), the
server and its orgs as the tests see them (``Server``, ``Org``, ``seeded_orgs``), the
local CLI against its store, re-signed tokens."""

from __future__ import annotations

import os
import secrets
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import jwt
import pytest

from tests.support import process
from tests.support.process import CORRAL

ORGS = ("alpha", "beta")  # each suite's two orgs, an owner key each


def runc_env(run_dir: str, bridge: str, net: int, tag: str) -> dict[str, str]:
    """The environment of a suite's own ``corral serve`` on runc: this process's, with the
    runc root and network state under ``run_dir``, its bridge, the address pool
    ``10.<net>.0.0/16`` and NFLOG group ``<net>`` (each suite its own, so suites run side
    by side), and a new seed key ``ek_<tag><hex>_<secret>``. A suite adds its settings."""
    return {
        **os.environ,
        "CORRAL_RUNTIME": "runc",
        "CORRAL_RUNC_ROOT": f"{run_dir}/runc",
        "CORRAL_NETWORK_BRIDGE": bridge,
        "CORRAL_NETWORK_POOL": f"10.{net}.0.0/16",
        "CORRAL_NETWORK_NFLOG_GROUP": str(net),
        "CORRAL_NETWORK_STATE_DIR": f"{run_dir}/network",
        "CORRAL_API_KEY": f"ek_{tag}{secrets.token_hex(6)}_{secrets.token_hex(24)}",
    }


def workplace(tmp_path_factory: pytest.TempPathFactory, name: str) -> tuple[Path, str]:
    """A new work dir for the suite's server ``name`` (its logs, its store) and its
    store's URL; the suite is skipped without root (runc needs it)."""
    if os.geteuid() != 0:
        pytest.skip("needs root (runc)")
    work = tmp_path_factory.mktemp(f"{name}-server")
    return work, f"sqlite+aiosqlite:///{work / 'corral.db'}"


O = TypeVar("O", bound="Org")


@dataclass
class Server(Generic[O]):
    """A suite's own ``corral serve``: its URL, data dir, store, log and environment,
    and its orgs by name (``seeded_orgs``), each of the suite's ``Org`` type."""

    url: str
    data_dir: Path
    database_url: str
    log: Path
    env: dict[str, str]
    orgs: dict[str, O] = field(default_factory=dict, kw_only=True)

    def cli(self, *args: str) -> str:
        return cli(self.env, self.data_dir, self.database_url, *args)


@dataclass
class SigningServer(Server[O]):
    """A server whose JWT secret (``CORRAL_JWT_SECRET``) is the test's, so that tests
    can sign tokens (valid, expired, forged)."""

    jwt_secret: str = ""

    def resigned(self, token: str, *, expires_in: int = 600, secret: str | None = None) -> str:
        """``token``'s claims signed again: expiring ``expires_in`` seconds from now
        (negative: already expired), with the server's secret or ``secret``."""
        return resigned(token, secret or self.jwt_secret, expires_in)


@dataclass
class Org:
    """An org of a suite's server; ``key`` its owner key, ``key_of`` mints more."""

    name: str
    server: Server[Any]
    key: str = ""
    keys: dict[tuple[str, str], str] = field(default_factory=dict)

    def key_of(self, role: str, name: str = "") -> str:
        """An API key of this org with ``role``, made once per ``(role, name)`` (so a test
        may have a user of its own: a per-user cap counts per key)."""
        if (role, name) not in self.keys:
            out = self.server.cli("keys", "create", "--role", role, "--org", self.name)
            self.keys[(role, name)] = out.splitlines()[-1].strip()
        return self.keys[(role, name)]


def seeded_orgs(server: Server[O], org: Callable[[str, Server[Any]], O]) -> None:
    """The suite's orgs (``ORGS``) created on ``server`` and in its ``orgs``, each with
    an owner key."""
    for name in ORGS:
        server.cli("org", "create", name)
        server.orgs[name] = org(name, server)
        server.orgs[name].key = server.orgs[name].key_of("owner")


def cli(env: Mapping[str, str], data_dir: Path, database_url: str, *args: str) -> str:
    """``corral ARGS`` on the server's data dir and store; its output (asserts success)."""
    proc = subprocess.run(
        [CORRAL, *args, "--data-dir", str(data_dir), "--database-url", database_url],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=dict(env),
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"corral {' '.join(args)}: {proc.stdout}{proc.stderr}"
    return proc.stdout


def resigned(token: str, secret: str, expires_in: int = 600) -> str:
    """``token``'s claims signed again with ``secret``, expiring ``expires_in`` seconds
    from now (negative: already expired)."""
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["exp"] = int(time.time()) + expires_in
    return jwt.encode(claims, secret, algorithm="HS256")


@contextmanager
def served(
    data_dir: Path, database_url: str, env: Mapping[str, str], log: Path
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``corral serve`` on ``data_dir`` and ``database_url``, healthy: (its process, its
    URL); stopped at the end."""
    proc, url = process.start(["--data-dir", str(data_dir), "--database-url", database_url], dict(env), log)
    try:
        process.wait_healthy(url, proc, log)
        yield proc, url
    finally:
        process.stop(proc)
