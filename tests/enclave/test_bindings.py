"""A code session that names a service binding, through the real server on runc: it
sees ``ENCLAVE_SVC_<NAME>``, calls the upstream (a test server on the host's loopback)
through corral's forwarder, the upstream gets the secret, the secret is nowhere in the
sandbox and in no answer, and the call is in the session's trail."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import httpx
import pytest

from tests.enclave.conftest import Org
from tests.support.upstream import Upstream

pytestmark = pytest.mark.integration

HALVES = ("sk-session-", secrets.token_hex(12))  # the program holds the halves, never the secret
SECRET = "".join(HALVES)

PROGRAM = f"""
import json, os, urllib.request
base = os.environ["ENCLAVE_SVC_MODEL"]
with urllib.request.urlopen(base + "/chat/completions?stream=1", timeout=20) as r:
    answer = json.loads(r.read())
with urllib.request.urlopen(base + "/stream", timeout=20) as r:
    chunks = [r.readline().decode().strip()]
    urllib.request.urlopen(base + "/release", timeout=20).read()
    chunks.append(r.readline().decode().strip())
secret = ({HALVES[0]!r} + {HALVES[1]!r}).encode()
hits = [k for k, v in os.environ.items() if secret in v.encode()]
if secret in open("/proc/self/environ", "rb").read():
    hits.append("/proc/self/environ")
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for name in files:
        try:
            with open(os.path.join(root, name), "rb") as f:
                if secret in f.read(1 << 22):
                    hits.append(os.path.join(root, name))
        except OSError:
            pass
enclave.result({{"answer": answer, "chunks": chunks, "hits": hits, "base": base}})
"""


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream(header="Authorization", secret=f"Bearer {SECRET}").start()
    yield server
    server.stop()


def test_a_session_calls_its_binding_and_never_sees_the_secret(alpha: Org, upstream: Upstream) -> None:
    name = f"model_{secrets.token_hex(3)}"  # the server's store outlives a test run
    binding = {
        "name": name,
        "url": upstream.url + "/v1",
        "header": "Authorization",
        "secret": f"Bearer {SECRET}",
    }
    with httpx.Client(
        base_url=f"{alpha.server.url}/api", headers={"X-API-Key": alpha.key}, timeout=30
    ) as api:
        added = api.post("/bindings", json=binding)
        assert added.status_code == 201, added.text
        listed = api.get("/bindings")
        try:
            ran = alpha.run({"code": PROGRAM.replace("ENCLAVE_SVC_MODEL", f"ENCLAVE_SVC_{name.upper()}"),
                             "serviceBindings": [name]})  # fmt: skip
        finally:
            api.delete(f"/bindings/{name}")
    session = ran["session"]
    assert session["phase"] == "torn_down" and session["result"]["exitCode"] == 0, session
    result = session["result"]["result"]
    assert result["answer"]["authorized"] is True
    assert (result["answer"]["path"], result["answer"]["query"]) == ("/v1/chat/completions", "stream=1")
    assert result["chunks"] == ["first", "second"]
    assert result["hits"] == []
    assert SECRET not in result["base"]
    assert [seen.path for seen in upstream.seen] == ["/v1/chat/completions", "/v1/stream", "/v1/release"]
    calls = [e for e in ran["audit"] if e["type"] == "binding_invoked"]
    assert [(c["binding"], c["method"], c["status"]) for c in calls] == [(name, "GET", 200)] * 3, calls
    for answer in (added.text, listed.text, json.dumps(ran)):
        assert SECRET not in answer
