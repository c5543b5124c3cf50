"""Network, DNS: one org cannot take the sandboxes' resolver from another (issue 9,
item 6).

The attack: nine sandboxes of org alpha flood the resolver on the bridge address with
queries for names whose upstream never answers (``dns_upstream.SILENT``), each one
far beyond what it may have outstanding or send a second. Before the bounds of
``corral/network/quota.py``, 64 such queries per sandbox held the node's 512 slots
for two seconds each, and every other sandbox's query was dropped: another org got 0
answers of 14. Meanwhile org beta's sandbox asks for names that do answer
(``dns_upstream.ANSWERED``) and must get every answer, quickly; alpha's sandboxes get
REFUSED at once beyond their bounds (nothing queued), and the server stays healthy.

The sandboxes run python3 (no dig in the base template): the queries are raw DNS over
UDP to the nameserver of their resolv.conf, the bridge address, and nowhere else.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.security.conftest import Tenant
from tests.security.dns_upstream import ADDRESS, ANSWERED, SILENT, DnsUpstream

FLOODERS = 9  # > 512 / 64: enough to fill the node's slots as they were
FLOOD_SECONDS = 10
FLOOD_RATE = 500  # queries a second per sandbox (the bounds: 100 a second, 32 outstanding)
PROBES = 20

# Shared by both scripts: a raw query for a name, the nameserver of resolv.conf.
_DNS = r"""
import json, os, random, select, socket, struct, sys, time

def query(ident, name):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", 1, 1)

def nameserver():
    for line in open("/etc/resolv.conf"):
        fields = line.split()
        if fields[:1] == ["nameserver"]:
            return fields[1]
    sys.exit("no nameserver")

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.connect((nameserver(), 53))
"""

FLOOD = (
    _DNS
    + r"""
seconds, rate, zone = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
sock.setblocking(False)
rcodes, sent, start = {}, 0, time.monotonic()
tag = "%x" % random.getrandbits(32)
while time.monotonic() - start < seconds:
    due = int((time.monotonic() - start) * rate)
    while sent < due:
        try:
            sock.send(query(sent & 0xFFFF, "%s-%d.%s" % (tag, sent, zone)))
        except BlockingIOError:
            pass
        sent += 1
    while True:
        try:
            reply = sock.recv(4096)
        except (BlockingIOError, ConnectionRefusedError):
            break
        rcode = str(reply[3] & 0xF)
        rcodes[rcode] = rcodes.get(rcode, 0) + 1
    select.select([sock], [], [], 0.002)
print(json.dumps({"sent": sent, "rcodes": rcodes}))
"""
)

PROBE = (
    _DNS
    + r"""
delay, count, zone = float(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
time.sleep(delay)
results = []
for i in range(count):
    ident = random.getrandbits(16)
    started = time.monotonic()
    sock.send(query(ident, "probe-%d.%s" % (i, zone)))
    sock.settimeout(3.0)
    answer = None
    try:
        while answer is None:
            reply = sock.recv(4096)
            if reply[:2] == struct.pack("!H", ident):
                answer = reply
    except socket.timeout:
        pass
    elapsed = time.monotonic() - started
    if answer is None:
        results.append({"rcode": None, "seconds": elapsed})
    else:
        address = ".".join(str(b) for b in answer[-4:]) if struct.unpack("!H", answer[6:8])[0] else None
        results.append({"rcode": answer[3] & 0xF, "address": address, "seconds": elapsed})
    time.sleep(0.2)
print(json.dumps(results))
"""
)


def _python(tenant: Tenant, sandbox_id: str, script: str, *args: object) -> Any:
    """Run ``script`` with ``args`` in the sandbox; its last stdout line as JSON."""
    call = f"import sys; sys.argv = ['x', {', '.join(repr(str(a)) for a in args)}]\n{script}"
    result = tenant.python(sandbox_id, call, timeout=FLOOD_SECONDS + 60)
    assert result["exitCode"] == 0, result
    return json.loads(result["stdout"].strip().splitlines()[-1])


def test_a_flooding_org_does_not_take_dns_from_another(
    alpha: Tenant,
    beta: Tenant,
    bystander_box: str,
    dns_upstream: DnsUpstream,
    unnoticed: Callable[[], None],
) -> None:
    with ThreadPoolExecutor(max_workers=FLOODERS + 1) as pool:
        flooders = list(pool.map(lambda _: str(alpha.create(timeout=600)["sandboxID"]), range(FLOODERS)))
        try:
            silent_before = dns_upstream.silent
            floods = [
                pool.submit(_python, alpha, box, FLOOD, FLOOD_SECONDS, FLOOD_RATE, SILENT) for box in flooders
            ]
            probes = _python(beta, bystander_box, PROBE, 3, PROBES, ANSWERED)
            reports = [flood.result() for flood in floods]
        finally:
            list(pool.map(alpha.kill, flooders))

    # the attack happened: the flood reached the upstream and met the bounds
    assert dns_upstream.silent - silent_before >= 128, dns_upstream.silent
    assert all(report["sent"] >= FLOOD_RATE * FLOOD_SECONDS // 2 for report in reports), reports
    refused = sum(report["rcodes"].get("5", 0) for report in reports)
    assert refused > FLOODERS * 100, f"alpha's excess must be REFUSED at once: {reports}"
    # beyond twice its rate (200 a second, 400 at once) the kernel drops a sandbox's
    # packets before the resolver sees them (nftables, the dnsrate set)
    seen = [sum(report["rcodes"].values()) for report in reports]
    assert max(seen) < 1.25 * (200 * FLOOD_SECONDS + 400), reports
    # the other org got its answers, quickly
    answered = [p for p in probes if p["rcode"] == 0 and p["address"] == ADDRESS]
    assert len(answered) >= PROBES - 1, probes
    latencies = [p["seconds"] for p in answered]
    assert statistics.median(latencies) < 0.25 and max(latencies) < 2.0, latencies
    unnoticed()
