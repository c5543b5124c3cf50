"""Builds: a Dockerfile's ``RUN`` steps are a tenant's code, confined like a sandbox.

One template build (``POST /api/templates``, streamed) whose steps attack from inside:
they connect to every address of the host on a port this test listens on (the
security server's bridge address, 127.0.0.1 and the host's other addresses), to the
control plane's port, to link-local 169.254.169.254 and to a listener in the other
org's sandbox; resolve a name the build's egress does not allow; read their
``NoNewPrivs`` and cgroup paths (their own namespace: ``/``); make a nested user
namespace (a sandbox's seccomp refuses it); fork until refused and hold the processes
(meanwhile the host, the server and the other org's sandbox are checked); and allocate
memory until killed.
Every attempt must fail, and no listener may see a connection. Then Dockerfiles that
would make buildah itself reach the host from the host's side (``ADD <url>``, ``FROM``,
``COPY --from=`` or ``RUN --mount=from=`` of a "registry" at the host's address, a
cache mount shared by every build): each build fails naming the line, nothing connects.

The server's build limits are set small for this (tests/security/conftest.py: 512 MB,
256 processes).
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import secrets
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from corral.runtime import cgroups, mounts
from tests.security.conftest import SecurityServer, Tenant

MEMORY_MB = 512  # CORRAL_BUILD_MEMORY_MB of the security server
PIDS = 256  # CORRAL_BUILD_PIDS_LIMIT
BYSTANDER_PORT = 18765


class Listener:
    """TCP listeners on one port of every given address; who connected."""

    def __init__(self, addresses: list[str]) -> None:
        self.seen: list[tuple[str, Any]] = []
        self.addresses: list[str] = []
        self._sockets: list[socket.socket] = []
        self.port = 0
        for address in addresses:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, self.port))
            except OSError:  # gone meanwhile (another test's bridge)
                sock.close()
                continue
            self.port = sock.getsockname()[1]
            self.addresses.append(address)
            sock.listen(16)
            sock.settimeout(0.2)
            self._sockets.append(sock)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            for sock in self._sockets:
                try:
                    conn, peer = sock.accept()
                except OSError:
                    continue
                self.seen.append((sock.getsockname()[0], peer))
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for sock in self._sockets:
            sock.close()


def _host_addresses() -> list[str]:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=True)
    return sorted(set(re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out.stdout)))


def _bridge_addresses(server: SecurityServer) -> list[str]:
    bridge = server.env["CORRAL_NETWORK_BRIDGE"]
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", bridge], capture_output=True, text=True, check=True
    )
    return re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", out.stdout)


@pytest.fixture
def host_listener(security_server: SecurityServer) -> Iterator[Listener]:
    listener = Listener(_host_addresses())
    yield listener
    listener.close()


@pytest.fixture
def bystander_listener(beta: Tenant, bystander_box: str) -> Iterator[str]:
    """A TCP listener in the other org's sandbox (it logs who connects to
    /tmp/build-probe.log); its address."""
    code = f"""
import os, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {BYSTANDER_PORT})); s.listen(16); s.settimeout(180)
open("/tmp/build-probe.log", "w").close()
child = os.fork()
if child == 0:
    os.setsid()
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    while True:
        try:
            conn, peer = s.accept()
        except OSError:
            os._exit(0)
        with open("/tmp/build-probe.log", "a") as log:
            log.write(f"{{peer}}\\n")
        conn.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.connect(("10.0.0.1", 9))
print(child, u.getsockname()[0])
"""
    result = beta.python(bystander_box, code)
    assert result["exitCode"] == 0, result
    child, address = result["stdout"].split()
    yield address
    beta.run(bystander_box, f"kill {child}")


def _dockerfile(targets: list[tuple[str, str, int]]) -> str:
    return f"""FROM base
# {secrets.token_hex(8)}: a new text, so it is built (not found built)
RUN grep NoNewPrivs /proc/self/status; sed 's/^/CGROUP /' /proc/self/cgroup
RUN python3 <<'EOF'
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
print("SYSCALL unshare-user", libc.unshare(0x10000000), ctypes.get_errno(), flush=True)
EOF
RUN python3 <<'EOF'
import socket
for name, host, port in {targets!r}:
    try:
        socket.create_connection((host, port), timeout=3).close()
        print("PROBE", name, "CONNECTED", flush=True)
    except OSError as exc:
        print("PROBE", name, "BLOCKED", type(exc).__name__, flush=True)
try:
    socket.getaddrinfo("not-allowed.corral-test.example", 80)
    print("PROBE dns-not-allowed CONNECTED", flush=True)
except OSError as exc:
    print("PROBE dns-not-allowed BLOCKED", exc, flush=True)
EOF
RUN python3 <<'EOF'
import os, time
kids = []
try:
    while len(kids) < 4 * {PIDS}:
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        kids.append(pid)
    print("BOMB UNBOUNDED", len(kids), flush=True)
except OSError as exc:
    print("BOMB BOUNDED", len(kids), exc.strerror, flush=True)
print("BOMB HOLDING", flush=True)
time.sleep(8)
for pid in kids:
    os.kill(pid, 9)
for pid in kids:
    os.waitpid(pid, 0)
print("BOMB DONE", flush=True)
EOF
RUN python3 <<'EOF' || echo "MEM KILLED $?"
chunks = []
for i in range(4 * {MEMORY_MB} // 32):
    chunks.append(b"x" * (32 << 20))
    print("MEM", (i + 1) * 32, flush=True)
print("MEM UNBOUNDED", flush=True)
EOF
"""


def _stream_build(tenant: Tenant, name: str, dockerfile: str, lines: queue.Queue[str | None]) -> None:
    """POST /templates as an event stream: each log line into ``lines``, then the
    ``result``/``error`` event as ``EVENT <kind> <data>``, then None."""
    try:
        with (
            tenant.http() as http,
            http.stream(
                "POST",
                "/templates",
                json={"name": name, "dockerfile": dockerfile},
                headers={"Accept": "text/event-stream"},
                timeout=600,
            ) as answer,
        ):
            kind = ""
            for line in answer.iter_lines():
                if line.startswith("event: "):
                    kind = line[len("event: ") :]
                elif line.startswith("data: "):
                    data = json.loads(line[len("data: ") :])
                    lines.put(data["message"] if kind == "build_log" else f"EVENT {kind} {data}")
    finally:
        lines.put(None)


def test_build_steps_are_confined_like_a_sandbox(
    security_server: SecurityServer,
    alpha: Tenant,
    beta: Tenant,
    bystander_box: str,
    host_listener: Listener,
    bystander_listener: str,
    unnoticed: Callable[[], None],
) -> None:
    port = host_listener.port
    control_port = int(security_server.url.rsplit(":", 1)[1])
    bridge = _bridge_addresses(security_server)
    assert bridge, "the security server's bridge has no address"
    assert set(bridge) <= set(host_listener.addresses)
    targets = [(f"host-{a}", a, port) for a in host_listener.addresses]
    targets += [(f"control-plane-{a}", a, control_port) for a in [*bridge, "127.0.0.1"]]
    targets += [
        ("link-local", "169.254.169.254", 80),
        ("other-org-sandbox", bystander_listener, BYSTANDER_PORT),
    ]
    name = f"sec-build-{secrets.token_hex(3)}"
    lines: queue.Queue[str | None] = queue.Queue()
    builder = threading.Thread(
        target=_stream_build, args=(alpha, name, _dockerfile(targets), lines), daemon=True
    )
    builder.start()
    log: list[str] = []
    try:
        while (line := lines.get(timeout=600)) is not None:
            log.append(line)
            if line.startswith("BOMB HOLDING"):  # the processes are there: is anyone else hurt?
                unnoticed()
                assert subprocess.run(["true"], check=False, timeout=10).returncode == 0
        builder.join(timeout=30)
        text = "\n".join(log)

        probes = dict(re.findall(r"^PROBE (\S+) (\w+)", text, re.MULTILINE))
        expected = {t[0] for t in targets} | {"dns-not-allowed"}
        assert set(probes) == expected, text
        assert {k: v for k, v in probes.items() if v != "BLOCKED"} == {}, text
        assert host_listener.seen == []
        assert beta.run(bystander_box, "cat /tmp/build-probe.log")["stdout"] == ""

        assert re.search(r"^NoNewPrivs:\s+1$", text, re.MULTILINE), text
        cgroup_lines = re.findall(r"^CGROUP .*$", text, re.MULTILINE)
        assert cgroup_lines and all(line.endswith(":/") for line in cgroup_lines), text  # its own namespace
        calls = dict(re.findall(r"^SYSCALL (\S+) (-?\d+ \d+)$", text, re.MULTILINE))
        assert calls == {"unshare-user": "-1 1"}, text  # EPERM: a sandbox's seccomp
        bomb = re.search(r"^BOMB (BOUNDED|UNBOUNDED) (\d+)", text, re.MULTILINE)
        assert bomb is not None and bomb.group(1) == "BOUNDED", text
        assert int(bomb.group(2)) <= PIDS
        assert "BOMB DONE" in text
        assert re.search(r"^MEM KILLED 137$", text, re.MULTILINE), text
        assert not re.search(r"^MEM UNBOUNDED", text, re.MULTILINE), text
        grabbed = [int(m) for m in re.findall(r"^MEM (\d+)$", text, re.MULTILINE)]
        assert max(grabbed, default=0) <= MEMORY_MB
        assert any(line.startswith("EVENT result") for line in log), text  # the build itself went on
        home = security_server.data_dir / "builder"
        node = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]
        assert cgroups.names(f"corral-builds/{node}") == set()  # the build's cgroup is gone
        assert not mounts.under(home / "sysfs")  # and the sysfs of its network
        unnoticed()
    finally:
        with alpha.http() as http:
            http.delete(f"/templates/{name}")


def test_the_builder_fetches_nothing_a_dockerfile_names_from_the_host(
    security_server: SecurityServer, alpha: Tenant, host_listener: Listener, unnoticed: Callable[[], None]
) -> None:
    """``ADD <url>`` and pulls are made by buildah on the host's side: a URL on the host, an
    image of a registry at the bridge's address or on loopback, a cache dir shared by
    every build. Each build fails, naming the line, and nothing connects."""
    bridge = _bridge_addresses(security_server)[0]
    port = host_listener.port
    attacks = [
        f"FROM base\nADD http://{bridge}:{port}/secret /secret\n",
        f"FROM base\nADD http://127.0.0.1:{port}/secret /secret\n",
        f"FROM {bridge}:{port}/evil/image\n",
        f"FROM base\nCOPY --from=127.0.0.1:{port}/evil/image /etc/passwd /x\n",
        f"FROM base\nRUN --mount=type=bind,from=localhost:{port}/x,target=/x true\n",
        "FROM base\nRUN --mount=type=cache,id=shared,target=/cache touch /cache/poison\n",
    ]
    name = f"sec-fetch-{secrets.token_hex(3)}"
    try:
        with alpha.http() as http:
            for dockerfile in attacks:
                answer = http.post("/templates", json={"name": name, "dockerfile": dockerfile})
                assert answer.status_code == 201, answer.text
                built = answer.json()
                assert built["status"] == "failed", (dockerfile, built)
                assert re.match(r"dockerfile: line \d: ", built["error"]), built["error"]
    finally:
        with alpha.http() as http:
            http.delete(f"/templates/{name}")
    assert host_listener.seen == []
    unnoticed()
