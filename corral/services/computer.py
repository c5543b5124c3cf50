"""The screen, mouse and keyboard of a desktop sandbox (services/desktop.py), as
Anthropic's computer-use tool names them: what the computer-use agent's actions do.

Contracts:
- ``Computer(agent)`` drives the desktop of one sandbox through its agent (``Runs``: exec):
  every action is one exec in the sandbox, as the user ``sandbox`` with ``DISPLAY=:99``,
  its argv passed as a list (no shell sees the model's text).
- ``screenshot()`` is a PNG of the whole X display (1280x720): Xvfb keeps its
  framebuffer in ``FB_DIR`` (an XWD file, ``-fbdir``), and ``SHOT``, a stdlib-only
  python3 program run in the sandbox, encodes it as PNG on its stdout, so nothing
  needs adding to the ``gui`` template.
- ``act(input)`` performs one tool input (``screenshot``, ``mouse_move``,
  ``left_click``, ``right_click``, ``middle_click``, ``double_click``,
  ``triple_click``, ``left_click_drag``, ``left_mouse_down``, ``left_mouse_up``,
  ``type``, ``key``, ``hold_key``, ``scroll``, ``wait``, ``cursor_position``) with
  xdotool and returns what the tool answers: a PNG (a screenshot, also after every
  action that changes the screen) or text. ``BadAction`` (naming what is wrong) for an
  unknown action, a missing or malformed field, a coordinate off the screen, text
  longer than ``MAX_TEXT``; nothing is done then. ``RuntimeFailure`` when xdotool or
  the screenshot fails in the sandbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from corral.domain import ExecRequest, ExecResult
from corral.errors import RuntimeFailure

WIDTH, HEIGHT = 1280, 720
FB_DIR = "/tmp/.corral-fb"  # Xvfb's -fbdir: Xvfb_screen0 there is the display, as XWD
MAX_TEXT = 4096
MAX_WAIT_S = 10.0
MAX_SCROLL = 50
ACTION_TIMEOUT_S = 30.0
SETTLE_S = 0.3  # after an action, before its screenshot: the screen catches up
USER = "sandbox"
ENVS = {"DISPLAY": ":99", "HOME": "/home/sandbox", "PATH": "/usr/local/bin:/usr/bin:/bin"}
BUTTONS = {"left_click": "1", "middle_click": "2", "right_click": "3"}
REPEATS = {"double_click": "2", "triple_click": "3"}
WHEEL = {"up": "4", "down": "5", "left": "6", "right": "7"}

# XWD (big-endian header; 24/32-bit TrueColor pixels as Xvfb writes them) to PNG.
SHOT = r"""
import struct, sys, zlib
with open(sys.argv[1], "rb") as f:
    data = f.read()
h = struct.unpack(">25I", data[:100])
size, depth, width, height, order, bpp, stride, ncolors = h[0], h[3], h[4], h[5], h[7], h[11], h[12], h[19]
if bpp != 32:
    sys.exit(f"unsupported XWD: {bpp} bits per pixel")
pixels = memoryview(data)[size + 12 * ncolors:]
rgb = bytearray(width * height * 3)
for y in range(height):
    row = pixels[y * stride:y * stride + width * 4]
    out = y * width * 3
    r, g, b = (2, 1, 0) if order == 0 else (1, 2, 3)
    rgb[out + 0:out + width * 3:3] = row[r::4]
    rgb[out + 1:out + width * 3:3] = row[g::4]
    rgb[out + 2:out + width * 3:3] = row[b::4]
line = width * 3
raw = b"".join(b"\0" + rgb[y * line:(y + 1) * line] for y in range(height))
def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(raw, 3)) + chunk(b"IEND", b"")
sys.stdout.buffer.write(png)
"""


class Runs(Protocol):
    """What the computer needs of a sandbox's agent (``corral.ports.Processes``)."""

    async def exec(self, request: ExecRequest) -> ExecResult: ...


class BadAction(ValueError):
    """A tool input the computer refuses (the message says why); nothing was done."""


@dataclass(frozen=True)
class Outcome:
    """What an action answers: a PNG, text, or both."""

    png: bytes | None = None
    text: str | None = None


class Computer:
    def __init__(self, agent: Runs) -> None:
        self.agent = agent

    async def screenshot(self) -> bytes:
        result = await self._exec("python3", "-I", "-c", SHOT, f"{FB_DIR}/Xvfb_screen0")
        if not result.startswith(b"\x89PNG"):
            raise RuntimeFailure("the screenshot is not a PNG")
        return result

    async def act(self, tool_input: Mapping[str, object]) -> Outcome:
        action = tool_input.get("action")
        if not isinstance(action, str):
            raise BadAction("action must be a string")
        if action == "screenshot":
            return Outcome(png=await self.screenshot())
        if action == "cursor_position":
            out = (await self._xdotool("getmouselocation", "--shell")).decode(errors="replace")
            where = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
            return Outcome(text=f"X={where.get('X', '?')},Y={where.get('Y', '?')}")
        if action == "wait":
            await asyncio.sleep(_duration(tool_input))
            return Outcome(png=await self.screenshot())
        await self._xdotool(*self.argv(action, tool_input))
        await asyncio.sleep(SETTLE_S)
        return Outcome(png=await self.screenshot())

    @staticmethod
    def argv(action: str, tool_input: Mapping[str, object]) -> list[str]:
        """xdotool's arguments for ``action`` (BadAction for what it refuses)."""
        if action == "mouse_move":
            return ["mousemove", *_point(tool_input, "coordinate")]
        if action in BUTTONS or action in REPEATS:
            button = BUTTONS.get(action, "1")
            click = ["click", *(["--repeat", REPEATS[action]] if action in REPEATS else []), button]
            at = ["mousemove", *_point(tool_input, "coordinate")] if "coordinate" in tool_input else []
            return [*at, *click]
        if action == "left_click_drag":
            start, end = _point(tool_input, "start_coordinate"), _point(tool_input, "coordinate")
            return ["mousemove", *start, "mousedown", "1", "mousemove", *end, "mouseup", "1"]
        if action == "left_mouse_down":
            return ["mousedown", "1"]
        if action == "left_mouse_up":
            return ["mouseup", "1"]
        if action == "type":
            return ["type", "--delay", "8", "--", _text(tool_input)]
        if action == "key":
            return ["key", "--", *_text(tool_input).split()]
        if action == "hold_key":
            keys = _text(tool_input).split()
            return ["keydown", *keys, "sleep", f"{_duration(tool_input):g}", "keyup", *keys]
        if action == "scroll":
            direction = tool_input.get("scroll_direction")
            if direction not in WHEEL:
                raise BadAction("scroll_direction must be up, down, left or right")
            amount = tool_input.get("scroll_amount", 3)
            if not isinstance(amount, int) or isinstance(amount, bool) or not 1 <= amount <= MAX_SCROLL:
                raise BadAction(f"scroll_amount must be an integer from 1 to {MAX_SCROLL}")
            at = ["mousemove", *_point(tool_input, "coordinate")] if "coordinate" in tool_input else []
            return [*at, "click", "--repeat", str(amount), WHEEL[str(direction)]]
        raise BadAction(f"unknown action {action!r}")

    async def _xdotool(self, *args: str) -> bytes:
        return await self._exec("xdotool", *args)

    async def _exec(self, cmd: str, *args: str) -> bytes:
        request = ExecRequest(cmd=cmd, args=args, envs=dict(ENVS), timeout_s=ACTION_TIMEOUT_S, user=USER)
        result = await self.agent.exec(request)
        if result.exit_code != 0:
            said = result.stderr.decode(errors="replace").strip()[-300:]
            raise RuntimeFailure(f"{cmd} failed in the desktop ({result.exit_code}): {said}")
        return result.stdout


def _point(tool_input: Mapping[str, object], name: str) -> list[str]:
    value = tool_input.get(name)
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise BadAction(f"{name} must be [x, y], two integers")
    x, y = value
    if not (0 <= x < WIDTH and 0 <= y < HEIGHT):
        raise BadAction(f"{name} ({x}, {y}) is off the {WIDTH}x{HEIGHT} screen")
    return [str(x), str(y)]


def _text(tool_input: Mapping[str, object]) -> str:
    text = tool_input.get("text")
    if not isinstance(text, str) or not text:
        raise BadAction("text must be a non-empty string")
    if len(text) > MAX_TEXT:
        raise BadAction(f"text is longer than {MAX_TEXT} characters")
    return text


def _duration(tool_input: Mapping[str, object]) -> float:
    value = tool_input.get("duration", 1)
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= MAX_WAIT_S:
        raise BadAction(f"duration must be a number of seconds from 0 to {MAX_WAIT_S:g}")
    return float(value)
