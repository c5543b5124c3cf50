"""The model key's path (docs/security.md, "Model access"): it reaches the model API
from corral's host and appears nowhere a sandbox or a client can read: not in the
sandbox's files or processes' environments, not in any answer of the API, the audit
trail, /metrics or the server's log; the sandbox holds only its binding's URL and a
token of its own, which never reaches the upstream. Calls are metered per org."""

from __future__ import annotations

import base64
import re

import httpx
import pytest
from opencomputer import Sandbox

from tests.agents.conftest import KEY, Server
from tests.agents.test_python_sdk import Events, turns
from tests.support.fake_anthropic import Text, Turn

pytestmark = pytest.mark.integration
# Run inside the sandbox: every file (but /proc, /sys, /dev; with FILES set) and every
# process's environment and command line, searched for the key given in base64 (so the
# search's own command line does not hold it); prints what holds it, then "searched".
SEARCH = """
import base64, os
key = base64.b64decode(os.environ["KEY_B64"])


def holds(path):
    with open(path, "rb") as f:
        tail = b""
        while chunk := f.read(1 << 20):
            if key in tail + chunk:
                return True
            tail = chunk[-len(key):]
    return False


for top, dirs, files in os.walk("/" if os.environ.get("FILES") else "/nonexistent"):
    if top == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for name in files:
        path = os.path.join(top, name)
        try:
            if os.path.isfile(path) and not os.path.islink(path) and holds(path):
                print(path)
        except OSError:
            pass
for pid in filter(str.isdigit, os.listdir("/proc")):
    for part in ("environ", "cmdline"):
        try:
            if holds(f"/proc/{pid}/{part}"):
                print(pid, part)
        except OSError:
            pass
print("searched")
"""


async def test_the_key_stays_outside_the_sandbox_and_every_answer(agents: Server, sandbox: Sandbox) -> None:
    fake = agents.script(Turn([Text("Nothing to see.")]))
    events = Events()
    session = events.follow(
        await sandbox.agent.start(prompt="Say something", on_event=events.on_event, on_error=events.on_error)
    )
    await events.until(turns(1), "the turn")
    sid = sandbox.sandbox_id

    # inside: the runner's environment has the binding's URL and the sandbox's token
    environ = await sandbox.exec.run("cat /proc/[0-9]*/environ | tr '\\0' '\\n' | grep ^ANTHROPIC_ | sort -u")
    found = dict(line.split("=", 1) for line in environ.stdout.split())
    assert re.fullmatch(r"http://10\.227\.0\.1:\d+/[\w-]{32}/model-api", found["ANTHROPIC_BASE_URL"]), found
    token = found["ANTHROPIC_API_KEY"]
    assert token.startswith("corral-sandbox-") and token != KEY
    # ... and the key in no file and no process's environment
    hidden = {"SEARCH": SEARCH, "KEY_B64": base64.b64encode(KEY.encode()).decode(), "FILES": "1"}
    search = await sandbox.exec.run('python3 -c "$SEARCH"', env=hidden, timeout=120)
    assert search.stdout == "searched\n", search.stdout
    control = {"SEARCH": SEARCH, "KEY_B64": base64.b64encode(token.encode()).decode()}  # the search finds
    assert "environ" in (await sandbox.exec.run('python3 -c "$SEARCH"', env=control)).stdout

    # at the upstream: the key, never the sandbox's token
    assert fake.received and {r.headers["x-api-key"] for r in fake.received} == {KEY}
    assert all(token not in str(r.headers) for r in fake.received)

    # nothing a client reads holds it
    async with agents.http() as api, httpx.AsyncClient(base_url=agents.url, timeout=30) as bare:
        answers = [
            await api.get("/sandboxes"),
            await api.get(f"/sandboxes/{sid}"),
            await api.get(f"/sandboxes/{sid}/agent"),
            await api.get(f"/sandboxes/{sid}/exec"),
            await api.get(f"/sandboxes/{sid}/audit"),
            await api.get("/audit"),
            await bare.get("/metrics"),
        ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert KEY not in answer.text, answer.url
    assert "model_called" in answers[4].text and '"via": "sandbox"' in answers[4].text.replace('":"', '": "')
    metrics = answers[-1].text
    assert re.search(r'corral_model_requests_total\{org="[^"]+",status="200",via="sandbox"\} [1-9]', metrics)
    assert re.search(r'corral_model_output_tokens_total\{org="[^"]+",via="sandbox"\} [1-9]', metrics)
    assert KEY not in agents.log.read_text()
    await session.kill()
    await session.close()
