"""RootDir: paths inside an untrusted tree never follow a link, never leave the tree, and
never open a FIFO, socket or device; and the host-side users of it (template
normalisation, a sandbox's /etc files, ownership shifts) inherit that."""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from corral.runtime import overlay
from corral.runtime.agentfile import _python_version
from corral.runtime.ownership import remap_tree, shift_tree
from corral.runtime.rootdir import NotConfined, RootDir, parts
from corral.runtime.templates import normalize

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A directory standing for the host's files: every test checks it stays untouched."""
    outside = tmp_path / "host"
    outside.mkdir()
    (outside / "hostname").write_text("the host\n")
    return outside


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "usr" / "bin").mkdir(parents=True)
    return root


def untouched(host: Path) -> bool:
    return (
        sorted(p.name for p in host.iterdir()) == ["hostname"]
        and (host / "hostname").read_text() == "the host\n"
    )


@pytest.mark.parametrize("component", ["etc", "usr", "usr/bin"])
def test_a_symlink_at_any_component_stops_the_walk(tree: Path, host: Path, component: str) -> None:
    target = tree / component
    os.rename(target, tree / "moved")
    target.symlink_to(host)
    with RootDir.open(tree) as root:
        with pytest.raises(NotConfined) as caught:
            root.write(f"{component}/hostname", b"pwned", mode=0o644, uid=0, gid=0)
        assert caught.value.errno == errno.ELOOP and caught.value.filename == str(target)
        with pytest.raises(NotConfined):
            root.read(f"{component}/hostname")
        with pytest.raises(NotConfined):
            root.subdir(f"{component}/x", create=(0o755, 0, 0))
        with pytest.raises(NotConfined):
            root.lstat(f"{component}/hostname")
    assert untouched(host)


def test_the_root_itself_must_not_be_a_link(tmp_path: Path, host: Path) -> None:
    (tmp_path / "link").symlink_to(host)
    with pytest.raises(NotConfined):
        RootDir.open(tmp_path / "link")


def test_dotdot_and_absolute_paths_stay_inside(tree: Path, host: Path) -> None:
    with RootDir.open(tree) as root:
        with pytest.raises(NotConfined):
            root.write("../host/hostname", b"pwned", mode=0o644, uid=0, gid=0)
        with pytest.raises(NotConfined):
            root.subdir("etc/../../host")
        root.write("/etc/hostname", b"inside\n", mode=0o644, uid=os.getuid(), gid=os.getgid())
    assert (tree / "etc" / "hostname").read_text() == "inside\n"
    assert parts("/a//./b/") == ["a", "b"]
    assert untouched(host)


def test_a_fifo_is_never_opened(tree: Path) -> None:
    fifo = tree / "etc" / "resolv.conf"
    os.mkfifo(fifo)
    done = threading.Event()

    def attempt() -> None:
        with RootDir.open(tree) as root, pytest.raises(NotConfined, match="a FIFO"):
            root.read("etc/resolv.conf")
        done.set()

    worker = threading.Thread(target=attempt, daemon=True)
    worker.start()
    assert done.wait(5), "reading a FIFO blocked"
    with RootDir.open(tree) as root:  # a write replaces it, without opening it
        root.write("etc/resolv.conf", b"nameserver 10.0.0.1\n", mode=0o644, uid=os.getuid(), gid=os.getgid())
    assert stat.S_ISREG(fifo.lstat().st_mode) and fifo.read_text() == "nameserver 10.0.0.1\n"


def test_a_dangling_or_host_link_as_the_file_is_replaced_not_followed(tree: Path, host: Path) -> None:
    (tree / "etc" / "hostname").symlink_to(host / "hostname")
    (tree / "etc" / "hosts").symlink_to("/nowhere/at/all")
    with RootDir.open(tree) as root:
        with pytest.raises(NotConfined, match="symbolic link"):
            root.read("etc/hostname")
        for name in ("hostname", "hosts"):
            root.write(f"etc/{name}", b"sandbox\n", mode=0o644, uid=os.getuid(), gid=os.getgid())
    assert (tree / "etc" / "hostname").read_text() == "sandbox\n" and not (
        tree / "etc" / "hostname"
    ).is_symlink()
    assert untouched(host)
    assert sorted(os.listdir(tree / "etc")) == ["hostname", "hosts"]  # no temp file left


def test_a_directory_is_not_replaced(tree: Path) -> None:
    (tree / "etc" / "hosts").mkdir()
    with RootDir.open(tree) as root, pytest.raises(IsADirectoryError):
        root.write("etc/hosts", b"x", mode=0o644, uid=0, gid=0)


def test_resolve_follows_links_only_inside(tree: Path, host: Path) -> None:
    (tree / "usr" / "bin" / "python3.11").write_text("")
    (tree / "usr" / "bin" / "python3").symlink_to("python3.11")
    (tree / "bin").symlink_to("usr/bin")
    (tree / "escape").symlink_to(f"../../../../../../..{host}/hostname")  # ".." stops at the root
    (tree / "absolute").symlink_to(str(host / "hostname"))
    (tree / "loop").symlink_to("loop")
    with RootDir.open(tree) as root:
        assert stat.S_ISREG(root.resolve("bin/python3").st_mode)
        for name in ("escape", "absolute"):
            with pytest.raises(FileNotFoundError):
                root.resolve(name)
        with pytest.raises(OSError) as loop:
            root.resolve("loop")
        assert loop.value.errno == errno.ELOOP


def test_normalize_refuses_a_template_whose_etc_is_a_link(tree: Path, host: Path) -> None:
    os.rmdir(tree / "etc")
    (tree / "etc").symlink_to(host)
    with pytest.raises(NotConfined, match="symbolic link"):
        normalize(tree)
    assert untouched(host)


def test_normalize_refuses_opt_as_a_link(tree: Path, host: Path) -> None:
    (tree / "opt").symlink_to(host)
    with pytest.raises(NotConfined):
        normalize(tree)
    assert untouched(host)


@root_only
def test_normalize_writes_files_owned_like_the_root(tree: Path) -> None:
    os.chown(tree, 100000, 100000)
    os.mkfifo(tree / "etc" / "hostname")
    (tree / "etc" / "hosts").symlink_to("/etc/hosts")
    normalize(tree)
    for path in ("etc/hostname", "etc/hosts", "etc/resolv.conf", "opt/corral/agent.py", "opt/corral", "opt"):
        st = (tree / path).lstat()
        assert (st.st_uid, st.st_gid) == (100000, 100000), path
    assert (tree / "etc" / "hostname").read_text() == "localhost\n"


def test_python_version_does_not_follow_usr_bin(tree: Path, host: Path) -> None:
    (host / "python3").symlink_to("python3.11")
    os.rename(tree / "usr" / "bin", tree / "usr" / "old")
    (tree / "usr" / "bin").symlink_to(host)
    assert _python_version(tree) is None


@root_only
def test_ownership_shift_never_follows_a_link(tree: Path, host: Path) -> None:
    (tree / "etc" / "passwd").write_text("")
    (tree / "etc" / "host").symlink_to(host)
    (tree / "etc" / "file").symlink_to(host / "hostname")
    before = (host.stat().st_uid, (host / "hostname").stat().st_uid)
    shift_tree(tree, 100000, 65536)
    assert (host.stat().st_uid, (host / "hostname").stat().st_uid) == before
    assert (tree / "etc" / "passwd").stat().st_uid == 100000 + os.getuid()
    assert (tree / "etc" / "host").lstat().st_uid == 100000 + os.getuid()


@root_only
def test_ownership_shift_keeps_setuid_and_stops_at_its_deadline(tree: Path) -> None:
    tool = tree / "usr" / "bin" / "su"
    tool.write_text("")
    tool.chmod(0o4755)
    remap_tree(tree, lambda i: i + 1000)
    assert tool.stat().st_mode & 0o7777 == 0o4755 and tool.stat().st_uid == 1000
    with pytest.raises(TimeoutError):
        remap_tree(tree, lambda i: i, deadline=time.monotonic() - 1)


@root_only
def test_overlay_files_of_a_sandbox_whose_etc_is_planted(tmp_path: Path, tree: Path, host: Path) -> None:
    upper, work = tmp_path / "upper", tmp_path / "work"
    overlay.prepare(tree, upper, work, hostname="sb-one", uid=100000, nameservers=["10.0.0.1"])
    assert (upper / "etc" / "hostname").read_text() == "sb-one\n"
    # what a sandbox can make of its own /etc: FIFOs at every name and at temp names, a
    # link to the host, a directory
    etc = upper / "etc"
    for name in ("resolv.conf", ".resolv.conf.corral-new", "hostname", ".hostname.corral-new"):
        (etc / name).unlink(missing_ok=True)
        os.mkfifo(etc / name)
    (etc / "hosts").unlink()
    (etc / "hosts").symlink_to(host / "hostname")
    done = threading.Event()

    def wake() -> None:
        overlay.refresh(upper, work, uid=100000, nameservers=["10.0.0.2"], hostname="sb-two")
        done.set()

    threading.Thread(target=wake, daemon=True).start()
    assert done.wait(5), "refresh blocked on a FIFO"
    assert (etc / "resolv.conf").read_text() == "nameserver 10.0.0.2\n"
    assert (etc / "hosts").read_text().startswith("127.0.0.1") and untouched(host)
    # /etc itself a link to the host: nothing written, nothing followed
    os.rename(etc, tmp_path / "old-etc")
    etc.symlink_to(host)
    overlay.refresh(upper, work, uid=100000, nameservers=["10.0.0.3"], hostname="sb-three")
    assert untouched(host)
    # a template root whose /etc is a link: a new sandbox is refused
    os.rename(tree / "etc", tree / "old-etc")
    (tree / "etc").symlink_to(host)
    with pytest.raises(NotConfined):
        overlay.prepare(
            tree, tmp_path / "upper2", tmp_path / "work2", hostname="x", uid=100000, nameservers=[]
        )
    assert untouched(host)
