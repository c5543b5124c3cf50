"""The agent's own memory: an agent that compiled itself from source gives the C heap
the compiler left free back to the kernel (``sandbox_agent.release_memory``), and the
agent loaded as the bytecode the host compiled for it (``runtime/agentfile.py``, what
sandboxes run) is as small without doing so. Real agent processes, read through
/proc."""

from __future__ import annotations

import contextlib
import py_compile
import subprocess
import sys
import types
from collections.abc import Iterator
from importlib.machinery import SourcelessFileLoader
from pathlib import Path

from corral.agent import sandbox_agent
from corral.agent.wire import AGENT_FILE, agent_argv
from tests.support.agent import started
from tests.support.conditions import eventually
from tests.support.procfs import status_field

MIB = 1024


def _rss_anon_kib(pid: int) -> int:
    return int(status_field(pid, "RssAnon")[0])


def _compiled(tmp_path: Path) -> Path:
    """The agent compiled as the runtime compiles it for a sandbox (``agentfile.py``)."""
    compiled = tmp_path / "agent.pyc"
    py_compile.compile(
        str(AGENT_FILE),
        cfile=str(compiled),
        doraise=True,
        invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
    )
    return compiled


@contextlib.contextmanager
def _agent(argv: list[str], sock: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        eventually(lambda: started(proc, sock), 10, "the agent did not start")
        yield proc
    finally:
        proc.kill()
        proc.wait()


def test_an_agent_compiled_from_source_gives_its_compiler_heap_back(tmp_path: Path) -> None:
    sock = tmp_path / "source.sock"
    with _agent(agent_argv(sys.executable, str(AGENT_FILE), "--socket", str(sock)), sock) as proc:
        at_start = _rss_anon_kib(proc.pid)
        eventually(
            lambda: _rss_anon_kib(proc.pid) < at_start - 2 * MIB,
            10,
            lambda: f"RssAnon {_rss_anon_kib(proc.pid)} KiB, {at_start} KiB at start",
        )


def test_the_agent_from_bytecode_is_as_small_without_trimming(tmp_path: Path) -> None:
    compiled = _compiled(tmp_path)
    source_sock, bytecode_sock = tmp_path / "source.sock", tmp_path / "bytecode.sock"
    source_argv = agent_argv(sys.executable, str(AGENT_FILE), "--socket", str(source_sock))
    bytecode_argv = [sys.executable, "-I", "-S", str(compiled), "--socket", str(bytecode_sock)]
    with _agent(source_argv, source_sock) as source, _agent(bytecode_argv, bytecode_sock) as bytecode:
        at_start = _rss_anon_kib(source.pid)
        eventually(
            lambda: _rss_anon_kib(source.pid) < at_start - 2 * MIB, 10, "the source agent kept its heap"
        )
        assert _rss_anon_kib(bytecode.pid) <= _rss_anon_kib(source.pid)


def test_only_an_agent_that_compiled_itself_trims(tmp_path: Path) -> None:
    """Trimming costs a bytecode agent CPU (~0.5 ms) for nothing to give back."""
    from_bytecode = SourcelessFileLoader("agent_from_bytecode", str(_compiled(tmp_path)))
    module = types.ModuleType(from_bytecode.name)
    module.__loader__ = from_bytecode
    from_bytecode.exec_module(module)
    assert module.compiled_here() is False
    assert sandbox_agent.compiled_here() is True  # imported from source
