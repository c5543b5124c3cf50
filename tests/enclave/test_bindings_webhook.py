"""A session's service binding and webhook, through the real server on runc: the
sandbox reaches an upstream on the host's loopback through ``ENCLAVE_SVC_<NAME>``, the
upstream sees the binding's secret, which is nowhere inside the sandbox; every call is
``binding_invoked`` in the session's trail; at the end ``{session, result}`` reaches
the webhook."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.enclave.conftest import Org

pytestmark = pytest.mark.integration


class Recorder:
    """An HTTP server on loopback that keeps each request's path, headers and body."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.arrived = threading.Event()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                recorder.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                recorder.arrived.set()
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            do_GET = do_POST = _answer

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.close()


@pytest.fixture
def webhook() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.close()


CALL = """
import os, urllib.request
url = os.environ["ENCLAVE_SVC_{upper}"]
secret = {head!r} + {tail!r}
answer = urllib.request.urlopen(url + "/v1/check", timeout=20).read().decode()
found = []
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        if secret in open(f"/proc/{{pid}}/environ", errors="replace").read():
            found.append(pid)
    except OSError:
        pass
for top in ("/etc", "/tmp", "/root", "/run"):
    for root, _dirs, files in os.walk(top):
        for name in files:
            try:
                if secret in open(os.path.join(root, name), errors="replace").read():
                    found.append(os.path.join(root, name))
            except OSError:
                pass
enclave.result({{"answer": answer, "found": found}})
"""


def test_a_binding_adds_its_secret_outside_and_the_webhook_gets_the_result(
    alpha: Org, upstream: Recorder, webhook: Recorder
) -> None:
    name, secret = f"up{secrets.token_hex(3)}", f"s3cr3t-{secrets.token_hex(16)}"
    with alpha.http() as http:
        added = http.post(
            "/api/bindings",
            json={"name": name, "url": upstream.url, "header": "X-Upstream-Key", "secret": secret},
            headers={"X-API-Key": alpha.key},
        )
        assert added.status_code == 201, added.text
    # the secret is put together inside from pieces, so the program's text does not hold it
    code = CALL.format(upper=name.upper(), head=secret[:10], tail=secret[10:])
    run = alpha.run({"code": code, "serviceBindings": [name], "webhookUrl": webhook.url + "/hook?t=1"})
    result = next(f["result"] for f in run["frames"] if f["kind"] == "result")
    assert result["result"] == {"answer": "ok", "found": []}, result
    assert upstream.requests[-1]["path"] == "/v1/check"
    assert upstream.requests[-1]["headers"]["X-Upstream-Key"] == secret  # added on the host's side
    kinds = [e["type"] for e in run["audit"]]
    assert "credential_issued" in kinds and "binding_invoked" in kinds, kinds
    assert secret not in json.dumps(run)
    assert webhook.arrived.wait(30), "the webhook was not delivered"
    delivered = json.loads(webhook.requests[0]["body"])
    assert delivered["session"]["id"] == run["session"]["id"]
    assert delivered["result"]["result"] == {"answer": "ok", "found": []}
    assert delivered["session"]["phase"] == "torn_down" and secret not in json.dumps(delivered)


def test_a_session_cannot_use_a_binding_it_did_not_name(alpha: Org, upstream: Recorder) -> None:
    name = f"up{secrets.token_hex(3)}"
    with alpha.http() as http:
        http.post(
            "/api/bindings",
            json={"name": name, "url": upstream.url, "header": "X-Upstream-Key", "secret": "x" * 20},
            headers={"X-API-Key": alpha.key},
        ).raise_for_status()
    code = "import os\nenclave.result(sorted(k for k in os.environ if k.startswith('ENCLAVE_SVC_')))\n"
    run = alpha.run({"code": code})
    assert next(f["result"] for f in run["frames"] if f["kind"] == "result")["result"] == []
    assert upstream.requests == []
