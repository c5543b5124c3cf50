"""Run a command in a sandbox as an exec session and stream its output.

The session is created with ``POST /api/sandboxes/{id}/exec``, then attached over the
binary WebSocket protocol: frames ``0x01`` stdout and ``0x02`` stderr are written to
the local stdout and stderr as they arrive, ``0x04`` (end of scrollback) is ignored,
and ``0x03`` carries the exit code (4 bytes, big-endian, signed).

Contract: ``stream_exec`` returns the command's exit code; it raises CliError when the
session cannot be created or attached, or the connection ends before an exit frame.
On Ctrl-C it kills the session (SIGKILL) and returns 130.
"""

from __future__ import annotations

import sys
from typing import Any, BinaryIO

from websockets.exceptions import InvalidHandshake, InvalidStatus, WebSocketException
from websockets.sync.client import connect

from corral.cli.client import ApiClient, refused
from corral.cli.console import CliError

STDOUT, STDERR, EXIT, SCROLLBACK_END = 1, 2, 3, 4


def stream_exec(
    api: ApiClient,
    sandbox_id: str,
    cmd: str,
    args: list[str],
    *,
    envs: dict[str, str] | None = None,
    cwd: str | None = None,
    timeout: int | None = None,
    stdout: BinaryIO | None = None,
    stderr: BinaryIO | None = None,
) -> int:
    body: dict[str, Any] = {"cmd": cmd, "args": args}
    if envs:
        body["envs"] = envs
    if cwd:
        body["cwd"] = cwd
    if timeout is not None:
        body["timeout"] = timeout
    info = api.post(f"/sandboxes/{sandbox_id}/exec", body)
    session_id = info.get("sessionID") if isinstance(info, dict) else None
    if not isinstance(session_id, str) or not session_id:
        raise CliError("the server did not return a session id")
    out = stdout or sys.stdout.buffer
    err = stderr or sys.stderr.buffer
    try:
        return _attach(api, sandbox_id, session_id, out, err)
    except KeyboardInterrupt:
        try:
            api.post(f"/sandboxes/{sandbox_id}/exec/{session_id}/kill", {"signal": 9})
        except CliError:
            pass
        return 130


def exit_status(code: int) -> int:
    """A process exit status for a sandbox exit code: 0..255 as is, -N (killed by
    signal N) as 128+N, anything else 1."""
    if 0 <= code <= 255:
        return code
    if -64 <= code < 0:
        return 128 - code
    return 1


def _attach(api: ApiClient, sandbox_id: str, session_id: str, out: BinaryIO, err: BinaryIO) -> int:
    url = api.ws_url(f"/sandboxes/{sandbox_id}/exec/{session_id}")
    try:
        with connect(url, additional_headers=api.headers, max_size=None, open_timeout=30) as ws:
            for message in ws:
                frame = message.encode() if isinstance(message, str) else message
                if not frame:
                    continue
                kind, payload = frame[0], frame[1:]
                if kind == STDOUT:
                    out.write(payload)
                    out.flush()
                elif kind == STDERR:
                    err.write(payload)
                    err.flush()
                elif kind == EXIT:
                    return int.from_bytes(payload[:4], "big", signed=True) if len(payload) >= 4 else 0
    except InvalidStatus as exc:
        raise refused(exc, f"session {session_id}") from exc
    except (InvalidHandshake, OSError, TimeoutError) as exc:
        raise CliError(f"cannot attach to session {session_id}: {exc}") from exc
    except WebSocketException as exc:
        raise CliError(f"the connection to session {session_id} failed: {exc}") from exc
    raise CliError(f"the connection to session {session_id} closed before the command exited")
