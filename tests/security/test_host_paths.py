"""Host-side code never follows a path inside a template or a sandbox tree (issue 9, items
1, 5 and 14): attacks through links and FIFOs a tenant plants where corral's host side
writes as root.

Each attack plants its links at a host directory the test made (``/var/tmp/corral-
hostpaths-*``, invisible to the sandboxes) and asserts it is byte-for-byte untouched,
that the operation corral does there (build, create, wake, fork, restore) completes
within seconds, and that the other org did not notice.
"""

from __future__ import annotations

import concurrent.futures
import functools
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.errors import InvalidInput
from corral.runtime.builder import _settle
from tests.security.conftest import Tenant
from tests.support.conditions import eventually

pytestmark = pytest.mark.integration

HOST_FILES = {"hostname": "the host\n", "hosts": "10.9.9.9 host\n", "resolv.conf": "nameserver 10.9.9.9\n"}
ETC_NAMES = ("hostname", "hosts", "resolv.conf")


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """A host directory standing for /etc: every test asserts it is left as it was."""
    path = Path(f"/var/tmp/corral-hostpaths-{secrets.token_hex(4)}")
    path.mkdir(mode=0o755)
    for name, text in HOST_FILES.items():
        (path / name).write_text(text)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def untouched(host_dir: Path) -> None:
    found = {p.name: p.read_text() for p in host_dir.iterdir()}
    assert found == HOST_FILES, f"the host directory changed: {found}"
    assert all((host_dir / name).stat().st_uid == 0 for name in HOST_FILES)


def checkpoint(tenant: Tenant, sandbox_id: str, name: str) -> str:
    """A checkpoint of the sandbox, once it is ready; its id."""
    with tenant.http() as http:
        made = http.post(f"/sandboxes/{sandbox_id}/checkpoints", json={"name": name})
        assert made.status_code == 201, made.text

        def status() -> str:
            listed = {c["id"]: c for c in http.get(f"/sandboxes/{sandbox_id}/checkpoints").json()}
            return str(listed[made.json()["id"]]["status"])

        eventually(lambda: status() != "processing", 30, "the checkpoint stayed processing", 0.1)
        assert status() == "ready"
    return str(made.json()["id"])


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    return fn(), time.monotonic() - started


# -- item 1: a template whose /etc is a link to a host directory ---------------------


def test_a_copied_out_root_whose_etc_links_to_the_host_is_refused(tmp_path: Path, host_dir: Path) -> None:
    """The root exactly as the builder's copy-out leaves it (``cp -a`` of the image):
    ``/etc`` a link to the host, ``/opt`` too; the step after the copy-out refuses it
    naming the path, and writes nothing through the link."""
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr" / "bin").mkdir(parents=True)
    (rootfs / "usr" / "bin" / "python3.11").write_text("")
    (rootfs / "usr" / "bin" / "python3").symlink_to("python3.11")
    (rootfs / "etc").symlink_to(host_dir)
    with pytest.raises(InvalidInput, match=r"the image's /etc is a symbolic link") as refused:
        _settle(rootfs, 100000, 65536, time.monotonic() + 60)
    assert refused.value.field == "dockerfile" and str(host_dir) not in refused.value.message
    untouched(host_dir)

    (rootfs / "etc").unlink()
    (rootfs / "etc").mkdir()
    (rootfs / "opt").symlink_to(host_dir)
    with pytest.raises(InvalidInput, match=r"the image's /opt is a symbolic link"):
        _settle(rootfs, 100000, 65536, time.monotonic() + 60)
    untouched(host_dir)
    assert not (host_dir / "corral").exists()


def test_a_dockerfile_whose_etc_links_to_the_host_fails_its_build_and_writes_nothing(
    alpha: Tenant, host_dir: Path, unnoticed: Callable[[], None]
) -> None:
    """The attack of issue 9 item 1, through the API: a multi-stage ``COPY --from``
    makes the image's /etc a link to a host directory. The build fails, saying why; the
    host directory is untouched."""
    name = f"hp-etc-{secrets.token_hex(3)}"
    dockerfile = (
        f"FROM base AS evil\nRUN mkdir -p /x && ln -s {host_dir} /x/etc\nFROM base\nCOPY --from=evil /x/ /\n"
    )
    with alpha.http() as http:
        built = http.post("/templates", json={"name": name, "dockerfile": dockerfile}, timeout=600)
        assert built.status_code in (200, 201), built.text
        assert built.json()["status"] == "failed", built.json()
        assert "the image's /etc is a symbolic link" in built.json()["error"]
        untouched(host_dir)
        created = http.post("/sandboxes", json={"templateID": name})
        assert created.status_code in (400, 404, 409), created.text
        http.delete(f"/templates/{name}")
    untouched(host_dir)
    unnoticed()


# -- item 14: FROM one's own Dockerfile template --------------------------------------


def test_from_ones_own_dockerfile_template_builds_and_runs(
    alpha: Tenant, unnoticed: Callable[[], None]
) -> None:
    """``FROM`` a template built from a Dockerfile (it answered 500: the first build's
    per-sandbox files were owned by the host's root, outside the range the import maps)."""
    first, second = f"hp-one-{secrets.token_hex(3)}", f"hp-two-{secrets.token_hex(3)}"
    with alpha.http() as http:
        try:
            one = http.post(
                "/templates",
                json={"name": first, "dockerfile": "FROM base\nRUN echo one > /one.txt\n"},
                timeout=600,
            )
            assert one.status_code in (200, 201) and one.json()["status"] == "ready", one.text
            text = f"FROM {first}\nRUN cat /one.txt > /two.txt && stat -c %u:%g /etc/hostname /opt/corral >> /two.txt\n"
            two = http.post("/templates", json={"name": second, "dockerfile": text}, timeout=600)
            assert two.status_code in (200, 201) and two.json()["status"] == "ready", two.text
            box = alpha.create(templateID=second, timeout=600)["sandboxID"]
            result = alpha.run(box, "cat /two.txt; stat -c %U:%G /etc/hostname /etc/hosts /opt/corral")
            assert result["exitCode"] == 0, result
            assert result["stdout"] == "one\n0:0\n0:0\nroot:root\nroot:root\nroot:root\n", result
            alpha.kill(box)
        finally:
            http.delete(f"/templates/{second}")
            http.delete(f"/templates/{first}")
    unnoticed()


# -- item 5: FIFOs where corral writes at wake and fork --------------------------------

PLANT_FIFOS = "cd /etc && for n in hostname hosts resolv.conf; do rm -f $n .$n.corral-new; mkfifo $n .$n.corral-new; done"


def test_fifos_in_etc_do_not_hold_a_wake_or_a_fork(
    alpha: Tenant, beta: Tenant, unnoticed: Callable[[], None]
) -> None:
    """A sandbox plants FIFOs at every name corral writes in its /etc and at the temp
    names it used: its wake and its fork complete within seconds (they blocked a server
    thread for ever), and meanwhile another org's create goes on."""
    boxes = [alpha.create(timeout=600)["sandboxID"] for _ in range(2)]
    for box in boxes:
        assert alpha.run(box, PLANT_FIFOS + " && test -p /etc/resolv.conf")["exitCode"] == 0

    def wake(box: str) -> httpx.Response:
        with alpha.http() as http:
            return http.post(f"/sandboxes/{box}/wake", timeout=60)

    with alpha.http() as http, concurrent.futures.ThreadPoolExecutor(4) as pool:
        for box in boxes:
            assert http.post(f"/sandboxes/{box}/hibernate").status_code == 200
        wakes = [pool.submit(timed, functools.partial(wake, box)) for box in boxes]
        other = pool.submit(timed, lambda: beta.create(timeout=60))
        for waking in wakes:
            answer, took = waking.result(timeout=90)
            assert answer.status_code == 200 and answer.json()["status"] == "running", answer.text
            assert took < 20, f"a wake took {took:.1f} s"
        created, took = other.result(timeout=90)
        assert took < 30, f"the other org's create took {took:.1f} s"
        beta.kill(created["sandboxID"])
    for box in boxes:
        result = alpha.run(box, "test -f /etc/resolv.conf && cat /etc/resolv.conf")
        assert result["exitCode"] == 0 and result["stdout"].startswith("nameserver"), result

    # the fork rewrites /etc/hostname and /etc/hosts too: plant them again first
    assert alpha.run(boxes[0], PLANT_FIFOS)["exitCode"] == 0
    cp = checkpoint(alpha, boxes[0], "fifos")
    with alpha.http() as http:
        forked, took = timed(
            lambda: http.post(f"/sandboxes/from-checkpoint/{cp}", json={"timeout": 600}, timeout=60)
        )
    assert forked.status_code == 201 and took < 20, (forked.text, took)
    fork = forked.json()["sandboxID"]
    alpha.made.append(fork)
    assert alpha.run(fork, "cat /etc/hostname")["stdout"] == f"{fork}\n"
    for box in (*boxes, fork):
        alpha.kill(box)
    unnoticed()


# -- a link in the upper layer where checkpoints, restore, fork and wake write -------


def test_links_planted_in_etc_are_replaced_never_followed(
    alpha: Tenant, host_dir: Path, unnoticed: Callable[[], None]
) -> None:
    box = alpha.create(timeout=600)["sandboxID"]
    plant = " && ".join(
        f"ln -sfn {host_dir}/{n} /etc/{n} && ln -sfn {host_dir}/{n} /etc/.{n}.corral-new" for n in ETC_NAMES
    )
    assert alpha.run(box, plant)["exitCode"] == 0
    cp = checkpoint(alpha, box, "links")
    with alpha.http() as http:
        forked = http.post(f"/sandboxes/from-checkpoint/{cp}", json={"timeout": 600}, timeout=60)
        assert forked.status_code == 201, forked.text
        fork = forked.json()["sandboxID"]
        alpha.made.append(fork)
        untouched(host_dir)
        result = alpha.run(fork, "cat /etc/hostname; test -L /etc/hostname || echo replaced")
        assert result["stdout"] == f"{fork}\nreplaced\n", result

        restored = http.post(f"/sandboxes/{box}/checkpoints/{cp}/restore", timeout=60)
        assert restored.status_code == 200, restored.text
        untouched(host_dir)
        assert alpha.run(box, "test -f /etc/resolv.conf && ! test -L /etc/resolv.conf")["exitCode"] == 0

        # the sandbox's whole /etc a link to the host: a wake writes nothing through it
        assert alpha.run(box, f"rm -rf /etc; ln -s {host_dir} /etc")["exitCode"] == 0
        assert http.post(f"/sandboxes/{box}/hibernate").status_code == 200
        woke, took = timed(lambda: http.post(f"/sandboxes/{box}/wake", timeout=60))
        assert took < 20, took
        untouched(host_dir)
        assert woke.status_code == 200, woke.text
    for sandbox_id in (box, fork):
        alpha.kill(sandbox_id)
    unnoticed()
