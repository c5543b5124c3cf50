"""The code interpreter's server: runs inside sandboxes of the ``code-interpreter``
template and speaks the HTTP API that ``e2b_code_interpreter`` calls on port 49999.

Not imported by corral. runtime/templates.py lays this file into the template at
``/usr/local/lib/corral/interpreter.py``; services/interpreter.py starts it when a
sandbox starts, as the user ``sandbox`` (uid 1000) under a supervisor that starts it
again whenever it exits. It runs on the template's Debian ``python3`` with
``python3-aiohttp`` (HTTP) and ``python3-jupyter-client`` (kernels): one Jupyter kernel
per context, ``python3`` (ipykernel, matplotlib's inline backend) for ``python`` and
``ir`` (IRkernel) for ``r``.

The API (bodies JSON; a 4xx answers ``{"detail": message}``, the message naming the
field; the SDK shows it):

- ``POST /execute`` ``{code, context_id?, language?, env_vars?}``: 200 with an NDJSON
  stream (``application/x-ndjson``), one object a line, in the kernel's order::

      {"type": "number_of_executions", "execution_count": n}
      {"type": "stdout" | "stderr", "text": ..., "timestamp": unix ns}
      {"type": "result", "is_main_result": bool, "text"?, "html"?, "markdown"?, "svg"?,
       "png"? (base64), "jpeg"?, "pdf"?, "latex"?, "json"?, "javascript"?, "extra"?}
      {"type": "error", "name": ..., "value": ..., "traceback": lines joined by newlines}
      {"type": "end_of_execution"}

  ``execute_result`` is the main result, ``display_data`` (a chart; R's printed values,
  which IRkernel sends as display data) is not; MIME types without a field of their own
  go into ``extra``. Without ``context_id`` the code runs in the language's default
  context (``language`` defaults to ``python``; the python one starts once the server
  listens, the others at their first use). ``env_vars`` hold for
  that execution only: set before it, reset to the context's start values after.
  One execution at a time per context; others wait their turn. The client's timeout
  closes its connection: the execution is then interrupted (SIGINT), so the context is
  free again and keeps its state. A kernel that dies during an execution is reported
  as an error (``KernelDied``) and started again (its state is lost).
  404 for an unknown context; 400 for both ``context_id`` and ``language``, an unknown
  language, a missing ``code``, ``env_vars`` not an object of strings.
- ``POST /contexts`` ``{language?, cwd?}``: a new context, ``{id, language, cwd}``
  (cwd defaults to the server's, the user's workspace); ``GET /contexts``: every context;
  ``DELETE /contexts/{id}``: 204, its kernel shut down; ``POST /contexts/{id}/restart``:
  204, its kernel started again with nothing defined.
- ``GET /health``: 200 ``OK``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import sys
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from aiohttp import web

PORT = 49999
WORKSPACE = os.getcwd()  # a context's default cwd: the server's (the user's workspace)
KERNELS = {"python": "python3", "r": "ir"}  # language -> Jupyter kernel name
START_TIMEOUT_S = 60
RESTARTED = "the kernel died; it was started again, with nothing defined"
STOP_TIMEOUT_S = 10  # for an interrupted execution to end
SHUTDOWN_S = 1.0  # for requests still running when the server stops
TICK_S = 0.5  # how often a waiting execution checks that its kernel lives and its client stays
# MIME type -> the result's field (the rest go into "extra")
FIELDS = {
    "text/plain": "text",
    "text/html": "html",
    "text/markdown": "markdown",
    "image/svg+xml": "svg",
    "image/png": "png",
    "image/jpeg": "jpeg",
    "application/pdf": "pdf",
    "text/latex": "latex",
    "application/json": "json",
    "application/javascript": "javascript",
}

Frame = dict[str, Any]
Gone = Callable[[], bool]  # whether the client went away


def refused(status: int, message: str) -> web.HTTPException:
    """The answer to a request the API refuses: ``{"detail": message}`` (naming the field)."""
    kind = web.HTTPNotFound if status == 404 else web.HTTPBadRequest
    return kind(text=json.dumps({"detail": message}), content_type="application/json")


class Context:
    """A kernel and what the API says of it. ``lock`` holds one execution at a time."""

    def __init__(self, language: str, cwd: str) -> None:
        self.id = str(uuid.uuid4())
        self.language = language
        self.cwd = cwd
        self.env = {
            **os.environ,
            "MPLBACKEND": "module://matplotlib_inline.backend_inline",  # charts as display data
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # ipykernel's debugger: no warning on stderr
        }
        from jupyter_client.manager import AsyncKernelManager  # not before listening: 0.2 s

        self.manager = AsyncKernelManager(kernel_name=KERNELS[language])
        self.client: Any = None
        self.lock = asyncio.Lock()

    def describe(self) -> Frame:
        return {"id": self.id, "language": self.language, "cwd": self.cwd}

    async def start(self) -> None:
        await self.manager.start_kernel(cwd=self.cwd, env=self.env)
        await self._connect()

    async def _connect(self) -> None:
        if self.client is not None:
            self.client.stop_channels()
        self.client = self.manager.client()
        self.client.start_channels()
        await self.client.wait_for_ready(timeout=START_TIMEOUT_S)

    async def restart(self) -> None:
        await self.manager.restart_kernel(now=True)
        await self._connect()

    async def stop(self) -> None:
        if self.client is not None:
            self.client.stop_channels()
        await self.manager.shutdown_kernel(now=True)

    async def interrupt(self) -> None:
        if await self.manager.is_alive():
            await self.manager.interrupt_kernel()

    async def execute(self, code: str, env_vars: dict[str, str], gone: Gone) -> AsyncGenerator[Frame, None]:
        """The frames of running ``code``, ``env_vars`` set for it; ends with
        ``end_of_execution``. Called with ``lock`` held. Once ``gone()`` says the client
        went away (or the caller stops reading) the execution is interrupted."""
        if env_vars:
            await self._quietly(set_env(self.language, env_vars))
        # stop_on_error=False: executions are one at a time (``lock``), so the kernel has
        # no queue to abort on an error; with it, an execution sent just after an
        # interrupted one was aborted (the kernel's abort window outlives its idle status)
        # and answered with nothing
        msg_id = self.client.execute(code, store_history=True, allow_stdin=False, stop_on_error=False)
        try:
            async for frame in self._frames(msg_id, gone):
                yield frame
        except BaseException:  # the client went away (closed, cancelled): stop the code
            await asyncio.shield(self._stop(msg_id))
            raise
        finally:
            if env_vars and await self.manager.is_alive():
                await asyncio.shield(self._quietly(reset_env(self.language, env_vars, self.env)))
        yield {"type": "end_of_execution"}

    async def _frames(self, msg_id: str, gone: Gone) -> AsyncIterator[Frame]:
        while True:
            try:
                msg = await self.client.get_iopub_msg(timeout=TICK_S)
            except queue.Empty:  # nothing for a while: is the kernel still there?
                if gone():
                    raise ConnectionResetError("the client went away") from None
                if await self.manager.is_alive():
                    continue
                yield {"type": "error", "name": "KernelDied", "value": RESTARTED, "traceback": ""}
                await self.manager.restart_kernel(now=True)
                await self._connect()
                return
            if msg["parent_header"].get("msg_id") != msg_id:
                continue  # an earlier, interrupted execution's, or a silent one's
            kind, content = msg["msg_type"], msg["content"]
            if kind == "status" and content["execution_state"] == "idle":
                await self._drain_replies()
                return
            if (frame := to_frame(kind, content)) is not None:
                yield frame

    async def _stop(self, msg_id: str) -> None:
        """Interrupt the execution ``msg_id`` and wait until the kernel is done with it
        (``STOP_TIMEOUT_S`` at most): what is sent meanwhile would be aborted with it."""
        await self.interrupt()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_TIMEOUT_S):
                async for _frame in self._frames(msg_id, lambda: False):
                    pass

    async def _quietly(self, code: str) -> None:
        msg_id = self.client.execute(code, silent=True, store_history=False, allow_stdin=False)
        async for _frame in self._frames(msg_id, lambda: False):
            pass

    async def _drain_replies(self) -> None:
        """Drop the shell channel's execute replies (outputs come on iopub)."""
        shell = self.client.shell_channel
        while await shell.msg_ready():
            await shell.get_msg(timeout=0)


def to_frame(kind: str, content: Frame) -> Frame | None:
    """The NDJSON frame of one iopub message of an execution; None for the others."""
    if kind == "execute_input":
        return {"type": "number_of_executions", "execution_count": content["execution_count"]}
    if kind == "stream":
        return {"type": content["name"], "text": content["text"], "timestamp": time.time_ns()}
    if kind in ("execute_result", "display_data"):
        return to_result(content["data"], main=kind == "execute_result")
    if kind == "error":
        traceback = "\n".join(content.get("traceback") or ())
        return {"type": "error", "name": content["ename"], "value": content["evalue"], "traceback": traceback}
    return None


def to_result(data: dict[str, Any], *, main: bool) -> Frame:
    result: Frame = {"type": "result", "is_main_result": main}
    extra = {}
    for mime, value in data.items():
        if mime in FIELDS:
            result[FIELDS[mime]] = value
        else:
            extra[mime] = value
    if extra:
        result["extra"] = extra
    return result


def set_env(language: str, env_vars: dict[str, str]) -> str:
    """Code that sets ``env_vars`` in a kernel of ``language``."""
    if language == "r":
        return (
            "Sys.setenv(" + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in env_vars.items()) + ")"
        )
    return f"__import__('os').environ.update({json.dumps(env_vars)})"


def reset_env(language: str, env_vars: dict[str, str], start: dict[str, str]) -> str:
    """Code that gives the names of ``env_vars`` back their values in ``start``."""
    kept = {k: start[k] for k in env_vars if k in start}
    gone = [k for k in env_vars if k not in start]
    if language == "r":
        lines = [set_env("r", kept)] if kept else []
        return "\n".join([*lines, *(f"Sys.unsetenv({json.dumps(k)})" for k in gone)])
    return (
        f"__import__('os').environ.update({json.dumps(kept)})\n"
        f"[__import__('os').environ.pop(k, None) for k in {json.dumps(gone)}]"
    )


class Interpreter:
    """The contexts, and the default one of each language."""

    def __init__(self) -> None:
        self.contexts: dict[str, Context] = {}
        self.defaults: dict[str, asyncio.Task[Context]] = {}

    async def create(self, language: str, cwd: str) -> Context:
        context = Context(language, cwd)
        await context.start()
        self.contexts[context.id] = context
        return context

    async def default(self, language: str) -> Context:
        """The default context of ``language``, started on its first use; started again
        if it was removed or failed to start."""
        task = self.defaults.get(language)
        if task is None or (task.done() and (task.exception() or task.result().id not in self.contexts)):
            task = self.defaults[language] = asyncio.ensure_future(self.create(language, WORKSPACE))
        return await asyncio.shield(task)

    def get(self, context_id: str) -> Context:
        try:
            return self.contexts[context_id]
        except KeyError:
            raise refused(404, f"context {context_id!r} not found") from None

    async def remove(self, context_id: str) -> None:
        context = self.get(context_id)
        del self.contexts[context_id]
        await context.stop()

    async def close(self) -> None:
        await asyncio.gather(*(c.stop() for c in self.contexts.values()), return_exceptions=True)


def language_of(body: Frame) -> str:
    language = body.get("language") or "python"
    if not isinstance(language, str) or language.lower() not in KERNELS:
        raise refused(400, f"language: {language!r} is not one of {', '.join(KERNELS)}")
    return language.lower()


async def read_body(request: web.Request) -> Frame:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        raise refused(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise refused(400, "the body is not a JSON object")
    return body


async def health(request: web.Request) -> web.Response:
    return web.Response(text="OK")


async def execute(request: web.Request) -> web.StreamResponse:
    interpreter: Interpreter = request.app["interpreter"]
    body = await read_body(request)
    code, context_id, env_vars = body.get("code"), body.get("context_id"), body.get("env_vars") or {}
    if not isinstance(code, str):
        raise refused(400, "code: a string is required")
    if context_id and body.get("language"):
        raise refused(400, "context_id and language: give one of them, not both")
    if not isinstance(env_vars, dict) or not all(isinstance(v, str) for v in env_vars.values()):
        raise refused(400, "env_vars: an object of strings is required")
    if context_id:
        context = interpreter.get(str(context_id))
    else:
        context = await interpreter.default(language_of(body))
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)

    def gone() -> bool:  # aiohttp (3.8) does not cancel a handler whose client went away
        return request.transport is None or request.transport.is_closing()

    try:
        async with context.lock, contextlib.aclosing(context.execute(code, env_vars, gone)) as frames:
            async for frame in frames:  # a client gone raises here (closing ``frames`` interrupts it)
                await response.write(json.dumps(frame).encode() + b"\n")
    except ConnectionResetError:
        return response  # nobody to tell
    await response.write_eof()
    return response


async def create_context(request: web.Request) -> web.Response:
    body = await read_body(request)
    cwd = body.get("cwd") or WORKSPACE
    if not isinstance(cwd, str) or not os.path.isdir(cwd):
        raise refused(400, f"cwd: {cwd!r} is not a directory")
    context = await request.app["interpreter"].create(language_of(body), cwd)
    return web.json_response(context.describe())


async def list_contexts(request: web.Request) -> web.Response:
    interpreter: Interpreter = request.app["interpreter"]
    return web.json_response([c.describe() for c in interpreter.contexts.values()])


async def remove_context(request: web.Request) -> web.Response:
    await request.app["interpreter"].remove(request.match_info["id"])
    return web.Response(status=204)


async def restart_context(request: web.Request) -> web.Response:
    context = request.app["interpreter"].get(request.match_info["id"])
    async with context.lock:
        await context.restart()
    return web.Response(status=204)


def app(interpreter: Interpreter) -> web.Application:
    application = web.Application()
    application["interpreter"] = interpreter
    application.router.add_get("/health", health)
    application.router.add_post("/execute", execute)
    application.router.add_post("/contexts", create_context)
    application.router.add_get("/contexts", list_contexts)
    application.router.add_delete("/contexts/{id}", remove_context)
    application.router.add_post("/contexts/{id}/restart", restart_context)
    return application


async def serve(port: int) -> None:
    """Listen on ``port`` first (a sandbox's create waits for that), then start the
    default Python kernel (the first execution waits for it); until SIGTERM or SIGINT,
    then stop listening, give running requests ``SHUTDOWN_S``, and stop the kernels."""
    interpreter = Interpreter()
    runner = web.AppRunner(app(interpreter))
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port, shutdown_timeout=SHUTDOWN_S).start()
    warm = asyncio.ensure_future(interpreter.default("python"))
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        warm.cancel()
        await runner.cleanup()  # no longer listening; requests still running are cut
        await interpreter.close()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]) if len(sys.argv) > 1 else PORT))
