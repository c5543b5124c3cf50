"""Which host file is bind-mounted at /opt/corral/agent.py: the agent, precompiled.

``python3 /opt/corral/agent.py`` compiles a script from source on every start (scripts
are never cached), which for the agent is ~10 ms of a ~20 ms start. CPython runs a
file whose first bytes are a bytecode magic number as a .pyc whatever its name, so the
runtime binds a compiled copy instead, when the template's ``python3`` is the same
minor version as ours (same minor version, same magic number); otherwise the source.

Compiled copies live in ``<data>/agent/agent-<sha256 prefix>.<cache tag>.pyc``
(0644, dir 0711: the sandbox's root, an unprivileged host uid, must read it when runc
bind-mounts it). A new agent source gets a new file; nothing is rewritten in place.
Blocking; call through ``asyncio.to_thread``.
"""

from __future__ import annotations

import hashlib
import os
import py_compile
import re
import secrets
import sys
from pathlib import Path

from corral.runtime.rootdir import RootDir

INSIDE = "/opt/corral/agent.py"
_PYTHON_LINK = re.compile(r"python(\d+)\.(\d+)")


class AgentFiles:
    def __init__(self, source: Path, cache_dir: Path, *, precompile: bool = True) -> None:
        self.source = source
        self._cache_dir = cache_dir
        self._precompile = precompile
        self._compiled: dict[tuple[int, int], Path] = {}

    def for_root(self, rootfs: Path) -> Path:
        """The file to bind for a sandbox on template root ``rootfs``. Raises OSError
        when the source is unreadable."""
        if not self._precompile or _python_version(rootfs) != sys.version_info[:2]:
            return self.source
        st = os.stat(self.source)
        key = (st.st_mtime_ns, st.st_size)
        compiled = self._compiled.get(key)
        if compiled is None or not compiled.exists():
            compiled = self._compile()
            self._compiled = {key: compiled}
        return compiled

    def _compile(self) -> Path:
        data = self.source.read_bytes()
        tag = sys.implementation.cache_tag
        target = self._cache_dir / f"agent-{hashlib.sha256(data).hexdigest()[:16]}.{tag}.pyc"
        if target.exists():
            return target
        self._cache_dir.mkdir(mode=0o711, parents=True, exist_ok=True)
        os.chmod(self._cache_dir, 0o711)
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}")
        try:
            py_compile.compile(
                str(self.source),
                cfile=str(tmp),
                dfile=INSIDE,
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
            )
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target


def _python_version(rootfs: Path) -> tuple[int, ...] | None:
    """(major, minor) of the template's /usr/bin/python3 symlink target, if readable
    (read without following any link of the template's: ``rootdir.py``)."""
    try:
        with RootDir.open(rootfs) as root:
            target = root.readlink("usr/bin/python3")
    except OSError:
        return None
    match = _PYTHON_LINK.fullmatch(os.path.basename(target))
    return (int(match.group(1)), int(match.group(2))) if match else None
