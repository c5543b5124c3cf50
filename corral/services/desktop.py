"""The Linux desktop of a sandbox, seen in a browser: Xvfb, fluxbox, x11vnc and noVNC.

Every surface gets it from here: a sandbox of the ``gui`` template (``DESKTOP_TEMPLATE``,
built by runtime/templates.py with the desktop's Debian packages) has its desktop
running before its create returns, and again after every wake, fork and restore
(``DesktopBoot``, one of ``SandboxService``'s boot hooks). xgen's ``gui: true`` and the ``browser`` capability
ask for that template (``template_for``); OpenComputer's ``templateID: "gui"`` is it.

Contracts:
- The desktop is ``Xvfb :99 -screen 0 1280x720x24`` (its framebuffer kept as an XWD
  file in ``/tmp/.corral-fb``, what services/computer.py's screenshots read), fluxbox, ``x11vnc -display :99
  -forever -shared -rfbport 5900`` (on the sandbox's loopback only, started once X
  answers, without host name lookups: the sandbox's own name resolves nowhere) and
  ``websockify --web /usr/share/novnc 6080 127.0.0.1:5900``, all run as the user
  ``sandbox`` (uid 1000, HOME /home/sandbox) with ``DISPLAY=:99``. Each runs under a supervisor inside
  the sandbox that starts it again whenever it exits (a crashed x11vnc or websockify
  comes back within a second). Starting is idempotent: a second start finds the
  supervisor alive (it holds a lock) and only waits for readiness.
- Ready means the X socket exists and 5900 and 6080 are listening; ``start`` returns
  then, or raises RuntimeFailure (with the script's words) after ``READY_TIMEOUT_S``.
- ``vnc_url`` is the browser URL (``PreviewService.browser_url``) of port 6080 of a
  desktop sandbox: noVNC's page, which connects to the desktop through the gateway,
  admitted by the preview pass it carries; None for other sandboxes.
"""

from __future__ import annotations

from collections.abc import Callable

from corral.auth.principal import Principal
from corral.auth.scopes import Scope, require
from corral.domain import ExecRequest, Sandbox
from corral.errors import InvalidInput, RuntimeFailure
from corral.ports import Processes
from corral.services.previews import PreviewService
from corral.services.sandboxes import SandboxService

DESKTOP_TEMPLATE = "gui"
DESKTOP_BASES = frozenset({"base", DESKTOP_TEMPLATE})  # gui is base plus the desktop
VNC_PORT = 6080
READY_TIMEOUT_S = 20

# Run by the agent as root: starts the supervisor detached (its own session, which the
# exec's end does not kill) unless it runs, then waits until the desktop is ready.
START = r"""
set -u
lock=/tmp/.corral-desktop.lock
mkdir -p -m 1777 /tmp/.X11-unix
if flock -n "$lock" true; then
  setsid -f flock -n "$lock" setpriv --reuid=1000 --regid=1000 --init-groups \
    env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/home/sandbox USER=sandbox LANG=C.UTF-8 \
    DISPLAY=:99 bash -c "$1" </dev/null >/dev/null 2>&1
fi
listening() { awk '$4 == "0A" { print $2 }' /proc/net/tcp /proc/net/tcp6 | grep -qi ":$1\$"; }
deadline=$((SECONDS + $2))
until [ -S /tmp/.X11-unix/X99 ] && listening 170C && listening 17C0; do
  if [ "$SECONDS" -ge "$deadline" ]; then echo "the desktop was not ready in $2 s" >&2; exit 1; fi
  sleep 0.02
done
"""

# The supervisor, as the user sandbox: every part started again whenever it exits.
SUPERVISE = r"""
mkdir -p ~/.fluxbox  # a plain background (fbsetroot comes with fluxbox)
[ -e ~/.fluxbox/init ] || echo "session.screen0.rootCommand: fbsetroot -solid '#2e3440'" > ~/.fluxbox/init
keep() { while :; do "$@" >/dev/null 2>&1; sleep 0.2; done; }
mkdir -p /tmp/.corral-fb  # Xvfb's framebuffer as an XWD file: the screenshots' source (computer.py)
keep Xvfb :99 -screen 0 1280x720x24 -fbdir /tmp/.corral-fb -nolisten tcp &
keep websockify --web /usr/share/novnc 6080 127.0.0.1:5900 &
until xdotool getdisplaygeometry >/dev/null 2>&1; do sleep 0.02; done  # X answers (x11vnc gives up)
keep x11vnc -display :99 -forever -shared -rfbport 5900 -localhost -nopw -quiet -nolookup &
keep fluxbox &
wait
"""


class DesktopBoot:
    """The boot hook (``SandboxService(boot_hooks=)``) that starts the desktop of every
    sandbox of the ``gui`` template; ``agent_of`` is ``Runtime.agent``."""

    def __init__(self, agent_of: Callable[[str], Processes]) -> None:
        self.agent_of = agent_of

    async def __call__(self, sandbox_id: str, template: str) -> None:
        if template == DESKTOP_TEMPLATE:
            await start_desktop(self.agent_of(sandbox_id))


class DesktopService:
    """The desktop for surfaces: which template asks for one, starting it, its URL."""

    def __init__(self, sandboxes: SandboxService, previews: PreviewService) -> None:
        self.sandboxes = sandboxes
        self.previews = previews

    @staticmethod
    def template_for(template: str | None, *, desktop: bool) -> str | None:
        """The template a create asking for ``template`` (None: the default) gets, with a
        desktop if ``desktop``: ``gui`` for the base template or none; the template
        itself without a desktop. InvalidInput naming ``gui`` for a desktop on another
        template (only ``gui`` has the desktop's packages)."""
        if not desktop:
            return template
        if template is None or template in DESKTOP_BASES:
            return DESKTOP_TEMPLATE
        raise InvalidInput(
            f"a desktop comes with the templates base and {DESKTOP_TEMPLATE}, not {template!r}", field="gui"
        )

    @staticmethod
    def has_desktop(sandbox: Sandbox) -> bool:
        return sandbox.template == DESKTOP_TEMPLATE

    def vnc_url(self, sandbox: Sandbox) -> str | None:
        """noVNC's URL for a browser (port 6080, a preview pass), or None without a desktop."""
        return self.previews.browser_url(sandbox.id, VNC_PORT) if self.has_desktop(sandbox) else None

    async def start(self, principal: Principal, sandbox_id: str) -> None:
        """Start the desktop of a running sandbox (or find it started) and wait until it
        is ready: Forbidden without ``sandbox:exec``; Conflict unless it runs;
        RuntimeFailure if it does not come up (a template without the desktop)."""
        require(principal, Scope.SANDBOX_EXEC)
        await start_desktop(await self.sandboxes.processes_of(principal, sandbox_id))


async def start_desktop(agent: Processes) -> None:
    """Start the desktop through ``agent`` unless it runs; return once it is ready
    (RuntimeFailure with the script's words otherwise)."""
    request = ExecRequest(
        cmd="/bin/bash",
        args=("-c", START, "corral-desktop", SUPERVISE, str(READY_TIMEOUT_S)),
        timeout_s=READY_TIMEOUT_S + 5,
    )
    result = await agent.exec(request)
    if result.exit_code != 0:
        said = result.stderr.decode(errors="replace").strip()[-500:]
        raise RuntimeFailure(f"the desktop did not start ({result.exit_code}): {said}")
