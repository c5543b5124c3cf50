"""corral.spawn.capture: what a program prints reaches the caller whole."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from corral import spawn

MIB = 1 << 20


async def test_capture_keeps_output_larger_than_a_pipe() -> None:
    # The program's ends of the pipes are blocking: given a non-blocking one, a program
    # stops at the pipe's 64 KiB (nft's JSON of many chains was cut there).
    write = "import sys; sys.stdout.write('o' * (1 << 20)); sys.stderr.write('e' * (1 << 20))"
    code, out, err = await spawn.capture([sys.executable, "-c", write], timeout=60)
    assert (code, out, err) == (0, b"o" * MIB, b"e" * MIB)


def test_start_places_fds_opens_dev_null_and_starts_a_session(tmp_path: Path) -> None:
    probe = (
        "import os, sys\n"
        "print(os.getsid(0) == os.getpid(), os.environ.get('PROBE'))\n"
        "print(os.readlink('/proc/self/fd/0'))\n"
        "os.write(5, b'via five')\n"
    )
    out = tmp_path / "out"
    five = tmp_path / "five"
    with out.open("wb") as stdout, five.open("wb") as fd5:
        pid = spawn.start(
            [sys.executable, "-c", probe],
            fds={1: stdout.fileno(), 5: fd5.fileno()},
            new_session=True,
            env={"PROBE": "here", "PATH": os.environ["PATH"]},
        )
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert out.read_text().split() == ["True", "here", "/dev/null"]
    assert five.read_bytes() == b"via five"


def test_a_program_that_cannot_be_run_is_an_os_error(tmp_path: Path) -> None:
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(PermissionError):
        spawn._posix_spawn(str(script), [str(script)], [], False)
    with pytest.raises(FileNotFoundError):
        spawn._posix_spawn(str(tmp_path / "missing"), ["missing"], [], False)


def test_the_gil_is_let_go_while_the_child_gets_to_its_exec(tmp_path: Path) -> None:
    # The child's file action opens a FIFO for reading: it blocks there, before its exec,
    # until someone opens the FIFO for writing. A thread of ours does so, once it has run
    # Python code after the spawn began: only possible if the spawn let go of the GIL.
    # (Held, the spawn would wait for the fallback, a process that opens it after 3 s.)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    began = threading.Event()
    opened: list[float] = []

    def writer() -> None:
        began.wait()
        time.sleep(0.2)  # the spawn is under way by now, its child blocked in the open
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # non-blocking: ENXIO until the child reads
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            except OSError as exc:
                assert exc.errno == errno.ENXIO
                time.sleep(0.01)
            else:
                opened.append(time.monotonic())
                return

    fallback = subprocess.Popen(["sh", "-c", f"sleep 3; exec 3>'{fifo}'"])
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        began.set()
        started = time.monotonic()
        pid = spawn._posix_spawn(
            "/bin/true", ["true"], [(os.POSIX_SPAWN_OPEN, 0, str(fifo), os.O_RDONLY, 0)], False
        )
        returned = time.monotonic()
        os.waitpid(pid, 0)
        thread.join()
    finally:
        fallback.kill()
        fallback.wait()
    assert opened  # the thread ran while the spawn was under way ...
    assert returned - started < 2  # ... and unblocked it, not the fallback
