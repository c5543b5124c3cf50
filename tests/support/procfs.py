"""What the kernel says of a process in ``/proc``, for the tests that look."""

from __future__ import annotations

from pathlib import Path


def status_field(pid: int, field: str) -> list[str]:
    """The values of ``field`` in ``/proc/<pid>/status`` (``Gid``, ``VmRSS``, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return line.split()[1:]
    raise AssertionError(f"no {field} in /proc/{pid}/status")
