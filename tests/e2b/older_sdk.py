"""The E2B flow through an older ``e2b`` SDK, run by ``test_older_sdk.py`` with that
SDK's own interpreter (a venv of its own): every step asserts, and the last line says
``all checks passed``. Its environment points the SDK at the server (E2B_API_URL,
E2B_SANDBOX_URL, E2B_API_KEY)."""

from __future__ import annotations

import time

from e2b import CommandExitException, FilesystemEventType, Sandbox, TimeoutException
from e2b.exceptions import SandboxNotFoundException
from e2b.sandbox.commands.command_handle import PtySize


def main() -> None:
    sandbox = Sandbox.create(envs={"GREETING": "hi"}, metadata={"sdk": "older"})
    try:
        assert sandbox.commands.run('echo "$GREETING"; whoami').stdout.split() == ["hi", "sandbox"]
        assert sandbox.get_info().metadata == {"sdk": "older"}

        reader = sandbox.commands.run("read line; echo got $line", background=True, stdin=True)
        sandbox.commands.send_stdin(reader.pid, "one\n")
        assert reader.wait().stdout == "got one\n"
        try:
            sandbox.commands.run("exit 4")
            raise AssertionError("no CommandExitException")
        except CommandExitException as exc:
            assert exc.exit_code == 4
        try:
            sandbox.commands.run("sleep 30", timeout=1)
            raise AssertionError("no TimeoutException")
        except TimeoutException:
            pass

        terminal = sandbox.pty.create(PtySize(rows=24, cols=80))
        sandbox.pty.resize(terminal.pid, PtySize(rows=40, cols=120))
        sandbox.pty.send_stdin(terminal.pid, b"stty size; exit\n")
        screen: list[bytes] = []
        terminal.wait(on_pty=screen.append)
        assert b"40 120" in b"".join(screen), screen

        files = sandbox.files
        files.write("a/b.txt", "text")
        assert files.read("a/b.txt") == "text"
        assert files.make_dir("a/c/d") is True
        assert {e.name for e in files.list("a", depth=2)} == {"b.txt", "c", "d"}
        files.rename("a/b.txt", "a/c/e.txt")
        assert files.read("a/c/e.txt") == "text" and not files.exists("a/b.txt")
        files.remove("a/c")
        assert not files.exists("a/c/e.txt")
        watch = files.watch_dir("a")
        files.write("a/new.txt", "x")
        deadline = time.monotonic() + 10
        seen: list[tuple[str, FilesystemEventType]] = []
        while ("new.txt", FilesystemEventType.CREATE) not in seen and time.monotonic() < deadline:
            seen += [(e.name, e.type) for e in watch.get_new_events()]
        watch.stop()
        assert ("new.txt", FilesystemEventType.CREATE) in seen, seen

        sandbox.pause()
        resumed = Sandbox.connect(sandbox.sandbox_id)
        assert resumed.commands.run("cat a/new.txt").stdout == "x"
    finally:
        sandbox.kill()
    try:
        Sandbox.get_info(sandbox.sandbox_id)
        raise AssertionError("a killed sandbox was found")
    except SandboxNotFoundException:
        pass
    print("all checks passed")


if __name__ == "__main__":
    main()
