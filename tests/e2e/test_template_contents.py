"""What the base template holds, in a sandbox on runc through the real server: the user
sandbox (uid 1000) with its workspace, and the tools xgen's document lists. (The go and
gui templates are base plus their packages; gui's desktop is tests/e2e/test_desktop.py's.)"""

from __future__ import annotations

from tests.e2e.conftest import Server

CHECK = r"""
id -u sandbox; id -g sandbox; stat -c '%u %g %F' /home/sandbox/workspace
for tool in curl wget git gcc g++ make vim jq unzip; do command -v "$tool" >/dev/null || echo "missing $tool"; done
"""


def test_base_has_the_user_sandbox_its_workspace_and_the_tools(server: Server) -> None:
    with server.http() as http:
        created = http.post("/sandboxes", json={"templateID": "base"})
        assert created.status_code == 201, created.text
        sid = created.json()["sandboxID"]
        try:
            ran = http.post(f"/sandboxes/{sid}/exec/run", json={"cmd": "bash", "args": ["-c", CHECK]})
            assert ran.status_code == 200, ran.text
            assert ran.json()["exitCode"] == 0, ran.json()
            assert ran.json()["stdout"].splitlines() == ["1000", "1000", "1000 1000 directory"]
        finally:
            http.delete(f"/sandboxes/{sid}")
