"""Pause and resume through the real server on runc (the session's ``server``): each
use of a paused sandbox resumes it, through the OpenComputer surface (exec, an exec
session, files) and the gateway (a server inside answering), its state then
``running``; and the 409 of a resume of a running sandbox, in the surface's envelope.
What a pause keeps (memory, no CPU, a restart) is tests/integration/test_pause.py's."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from tests.e2e.conftest import Server
from tests.support.conditions import eventually

pytestmark = pytest.mark.e2e

SERVE = (
    "cd /tmp && echo hello > index.html && setsid python3 -m http.server 8080 </dev/null >/dev/null 2>&1 &"
)


def test_every_use_resumes_a_paused_sandbox(server: Server) -> None:
    with server.http() as http:
        sid = http.post("/sandboxes", json={"templateID": "base", "timeout": 0}).json()["sandboxID"]
        try:
            ran = http.post(f"/sandboxes/{sid}/exec/run", json={"cmd": "sh", "args": ["-c", SERVE]})
            assert ran.status_code == 200 and ran.json()["exitCode"] == 0, ran.text
            preview = f"{server.url}/preview/{sid}/8080/index.html"
            key = {"X-API-Key": server.key}

            def served() -> bool:
                return httpx.get(preview, headers=key, timeout=10).status_code == 200

            eventually(served, 20, "the server inside never answered")

            def paused_then(use: Callable[[], httpx.Response]) -> httpx.Response:
                answer = http.post(f"/sandboxes/{sid}/pause")
                assert answer.status_code == 200 and answer.json()["status"] == "paused", answer.text
                used = use()
                assert http.get(f"/sandboxes/{sid}").json()["status"] == "running"
                return used

            run = paused_then(
                lambda: http.post(f"/sandboxes/{sid}/exec/run", json={"cmd": "echo", "args": ["x"]})
            )
            assert run.status_code == 200 and run.json()["stdout"] == "x\n"
            session = paused_then(lambda: http.post(f"/sandboxes/{sid}/exec", json={"cmd": "true"}))
            assert session.status_code == 201, session.text
            read = paused_then(
                lambda: http.get(f"/sandboxes/{sid}/files", params={"path": "/tmp/index.html"})
            )
            assert read.status_code == 200 and read.text == "hello\n"
            page = paused_then(lambda: httpx.get(preview, headers=key, timeout=30))
            assert page.status_code == 200 and page.text == "hello\n"

            running = http.post(f"/sandboxes/{sid}/resume")
            assert running.status_code == 409 and "is running" in running.json()["error"]
        finally:
            http.delete(f"/sandboxes/{sid}")
