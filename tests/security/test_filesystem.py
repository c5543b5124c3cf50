"""Filesystem: no path, symlink or hardlink a sandbox makes reaches the host's files or
another sandbox's, through the files API or from inside.

The host holds canaries the attacker knows the paths of (a secret file and a directory
under ``/var/tmp``, and the server's data dir with the other org's sandbox root and the
JWT secret). The attacker plants symlinks to them (absolute, relative, through
``/proc/1/root`` and ``/proc/self/root``) and uses the files API on those paths and on
``..`` paths. Every read must miss (404, or the sandbox's own file), every write must
land inside the sandbox, and the canaries must be as they were. The files API is
served by the agent inside the sandbox's mount namespace, so a link resolves there.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from corral.agent.wire import AGENT_FILE
from tests.security.conftest import SecurityServer, Tenant

SECRET = f"corral-host-secret-{secrets.token_hex(8)}"
CANARY = Path("/var/tmp/corral-security-fs-canary")
CANARY_DIR = Path("/var/tmp/corral-security-fs-canary.d")


@pytest.fixture(scope="module")
def host(security_server: SecurityServer, bystander_box: str) -> Iterator[dict[str, Path]]:
    """The host paths the attacker aims at (all absolute host paths)."""
    CANARY.write_text(SECRET)
    CANARY_DIR.mkdir(exist_ok=True)
    (CANARY_DIR / "inside").write_text(SECRET)
    paths = {
        "canary": CANARY,
        "canary_dir": CANARY_DIR,
        "bystander_root": security_server.data_dir / "sandboxes" / bystander_box / "rootfs",
        "jwt_secret": security_server.data_dir / "jwt-secret",
    }
    yield paths
    CANARY.unlink(missing_ok=True)
    for child in CANARY_DIR.iterdir():
        child.unlink()
    CANARY_DIR.rmdir()


@pytest.fixture(scope="module")
def planted(alpha: Tenant, attacker_box: str, host: dict[str, Path]) -> None:
    """The attacker's links, made from inside its sandbox."""
    links = {
        "/root/abs": host["canary"],
        "/root/absdir": host["canary_dir"],
        "/root/up": "../../../../../../../..",
        "/root/p1": "/proc/1/root",
        "/root/pself": "/proc/self/root",
        "/root/peer": host["bystander_root"],
        "/root/jwt": host["jwt_secret"],
        "/root/sysrq": "/proc/sysrq-trigger",
    }
    script = " && ".join(f"ln -sfn {target} {link}" for link, target in links.items())
    result = alpha.run(attacker_box, script)
    assert result["exitCode"] == 0, result


def _host_intact(host: dict[str, Path]) -> None:
    assert CANARY.read_text() == SECRET and not CANARY.is_symlink()
    assert sorted(p.name for p in CANARY_DIR.iterdir()) == ["inside"]
    assert (CANARY_DIR / "inside").read_text() == SECRET


READS = {
    "dotdot_relative": "../../../../../../../var/tmp/corral-security-fs-canary",
    "dotdot_absolute": "/../../../../var/tmp/corral-security-fs-canary",
    "proc_1_root": "/proc/1/root/var/tmp/corral-security-fs-canary",
    "proc_self_root": "/proc/self/root/var/tmp/corral-security-fs-canary",
    "proc_self_cwd": "/proc/self/cwd/../../../../var/tmp/corral-security-fs-canary",
    "absolute_symlink": "/root/abs",
    "symlinked_dir": "/root/absdir/inside",
    "relative_symlink_up": "/root/up/var/tmp/corral-security-fs-canary",
    "symlink_to_proc_1_root": "/root/p1/var/tmp/corral-security-fs-canary",
    "symlink_to_proc_self_root": "/root/pself/var/tmp/corral-security-fs-canary",
    "symlink_to_jwt_secret": "/root/jwt",
}


@pytest.mark.usefixtures("planted")
@pytest.mark.parametrize("path", list(READS.values()), ids=list(READS))
def test_read_never_reaches_a_host_file(
    path: str, alpha: Tenant, attacker_box: str, host: dict[str, Path], unnoticed: Callable[[], None]
) -> None:
    with alpha.http() as http:
        answer = http.get(f"/sandboxes/{attacker_box}/files", params={"path": path})
    assert answer.status_code in (400, 404), answer.text[:200]
    assert SECRET not in answer.text
    assert host["jwt_secret"].read_text().strip() not in answer.text
    _host_intact(host)
    unnoticed()


@pytest.mark.usefixtures("planted")
def test_read_through_a_link_to_another_sandboxs_root_misses_it(
    alpha: Tenant, beta: Tenant, attacker_box: str, bystander_box: str, unnoticed: Callable[[], None]
) -> None:
    """The other sandbox's root is a host path; from inside, it does not exist."""
    beta.run(bystander_box, f"echo {SECRET} > /root/private")
    with alpha.http() as http:
        answer = http.get(f"/sandboxes/{attacker_box}/files", params={"path": "/root/peer/root/private"})
        listing = http.get(f"/sandboxes/{attacker_box}/files/list", params={"path": "/root/peer/root"})
    assert answer.status_code == 404 and SECRET not in answer.text
    assert listing.status_code == 404 and "private" not in listing.text
    unnoticed()


@pytest.mark.usefixtures("planted")
@pytest.mark.parametrize(
    "path", ["/proc/1/root/var/tmp", "/root/up/var/tmp", "/root/absdir", "/root/p1/var/tmp"]
)
def test_listing_never_shows_a_host_directory(
    path: str, alpha: Tenant, attacker_box: str, unnoticed: Callable[[], None]
) -> None:
    with alpha.http() as http:
        answer = http.get(f"/sandboxes/{attacker_box}/files/list", params={"path": path})
    assert answer.status_code in (200, 404), answer.text
    assert "corral-security-fs-canary" not in answer.text and "inside" not in answer.text
    unnoticed()


WRITES = {
    "through_absolute_symlink": "/root/abs",
    "into_symlinked_dir": "/root/absdir/planted",
    "through_proc_1_root": "/proc/1/root/var/tmp/corral-security-fs-canary.d/p1",
    "through_relative_symlink": "/root/up/var/tmp/corral-security-fs-canary.d/up",
    "dotdot": "../../../../../var/tmp/corral-security-fs-canary.d/dotdot",
}


@pytest.mark.usefixtures("planted")
@pytest.mark.parametrize("path", list(WRITES.values()), ids=list(WRITES))
def test_write_through_a_planted_link_stays_inside(
    path: str,
    alpha: Tenant,
    attacker_box: str,
    host: dict[str, Path],
    unnoticed: Callable[[], None],
) -> None:
    """The write either fails or lands in the sandbox's own tree; the host's canaries
    are untouched."""
    with alpha.http() as http:
        answer = http.put(f"/sandboxes/{attacker_box}/files", params={"path": path}, content=b"pwned")
        if answer.status_code == 204:
            # it replaced the link, or followed it inside the sandbox: either way the
            # file is the sandbox's own
            landed = http.get(f"/sandboxes/{attacker_box}/files", params={"path": path})
            assert landed.status_code == 200 and landed.text == "pwned"
    assert answer.status_code in (204, 400, 404), answer.text
    _host_intact(host)
    unnoticed()


@pytest.mark.usefixtures("planted")
def test_write_through_a_link_to_another_sandboxs_root_stays_inside(
    alpha: Tenant, beta: Tenant, attacker_box: str, bystander_box: str, host: dict[str, Path]
) -> None:
    with alpha.http() as http:
        answer = http.put(
            f"/sandboxes/{attacker_box}/files", params={"path": "/root/peer/root/owned"}, content=b"owned"
        )
    assert answer.status_code in (204, 400, 404), answer.text
    assert not (host["bystander_root"] / "root" / "owned").exists()
    assert beta.run(bystander_box, "test -e /root/owned; echo $?")["stdout"].strip() == "1"


@pytest.mark.usefixtures("planted")
def test_mkdir_and_delete_through_links_stay_inside(
    alpha: Tenant, attacker_box: str, host: dict[str, Path], unnoticed: Callable[[], None]
) -> None:
    with alpha.http() as http:
        made = http.post(
            f"/sandboxes/{attacker_box}/files/mkdir",
            params={"path": "/root/up/var/tmp/corral-security-fs-canary.d/x"},
        )
        removed = [
            http.delete(f"/sandboxes/{attacker_box}/files", params={"path": path})
            for path in (
                "/root/absdir/inside",
                "/proc/1/root/var/tmp/corral-security-fs-canary",
                "/root/up/var/tmp/corral-security-fs-canary.d",
            )
        ]
    assert made.status_code in (204, 400, 404), made.text
    assert all(r.status_code in (204, 400, 404) for r in removed), [r.text for r in removed]
    _host_intact(host)
    unnoticed()


def test_symlink_swap_race_during_writes_stays_inside(
    alpha: Tenant, attacker_box: str, host: dict[str, Path], unnoticed: Callable[[], None]
) -> None:
    """A loop inside swaps a directory and a link to the host's canary dir while the
    API writes under that name: every write lands in the sandbox."""
    race = (
        "mkdir -p /root/racedir; end=$(($(date +%s)+4)); "
        "while [ $(date +%s) -lt $end ]; do "
        "ln -sfn /var/tmp/corral-security-fs-canary.d /root/race.new && mv -T /root/race.new /root/race; "
        "ln -sfn /root/racedir /root/race.new && mv -T /root/race.new /root/race; done"
    )
    with alpha.http() as http:
        started = http.post(
            f"/sandboxes/{attacker_box}/exec/run-async",
            json={"cmd": "sh", "args": ["-c", race], "timeout": 10},
        )
        assert started.status_code == 201, started.text
        codes = [
            http.put(
                f"/sandboxes/{attacker_box}/files", params={"path": f"/root/race/w{i}"}, content=b"x"
            ).status_code
            for i in range(25)
        ]
    assert set(codes) <= {204, 400, 404}, codes
    _host_intact(host)
    unnoticed()


def test_sysrq_and_sysfs_writes_through_the_api_fail(
    alpha: Tenant, attacker_box: str, unnoticed: Callable[[], None]
) -> None:
    """The agent is root inside, but /proc's dangerous files are read-only and /sys is
    read-only. (``h`` only prints help, should the write ever go through.)"""
    with alpha.http() as http:
        answers = [
            http.put(f"/sandboxes/{attacker_box}/files", params={"path": path}, content=body)
            for path, body in (
                ("/proc/sysrq-trigger", b"h"),
                ("/proc/sys/kernel/core_pattern", b"|/tmp/pwn"),
                ("/sys/kernel/uevent_helper", b"/tmp/pwn"),
            )
        ]
    assert [a.status_code for a in answers if a.status_code == 204] == [], [a.text for a in answers]
    assert Path("/proc/sys/kernel/core_pattern").read_text().strip() != "|/tmp/pwn"
    # a write to a link the sandbox planted to sysrq-trigger replaces the link (or fails)
    with alpha.http() as http:
        http.put(f"/sandboxes/{attacker_box}/files", params={"path": "/root/sysrq"}, content=b"h")
    kind = alpha.run(attacker_box, "stat -c %F /root/sysrq 2>&1")["stdout"]
    assert "regular" in kind or "symbolic link" in kind, kind
    assert "h" not in alpha.run(attacker_box, "cat /proc/sysrq-trigger 2>/dev/null")["stdout"]
    unnoticed()


def test_the_agent_file_cannot_be_replaced(
    alpha: Tenant, attacker_box: str, unnoticed: Callable[[], None]
) -> None:
    """The agent is bind-mounted read-only from the host: no write, rename, hardlink or
    truncate reaches the host's copy."""
    before = hashlib.sha256(AGENT_FILE.read_bytes()).hexdigest()
    with alpha.http() as http:
        put = http.put(
            f"/sandboxes/{attacker_box}/files", params={"path": "/opt/corral/agent.py"}, content=b"x"
        )
    inside = alpha.run(
        attacker_box,
        "echo pwned >> /opt/corral/agent.py; echo append=$?; : > /opt/corral/agent.py; echo trunc=$?; "
        "ln /opt/corral/agent.py /root/agent-hl; echo link=$?; mv /opt/corral/agent.py /root/; echo mv=$?; "
        "umount /opt/corral/agent.py; echo umount=$?",
    )
    assert put.status_code != 204, put.text
    assert all(not line.endswith("=0") for line in inside["stdout"].split()), inside
    assert hashlib.sha256(AGENT_FILE.read_bytes()).hexdigest() == before
    unnoticed()


def test_hardlink_to_a_host_file_is_impossible(
    alpha: Tenant, attacker_box: str, host: dict[str, Path], unnoticed: Callable[[], None]
) -> None:
    """A hardlink needs a name of the file inside the sandbox: the host's canary has
    none, and links through /proc's magic links are refused."""
    result = alpha.run(
        attacker_box,
        "ln -sfn /var/tmp/corral-security-fs-canary.d/inside /root/hlsrc; "
        "ln /proc/1/root/var/tmp/corral-security-fs-canary.d/inside /root/hl1; "
        "ln -L /root/hlsrc /root/hl2; "
        'python3 -c \'import os; os.link("/proc/self/fd/0", "/root/hl3", follow_symlinks=True)\' '
        "< /opt/corral/agent.py; cat /root/hl1 /root/hl2 /root/hl3",
    )
    assert SECRET not in result["stdout"], result
    assert (CANARY_DIR / "inside").stat().st_nlink == 1 and CANARY.stat().st_nlink == 1
    assert AGENT_FILE.stat().st_nlink == 1
    _host_intact(host)
    unnoticed()


def test_open_by_handle_at_cannot_open_the_hosts_root(
    alpha: Tenant, attacker_box: str, unnoticed: Callable[[], None]
) -> None:
    """The "shocker" escape: a guessed file handle of inode 2 (a filesystem's root)
    opened relative to a mount of the host's filesystem."""
    code = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
class Handle(ctypes.Structure):
    _fields_ = [("bytes", ctypes.c_uint), ("type", ctypes.c_int), ("f", ctypes.c_ubyte * 8)]
h = Handle(8, 1)
h.f[0] = 2
for mount in ("/", "/opt/corral/agent.py", "/etc/hostname"):
    fd = os.open(mount, os.O_RDONLY)
    ret = libc.open_by_handle_at(fd, ctypes.byref(h), os.O_RDONLY)
    print(mount, ret, ctypes.get_errno())
"""
    result = alpha.python(attacker_box, code)
    assert result["exitCode"] == 0, result
    lines = result["stdout"].split("\n")[:3]
    assert all(line.split()[1:] == ["-1", "1"] for line in lines), result  # EPERM each
    unnoticed()


def test_masked_proc_files_give_no_kernel_data(alpha: Tenant, attacker_box: str) -> None:
    """Docker's masked paths: read through the API and from inside, they are empty or
    absent."""
    masked = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug", "/proc/scsi"]
    with alpha.http() as http:
        answers = [http.get(f"/sandboxes/{attacker_box}/files", params={"path": p}) for p in masked]
    assert all(a.status_code in (400, 404) or a.content == b"" for a in answers), [
        (a.status_code, a.content[:50]) for a in answers
    ]
    inside = alpha.run(
        attacker_box, "cat /proc/kcore /proc/keys /proc/timer_list /proc/sched_debug 2>/dev/null | wc -c"
    )
    assert inside["stdout"].split() == ["0"], inside


def test_no_host_process_or_device_is_visible(
    alpha: Tenant, attacker_box: str, security_server: SecurityServer
) -> None:
    """The pid namespace shows only the sandbox's processes; /dev has no block device,
    no /dev/mem, no kernel log."""
    result = alpha.run(
        attacker_box,
        "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '; echo; echo pids=$(ls -d /proc/[0-9]* | wc -l); "
        "echo blocks=$(find /dev -type b | wc -l); ls /dev/mem /dev/kmsg /dev/sda /dev/loop0 2>/dev/null | wc -l",
    )
    out = result["stdout"]
    assert "--data-dir" not in out and str(security_server.data_dir) not in out, out  # the server
    assert "runc" not in out and "containerd" not in out, out
    lines = out.strip().splitlines()
    assert int(lines[-3].split("=")[1]) < 20, out  # the agent, this shell and its pipeline
    assert lines[-2] == "blocks=0" and lines[-1] == "0", out


def test_mount_commands_fail(alpha: Tenant, attacker_box: str, unnoticed: Callable[[], None]) -> None:
    result = alpha.run(
        attacker_box,
        "mkdir -p /mnt/x; mount -t tmpfs none /mnt/x; echo tmpfs=$?; mount --bind /proc/1/root /mnt/x; "
        "echo bind=$?; mount -o remount,rw /sys; echo sys=$?; mount -o remount,rw /opt/corral/agent.py; "
        "echo agent=$?; unshare -Urm true; echo unshare=$?",
    )
    assert all(not line.endswith("=0") for line in result["stdout"].split()), result
    unnoticed()


def test_api_answers_name_no_host_path(
    alpha: Tenant, attacker_box: str, security_server: SecurityServer
) -> None:
    """Errors of the files API speak of paths inside the sandbox, never of the host's
    data dir (which would tell an attacker where to aim)."""
    with alpha.http() as http:
        answers: list[httpx.Response] = [
            http.get(f"/sandboxes/{attacker_box}/files", params={"path": "/root/p1/nope"}),
            http.get(f"/sandboxes/{attacker_box}/files/list", params={"path": "/nope"}),
            http.put(f"/sandboxes/{attacker_box}/files", params={"path": "/proc/nope/x"}, content=b"x"),
        ]
    for answer in answers:
        assert answer.status_code >= 400
        assert str(security_server.data_dir) not in answer.text, answer.text
