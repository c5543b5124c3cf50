"""The code interpreter of ``code-interpreter`` sandboxes: its server, started with the
sandbox.

A sandbox of the ``code-interpreter`` template (``INTERPRETER_TEMPLATE``, built by
runtime/templates.py with Jupyter, ipykernel, IRkernel, matplotlib, pandas and numpy
from Debian, and the server ``agent/interpreter.py`` laid in) has the server listening
on port 49999 before its create returns, and again after every wake, fork and restore
(``InterpreterBoot``, one of ``SandboxService``'s boot hooks). Clients reach it like any
server in a sandbox: through the gateway, or the E2B surface's sandbox traffic
(``E2b-Sandbox-Port: 49999``), which is what ``e2b_code_interpreter`` calls.

Contracts:
- The server runs as the user ``sandbox`` (uid 1000, HOME /home/sandbox) in
  /home/sandbox/workspace, with the environment the agent gives commands (the
  sandbox's envs of its create: code run in its kernels sees them, as E2B's does),
  under a supervisor in the sandbox that starts it again
  whenever it exits (a killed server answers again within a second; its kernels die
  with it and the default Python one starts again with it). Starting is idempotent: a
  second start finds the supervisor alive (it holds a lock) and only waits.
- Ready means port 49999 is listening; the default Python kernel is still starting
  then, and the first execution waits for it. ``start_interpreter`` returns once
  ready, or raises RuntimeFailure (with the script's words) after ``READY_TIMEOUT_S``.
- The server's API is in its own docstring (agent/interpreter.py).
"""

from __future__ import annotations

from collections.abc import Callable

from corral.domain import ExecRequest
from corral.errors import RuntimeFailure
from corral.ports import Processes

INTERPRETER_TEMPLATE = "code-interpreter"
INTERPRETER_PORT = 49999
SERVER = "/usr/local/lib/corral/interpreter.py"  # where runtime/templates.py lays it
READY_TIMEOUT_S = 20

# Run by the agent as root: starts the supervisor detached (its own session, which the
# exec's end does not kill) unless it runs, then waits until the server listens.
START = r"""
set -u
lock=/tmp/.corral-interpreter.lock
if flock -n "$lock" true; then
  cd /home/sandbox/workspace
  setsid -f flock -n "$lock" setpriv --reuid=1000 --regid=1000 --init-groups \
    env HOME=/home/sandbox USER=sandbox LOGNAME=sandbox \
    bash -c 'while :; do python3 "$1" "$2" >/tmp/.corral-interpreter.log 2>&1; sleep 0.2; done' \
    corral-interpreter "$1" "$2" </dev/null >/dev/null 2>&1
fi
port=$(printf '%04X' "$2")
listening() { awk '$4 == "0A" { print $2 }' /proc/net/tcp /proc/net/tcp6 | grep -qi ":$port\$"; }
deadline=$((SECONDS + $3))
until listening; do
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "the code interpreter was not listening in $3 s: $(tail -c 400 /tmp/.corral-interpreter.log)" >&2
    exit 1
  fi
  sleep 0.02
done
"""


class InterpreterBoot:
    """The boot hook (``SandboxService(boot_hooks=)``) that starts the code interpreter
    of every sandbox of the ``code-interpreter`` template; ``agent_of`` is
    ``Runtime.agent``."""

    def __init__(self, agent_of: Callable[[str], Processes]) -> None:
        self.agent_of = agent_of

    async def __call__(self, sandbox_id: str, template: str) -> None:
        if template == INTERPRETER_TEMPLATE:
            await start_interpreter(self.agent_of(sandbox_id))


async def start_interpreter(agent: Processes) -> None:
    """Start the code interpreter through ``agent`` unless it runs; return once it
    listens (RuntimeFailure with the script's words otherwise)."""
    request = ExecRequest(
        cmd="/bin/bash",
        args=("-c", START, "corral-interpreter", SERVER, str(INTERPRETER_PORT), str(READY_TIMEOUT_S)),
        timeout_s=READY_TIMEOUT_S + 5,
    )
    result = await agent.exec(request)
    if result.exit_code != 0:
        said = result.stderr.decode(errors="replace").strip()[-500:]
        raise RuntimeFailure(f"the code interpreter did not start ({result.exit_code}): {said}")
