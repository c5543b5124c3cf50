"""Resources: what one tenant can make the server hold, promise or leave readable.

- Command output: concurrent ``exec/run`` calls printing far more than the cap keep
  the server's memory bounded, say they were truncated, and the memory comes back.
- Promises: an org asking for the largest disks again and again is refused (409
  naming the setting) before the node has promised more disk than it may; space freed
  inside a sandbox goes back to the host.
- Secrecy: the data dir, the store and the secrets in them are root's alone.
"""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sqlalchemy import make_url

from corral.datadir import MODES
from tests.security.conftest import PROMISED_DISK_MB, SecurityServer, Tenant
from tests.support.conditions import eventually
from tests.support.procfs import status_field

CALLS = 20
PRINTED_MB = 20
LIMIT = 16 << 20  # exec_output_limit's default: bytes kept per stream
# NUL bytes: each is six in the JSON answer ("\u0000"), the costliest output to answer
ANSWER_BYTES = 6 * LIMIT + len('{"exitCode":0,"stdout":"","stderr":"done\\n","truncated":true}')
BYSTANDER_BYTES = 8_000_000  # what the other org prints meanwhile, and must get whole
RSS_BOUND_MB = 400  # over the resting RSS: 128 MiB of one org's share, the answers' pieces (docs/security.md)
RSS_AFTER_MB = 100  # over the resting RSS once the answers are sent
UID_BASE = 100000  # the sandboxes' root on the host (uid_base's default)


def _pid(server: SecurityServer) -> int:
    return int((server.data_dir / "serve.lock").read_text().split()[0])


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    return int(status_field(pid, field)[0]) / 1024


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM starts again from VmRSS


def test_concurrent_floods_of_output_keep_the_server_bounded(
    alpha: Tenant, attacker_box: str, beta: Tenant, bystander_box: str, security_server: SecurityServer
) -> None:
    """Twenty calls at once, each printing 20 MB of NUL bytes: the agent sends at most
    16 MiB of each, the server holds one org's output up to half its budget (the rest is
    dropped: truncated) and writes each JSON answer (six bytes per NUL) as the client
    reads it (written whole, ten such answers took ~1 GB more). The other org, printing
    8 MB meanwhile, gets all of it."""
    pid = _pid(security_server)
    alpha.run(attacker_box, "true")
    before = _rss_mb(pid)
    _reset_peak(pid)
    flood = f"head -c {PRINTED_MB * 1000 * 1000} /dev/zero; echo done >&2"

    def one(_: int) -> tuple[int, bytes, bytes]:
        """The answer's length, its first bytes and its last (not the whole: 100 MB)."""
        size, head, tail = 0, b"", b""
        with alpha.http() as http:
            body = {"cmd": "sh", "args": ["-c", flood], "timeout": 120}
            with http.stream("POST", f"/sandboxes/{attacker_box}/exec/run", json=body, timeout=180) as answer:
                held.wait()  # every flood's output is held, not read yet
                read.wait(120)
                assert answer.status_code == 200, answer.read()
                for chunk in answer.iter_raw():
                    size += len(chunk)
                    head = (head + chunk)[:64] if len(head) < 64 else head
                    tail = (tail + chunk)[-128:]
        return size, head, tail

    held, read = threading.Barrier(CALLS + 1, timeout=120), threading.Event()
    started = time.monotonic()
    with ThreadPoolExecutor(CALLS) as pool:
        floods = [pool.submit(one, i) for i in range(CALLS)]
        held.wait()
        try:  # the other org, while alpha's output is held (no more than its share)
            other = beta.run(bystander_box, f"head -c {BYSTANDER_BYTES} /dev/zero | tr '\\0' y")
        finally:
            read.set()
        answers = [flood.result() for flood in floods]
    took = time.monotonic() - started
    peak = _rss_mb(pid, "VmHWM")
    # what the answers held is given back (a moment after they are sent): the bound is
    # asserted below with what is kept by then
    with contextlib.suppress(AssertionError):
        eventually(lambda: _rss_mb(pid) - before < RSS_AFTER_MB, 10)
    after = _rss_mb(pid)
    print(
        f"\nRSS before {before:.0f} MB, peak {peak:.0f} MB, after {after:.0f} MB; {CALLS} calls in {took:.1f} s"
    )
    for size, head, tail in answers:
        assert head.startswith(b'{"exitCode":0,"stdout":"\\u0000\\u0000')
        assert tail.endswith(b'\\u0000","stderr":"done\\n","truncated":true}')
        assert size <= ANSWER_BYTES
    assert other["stdout"] == "y" * BYSTANDER_BYTES and "truncated" not in other
    assert peak - before < RSS_BOUND_MB, f"peak {peak:.0f} MB from {before:.0f} MB"
    assert after - before < RSS_AFTER_MB, f"kept {after - before:.0f} MB"
    assert beta.run(bystander_box, "echo alive")["stdout"] == "alive\n"
    assert security_server.healthy()


def test_the_data_dir_and_the_store_are_private_to_root(
    security_server: SecurityServer, attacker_box: str
) -> None:
    """The store holds sandboxes' envs in plain text, the data dir the JWT secret, each
    sandbox's dir its disk and root: none of it is readable by another host user; what
    runc's mapped root must pass through is searchable by its group alone."""
    data = security_server.data_dir
    found = {p.name: p.lstat().st_mode & 0o777 for p in data.iterdir()}
    assert (data.stat().st_mode & 0o777, data.stat().st_gid) == (0o710, UID_BASE)
    assert (data / "sandboxes").stat().st_gid == UID_BASE
    expected = {**MODES, "corral.db": 0o600}
    assert {n: oct(m) for n, m in found.items() if n in expected} == {
        n: oct(expected[n]) for n in found if n in expected
    }
    assert {"jwt-secret", "sandboxes", "agent", "templates", "serve.lock"} <= found.keys()
    store = Path(make_url(security_server.database_url).database or "")
    files = [store, *(store.with_name(store.name + t) for t in ("-wal", "-shm"))]
    assert all(oct(f.stat().st_mode & 0o777) == "0o600" for f in files if f.exists()) and store.exists()
    box = data / "sandboxes" / attacker_box
    assert (box.stat().st_mode & 0o777, box.stat().st_uid, box.stat().st_gid) == (0o710, 0, UID_BASE)
    nobody = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "cat",
            str(box / "rootfs/etc/hostname"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert nobody.returncode != 0 and "Permission denied" in nobody.stderr, nobody
    assert {p.name: oct(p.lstat().st_mode & 0o777) for p in box.iterdir() if p.name == "config.json"} == {
        "config.json": "0o600"
    }


LARGEST_DISK_MB = 20480  # max_disk_mb's default


def test_an_org_cannot_promise_the_node_more_disk_than_it_may(
    alpha: Tenant, beta: Tenant, bystander_box: str, security_server: SecurityServer
) -> None:
    made: list[str] = []
    refused = None
    try:
        with alpha.http() as http:
            for _ in range(PROMISED_DISK_MB // LARGEST_DISK_MB + 2):
                answer = http.post("/sandboxes", json={"templateID": "base", "diskMB": LARGEST_DISK_MB})
                if answer.status_code != 201:
                    refused = answer
                    break
                made.append(answer.json()["sandboxID"])
        assert refused is not None, f"{len(made)} sandboxes of {LARGEST_DISK_MB} MiB each were promised"
        assert refused.status_code == 409, refused.text
        assert "max_promised_disk_mb" in refused.json()["error"]
        assert len(made) * LARGEST_DISK_MB <= PROMISED_DISK_MB  # what other tests hold counts too
        assert beta.run(bystander_box, "echo alive")["stdout"] == "alive\n"
    finally:
        for sandbox_id in made:
            alpha.kill(sandbox_id)
    if made:  # the promises went with the sandboxes
        again = beta.create(diskMB=LARGEST_DISK_MB)["sandboxID"]
        beta.kill(again)
    assert security_server.healthy()


def test_space_freed_inside_a_sandbox_goes_back_to_the_host(
    alpha: Tenant, attacker_box: str, security_server: SecurityServer
) -> None:
    image = security_server.data_dir / "sandboxes" / attacker_box / "disk.img"

    def held_mb() -> float:
        return image.stat().st_blocks * 512 / 2**20

    before = held_mb()
    written = alpha.run(attacker_box, "head -c 200000000 /dev/urandom > /root/big && sync && echo ok")
    assert written["stdout"] == "ok\n", written
    full = held_mb()
    assert full - before > 180, f"{before:.0f} MB -> {full:.0f} MB"
    assert alpha.run(attacker_box, "rm /root/big && sync && echo ok")["stdout"] == "ok\n"
    eventually(
        lambda: held_mb() - before < 20,
        10,
        lambda: f"{before:.0f} MB -> {full:.0f} MB -> {held_mb():.0f} MB after the delete",
        0.2,
    )
