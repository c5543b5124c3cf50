"""Service bindings on runc: a real sandbox (deny_all egress) calls its binding through
the forwarder on its bridge, the upstream (on the host's loopback) gets the secret,
the secret is nowhere inside the sandbox, another sandbox is refused, and every call is
in the audit trail.

The core is built in this process on the integration data dir (``base`` built once)
with a store of its own and a network of its own (bridge ``crlb<tag>``, a /24 of 10.253/16, its own nftables
tables and NFLOG group), removed at the end; it does not reconcile, so other tests'
sandboxes on the same runc root are left alone.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.auth.principal import Principal
from corral.core import Core
from corral.domain import EgressMode, EgressPolicy, ExecRequest, Template
from corral.ids import new_id
from corral.services.sandboxes import CreateSandbox
from corral.settings import Settings
from tests.support.upstream import Upstream

pytestmark = pytest.mark.integration

KEY = "ek_bindings01_" + "b" * 32  # the data dir's first owner key, if it has none
HALVES = ("sk-bound-", secrets.token_hex(12))  # joined only inside the checks, never written
SECRET = "".join(HALVES)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream(header="Authorization", secret=f"Bearer {SECRET}").start()
    yield server
    server.stop()


@pytest.fixture
async def node(settings: Settings, base_template: Template, tmp_path: Path) -> AsyncIterator[Node]:
    tag = secrets.token_hex(2)
    bridge = f"crlb{tag}"
    own = Settings(
        data_dir=settings.data_dir,
        runc_root=settings.runc_root,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'corral.db'}",  # its own: the data dir is shared
        runtime="runc",
        api_key=KEY,
        standby_sandboxes=0,
        reaper_interval_s=3600,
        network_bridge=bridge,
        network_pool=f"10.253.{int(tag, 16) % 256}.0/24",
        network_nflog_group=3000 + int(tag, 16) % 1000,
        network_state_dir=tmp_path / "network",
        network_ready_namespaces=0,
        network_dns_upstreams=[],
    )
    try:
        core = await Core.open(own, reconcile=False)
        org = await core.auth.keys.add_org(new_id("org"), f"bindings-{secrets.token_hex(4)}")
        try:
            me = await core.auth.authenticate_key((await core.auth.create_key(org.id, "owner")).raw)
            yield Node(core, me)
        finally:
            for sandbox in await core.sandboxes.store.list_all(live_only=True):
                if sandbox.org_id == org.id:
                    await core.runtime.destroy(sandbox.id)
            await core.runtime.settle()
            assert core.network is not None
            await core.network.drain()
            await core.close()
    finally:  # the bridge and tables, even when the core did not open
        for command in (
            ["nft", "delete", "table", "inet", bridge],
            ["nft", "delete", "table", "bridge", bridge],
            ["ip", "link", "del", bridge],
        ):
            done = await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.DEVNULL)
            await done.wait()


@dataclass
class Node:
    core: Core
    me: Principal  # the owner of an org of this run's own


async def python(node: Node, sandbox_id: str, code: str, envs: dict[str, str] | None = None) -> str:
    """``code`` run by python3 in the sandbox; its stdout (it must exit 0)."""
    encoded = base64.b64encode(code.encode()).decode()
    request = ExecRequest(
        "sh", ("-c", f"echo {encoded} | base64 -d | python3 -"), envs=envs or {}, timeout_s=60
    )
    done = await node.core.commands.run(node.me, sandbox_id, request)
    assert done.exit_code == 0, done.stderr.decode()
    return done.stdout.decode()


GET = """
import json, os, urllib.request, urllib.error
def get(url):
    try:
        with urllib.request.urlopen(url, timeout=20) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
"""

STREAM = """
import os, urllib.request
base = os.environ["URL"]
with urllib.request.urlopen(base + "/stream", timeout=20) as r:
    print(r.readline().decode().strip())   # before /release: nothing buffered it
    urllib.request.urlopen(base + "/release", timeout=20).read()
    print(r.readline().decode().strip())
"""

SEARCH = """
import json, os, sys
secret = (sys.argv[1] + sys.argv[2]).encode()
hits = [k for k, v in os.environ.items() if secret in v.encode()]
if secret in open("/proc/self/environ", "rb").read():
    hits.append("/proc/self/environ")
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for name in files:
        path = os.path.join(root, name)
        try:
            with open(path, "rb") as f:
                if secret in f.read(1 << 22):
                    hits.append(path)
        except OSError:
            pass
print(json.dumps(hits))
"""


async def test_a_sandbox_calls_its_binding_and_never_holds_the_secret(node: Node, upstream: Upstream) -> None:
    core, me = node.core, node.me
    await core.bindings.add(me, "model", upstream.url + "/v1", "Authorization", f"Bearer {SECRET}")
    await core.bindings.add(me, "other", upstream.url + "/other", "Authorization", "Bearer not-the-one")
    deny_all = EgressPolicy(EgressMode.DENY_ALL)
    mine = (await core.sandboxes.create(me, CreateSandbox(template="base", egress=deny_all))).id
    theirs = (await core.sandboxes.create(me, CreateSandbox(template="base", egress=deny_all))).id
    urls = await core.bindings.open_for(me.org_id, mine, ["model"])
    assert core.network is not None and urls["model"].startswith(f"http://{core.network.gateway}:")
    envs = {"URL": urls["model"]}

    said = await python(
        node, mine, GET + "print(json.dumps(get(os.environ['URL'] + '/some/path?q=1')))", envs
    )
    status, text = json.loads(said)
    assert status == 200, text
    answer = json.loads(text)
    assert answer["authorized"] is True and (answer["path"], answer["query"]) == ("/v1/some/path", "q=1")
    assert (await python(node, mine, STREAM, envs)).split() == ["first", "second"]

    # another sandbox: with the first one's URL (403: not its address), and with a token
    # of its own for another binding (404: it did not open this one)
    other = (await core.bindings.open_for(me.org_id, theirs, ["other"]))["other"]
    check = GET + "print(json.dumps([get(os.environ['URL'] + '/x')[0], get(os.environ['MINE'])[0]]))"
    refused = await python(
        node, theirs, check, {"URL": urls["model"], "MINE": other.replace("/other", "/model")}
    )
    assert json.loads(refused) == [403, 404]
    assert [seen.path for seen in upstream.seen] == ["/v1/some/path", "/v1/stream", "/v1/release"]

    # the firewall opens the forwarder's port on the bridge address, and nothing else there
    port = int(urls["model"].split(":")[2].split("/")[0])
    probe = (
        "import json, socket\n"
        "def reach(port):\n"
        "    try:\n"
        f"        socket.create_connection(({core.network.gateway!r}, port), timeout=5).close()\n"
        "        return True\n"
        "    except OSError:\n"
        "        return False\n"
        f"print(json.dumps([reach({port}), reach({port + 1}), reach({core.settings.port})]))\n"
    )
    assert json.loads(await python(node, mine, probe)) == [True, False, False]

    program = base64.b64encode(SEARCH.encode()).decode()
    found = await core.commands.run(
        me,
        mine,
        ExecRequest(
            "sh", ("-c", f"echo {program} | base64 -d | python3 - {HALVES[0]} {HALVES[1]}"), timeout_s=120
        ),
    )
    assert found.exit_code == 0, found.stderr.decode()
    assert json.loads(found.stdout) == []

    await core.audit.flush()
    trail = await core.audit.sandbox_trail(me, mine, newest=False)
    calls = [e.data for e in trail.events if e.kind == "binding_invoked"]
    assert [(c["binding"], c["method"], c["status"]) for c in calls] == [("model", "GET", 200)] * 3
    assert calls[0]["path"] == "/some/path"
    refusals = await core.audit.sandbox_trail(me, theirs, newest=False)
    assert [
        (e.data["binding"], e.data["status"]) for e in refusals.events if e.kind == "binding_invoked"
    ] == [("model", 404)]
    assert SECRET not in repr(trail) + repr(refusals)
