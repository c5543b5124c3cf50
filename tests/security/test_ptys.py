"""PTYs: a sandbox cannot use up the kernel's pseudo-terminals.

Each sandbox has its own devpts instance with ``max=`` ``Settings.pty_max`` (256 by
default), and every devpts instance but the host's is held out of the kernel's
reserve (``kernel.pty.reserve``), so the host can always open PTYs (docs/security.md,
"PTYs"). The attack: a sandbox opens /dev/ptmx until it fails and keeps them open.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable, Iterator

import pytest

from tests.security.conftest import Tenant
from tests.support.conditions import eventually

PTY_MAX = 256  # the server's setting: the default

# Opens /dev/ptmx until it fails, writes how many and why to /tmp/ptys, holds them.
HOLD = textwrap.dedent(
    """
    import os, time
    fds, why = [], "never failed"
    try:
        while len(fds) < 10000:
            fds.append(os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY))
    except OSError as exc:
        why = exc.strerror
    with open("/tmp/ptys.tmp", "w") as f:
        f.write(f"{len(fds)} {why}")
    os.rename("/tmp/ptys.tmp", "/tmp/ptys")
    time.sleep(600)
    """
)


@pytest.fixture
def pty_hog(alpha: Tenant) -> Iterator[tuple[str, str]]:
    """A sandbox of its own holding every PTY it can open: its id and what the holder
    wrote (the count, and the error that stopped it)."""
    sandbox_id = str(alpha.create(timeout=600)["sandboxID"])
    try:
        alpha.run(sandbox_id, f"cat > /tmp/hold.py <<'EOF'\n{HOLD}\nEOF")
        started = alpha.run(
            sandbox_id, "setsid python3 /tmp/hold.py </dev/null >/dev/null 2>&1 & echo started"
        )
        assert started["stdout"].strip() == "started", started

        def report() -> str:
            return str(alpha.run(sandbox_id, "cat /tmp/ptys 2>/dev/null")["stdout"])

        eventually(report, 30, "the holder wrote no report", 0.2)
        yield sandbox_id, report()
    finally:
        alpha.kill(sandbox_id)


def test_a_sandbox_cannot_use_up_the_ptys(
    pty_hog: tuple[str, str], alpha: Tenant, beta: Tenant, bystander_box: str, unnoticed: Callable[[], None]
) -> None:
    hog, report = pty_hog
    count, _, why = report.partition(" ")
    assert (count, why) == (str(PTY_MAX), "No space left on device"), report

    # the hog's own API PTY comes from the same devpts instance: refused, and clearly
    with alpha.http() as http:
        refused = http.post(f"/sandboxes/{hog}/pty", json={"cols": 80, "rows": 24})
    assert refused.status_code == 409, refused.text
    assert refused.json() == {"error": "pty: no pseudo-terminal is free (close one first)"}

    # another org's sandbox still gets one, numbered in its own instance
    with beta.http() as http:
        made = http.post(f"/sandboxes/{bystander_box}/pty", json={"cols": 80, "rows": 24})
        assert made.status_code == 201, made.text
        session = made.json()["sessionID"]
        try:
            listed = beta.run(bystander_box, "ls /dev/pts")["stdout"].split()
            assert "ptmx" in listed and len(listed) < 10, listed
        finally:
            assert http.delete(f"/sandboxes/{bystander_box}/pty/{session}").status_code == 204

    # and so does the host
    master, slave = os.openpty()
    os.close(master)
    os.close(slave)
    unnoticed()
