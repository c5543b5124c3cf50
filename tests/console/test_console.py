"""The console in headless Chromium against a real server on runc: sign-in (a wrong
key, a key, a user's token refused mid-session), a sandbox created and its terminal
typed in, a file uploaded and read by an exec, a code session's result and audit
events arriving live, a key minted and revoked, a viewer's read-only view, a sandbox
killed while its page is open; screenshots of the main pages, checked not blank."""

from __future__ import annotations

import base64
import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest

from tests.console.conftest import Console, Server
from tests.support import surface
from tests.support.conditions import eventually_async

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.integration]

BACKGROUNDS = [(246, 247, 249), (255, 255, 255)]  # the page's and the panels'


async def keep_screenshot(browser: Console, screenshots: Path, name: str) -> None:
    """Saves a screenshot of the page as ``<name>.png`` and checks that it is not blank:
    neither background covers nearly all of it."""
    png = await browser.page.screenshot()
    (screenshots / f"{name}.png").write_bytes(base64.b64decode(png))
    shares = await browser.page.color_shares(BACKGROUNDS, tolerance=2)
    assert max(shares) < 0.97 and sum(shares) < 0.995, f"{name} looks blank: {shares}"


async def terminal_columns(browser: Console, label: str) -> int:
    """The columns ``echo <label>=$(stty size)`` printed last in the terminal, once its
    output is there (the typed command line itself shows ``<label>=`` before it)."""
    found: list[tuple[str, str]] = []

    async def printed() -> bool:
        text = await browser.text("#terminal .xterm-rows")
        found[:] = re.findall(rf"{label}=(\d+) (\d+)", text)
        return bool(found)

    await eventually_async(printed, 30, lambda: f"no {label}=<rows> <columns> in the terminal")
    return int(found[-1][1])


async def test_a_wrong_key_says_so_and_stays_on_the_sign_in_page(browser: Console, screenshots: Path) -> None:
    await browser.sign_in(f"ek_wrong{secrets.token_hex(4)}_{secrets.token_hex(16)}")
    await browser.shows("[role=alert]", "corral refused it")
    await browser.sign_in("not-a-key")
    await browser.shows("[role=alert]", "starts with ek_")
    assert await browser.exists("#signin") and not await browser.exists("#role")
    await keep_screenshot(browser, screenshots, "sign-in")


async def test_create_a_sandbox_and_type_in_its_terminal(
    browser: Console, console_server: Server, screenshots: Path
) -> None:
    await browser.signed_in(console_server.key)
    await browser.go("#/sandboxes")
    await browser.click("#create")
    await browser.page.settled("location.hash.startsWith('#/sandboxes/sb-')", 60)
    sid = str(await browser.page.evaluate("location.hash.split('/')[2]"))
    try:
        await browser.shows("#terminal-state", "connected")
        await browser.page.evaluate("document.querySelector('#terminal textarea').focus()")
        await browser.page.call("Input.insertText", text="echo hi-$((6*7))")
        await browser.press_enter()
        await browser.shows("#terminal .xterm-rows", "hi-42")
        await keep_screenshot(browser, screenshots, "sandbox-terminal")

        await browser.page.call("Input.insertText", text="echo wide=$(stty size)")
        await browser.press_enter()
        wide = await terminal_columns(browser, "wide")
        await browser.page.call(  # a narrower window: the terminal is fitted and the PTY resized
            "Emulation.setDeviceMetricsOverride", width=900, height=860, deviceScaleFactor=1, mobile=False
        )
        try:  # once corral took the new size (the page's resize is a request of its own)
            await browser.page.settled(
                f"parseInt(document.querySelector('#terminal').dataset.pty) < {wide}", 30
            )
            await browser.page.evaluate("document.querySelector('#terminal textarea').focus()")
            await browser.page.call("Input.insertText", text="echo narrow=$(stty size)")
            await browser.press_enter()
            assert await terminal_columns(browser, "narrow") < wide
        finally:
            await browser.page.call("Emulation.clearDeviceMetricsOverride")

        await browser.page.call("Input.insertText", text="exit")  # a dropped terminal: a way back
        await browser.press_enter()
        await browser.shows("[role=status], .notice", "shell exited")
        await browser.click("#reconnect")
        await browser.shows("#terminal-state", "connected")

        await browser.go("#/sandboxes")
        await browser.shows("#sandboxes", sid)
        await keep_screenshot(browser, screenshots, "sandboxes")
    finally:
        async with console_server.http() as http:
            await http.delete(f"/api/sandboxes/{sid}")


async def test_an_uploaded_file_is_seen_by_an_exec(
    browser: Console, console_server: Server, sandbox: dict[str, Any], tmp_path: Path
) -> None:
    upload = tmp_path / "greeting.txt"
    upload.write_text("uploaded through the console\n")
    await browser.signed_in(console_server.key)
    await browser.go(f"#/sandboxes/{sandbox['sandboxID']}")
    await browser.click("#tab-files")
    await browser.page.settled("document.getElementById('upload') !== null")
    document = await browser.page.call("DOM.getDocument")
    node = await browser.page.call("DOM.querySelector", nodeId=document["root"]["nodeId"], selector="#upload")
    await browser.page.call("DOM.setFileInputFiles", nodeId=node["nodeId"], files=[str(upload)])
    await browser.shows("#files", "greeting.txt")

    await browser.click("#tab-exec")
    await browser.page.settled("document.getElementById('command') !== null")
    await browser.fill("#command", "cat /root/greeting.txt")
    await browser.click("#run")
    await browser.shows("#stdout", "uploaded through the console")
    assert await browser.text("#exit-code") == "0"

    sid = sandbox["sandboxID"]  # an exec session started elsewhere: its output in the page
    async with console_server.http() as http:
        started = await http.post(
            f"/api/sandboxes/{sid}/exec", json={"cmd": "sh", "args": ["-c", "echo from-a-session"]}
        )
        assert started.status_code == 201, started.text
    await browser.click("#tab-ports")  # the Exec tab again, its list fresh
    await browser.click("#tab-exec")
    await browser.click(f"tr[data-id='{started.json()['sessionID']}'] button")
    await browser.shows("#session-output", "from-a-session")

    await browser.click("#tab-network")  # the egress policy, changed in the page
    await browser.page.settled("document.getElementById('egress-mode') !== null")
    await browser.page.evaluate(
        "(s => { s.value = 'deny_all'; s.dispatchEvent(new Event('change', {bubbles: true})); })"
        "(document.getElementById('egress-mode'))"
    )
    await browser.fill("#egress-allow", "example.com")
    await browser.click("#egress-save")
    async with console_server.http() as http:

        async def denied_but_one() -> bool:
            egress = (await http.get(f"/api/sandboxes/{sid}/allowed-hosts")).json()["egress"]
            return bool(egress["mode"] == "deny_all" and egress["allow"] == ["example.com"])

        await eventually_async(denied_but_one, 30, "the policy was never saved")


async def test_a_code_session_shows_its_result_and_audit_events_live(
    browser: Console, console_server: Server, screenshots: Path
) -> None:
    await browser.signed_in(console_server.key)
    await browser.go("#/sessions")
    await browser.page.settled("document.getElementById('code') !== null")
    await browser.fill("#code", "print('answer', 6 * 7)\n")
    await browser.click("#launch")
    await browser.page.settled("location.hash.startsWith('#/sessions/')", 30)
    await browser.shows("#session-audit", "sandbox_started", 60)  # from the stream, no reload
    await browser.shows("#session-output", "answer 42", 60)
    await browser.shows("#session-exit", "0", 60)
    await browser.shows("#session-audit", "session_torn_down", 60)
    await browser.shows("#phase", "succeeded", 60)
    assert not await browser.exists("[role=alert]")
    await keep_screenshot(browser, screenshots, "session")


async def test_mint_a_key_shown_once_and_revoke_it(
    browser: Console, console_server: Server, screenshots: Path
) -> None:
    await browser.signed_in(console_server.key)
    await browser.go("#/keys")
    await browser.page.settled("document.getElementById('mint') !== null")
    await browser.fill("#key-name", "from-the-console")
    await browser.click("#mint")
    await browser.page.settled("document.getElementById('minted-key')?.value.startsWith('ek_')")
    minted = str(await browser.page.evaluate("document.getElementById('minted-key').value"))
    key_id = minted.split("_")[1]
    async with console_server.http(minted) as http:
        assert (await http.get("/api/me")).json()["role"] == "developer"
    await browser.shows("#keys", "from-the-console")
    await keep_screenshot(browser, screenshots, "keys")

    row = f"#keys tr[data-id='{key_id}'] button.danger"
    await browser.click(row)  # asks first
    await browser.shows(row, "sure?")
    await browser.click(row)
    await browser.shows(f"#keys tr[data-id='{key_id}']", "revoked")
    async with console_server.http(minted) as http:
        assert (await http.get("/api/me")).status_code == 401


async def test_a_viewer_sees_everything_and_can_change_nothing(
    browser: Console, console_server: Server, sandbox: dict[str, Any], screenshots: Path
) -> None:
    async with console_server.http() as http:
        viewer = (await http.post("/api/keys", json={"role": "viewer", "name": "viewer"})).json()["key"]
    sid = sandbox["sandboxID"]
    await browser.signed_in(viewer)
    assert await browser.text("#role") == "viewer"
    await browser.go("#/sandboxes")
    await browser.shows("#sandboxes", sid)
    assert not await browser.exists("#create")
    assert not await browser.page.evaluate("[...document.querySelectorAll('#sandboxes button')].length")
    await browser.go(f"#/sandboxes/{sid}")
    await browser.shows("#page", "can look but not type")
    assert not await browser.page.evaluate(
        "[...document.querySelectorAll('#page button')].some(b => /Kill|Hibernate|Wake/.test(b.innerText))"
    )
    await keep_screenshot(browser, screenshots, "viewer-sandbox")
    await browser.go("#/keys")
    await browser.shows("#page", "needs the admin or owner role")
    # what the page does not offer, the API refuses (the same credential, from the page)
    assert await browser.fetch("POST", "/api/sandboxes") == 403
    assert await browser.fetch("DELETE", f"/api/sandboxes/{sid}") == 403
    assert await browser.fetch("GET", f"/api/sandboxes/{sid}") == 200


async def test_a_sandbox_killed_while_its_page_is_open_says_so(
    browser: Console, console_server: Server, sandbox: dict[str, Any]
) -> None:
    sid = sandbox["sandboxID"]
    await browser.signed_in(console_server.key)
    await browser.go(f"#/sandboxes/{sid}")
    await browser.shows("#terminal-state", "connected")
    async with console_server.http() as http:
        assert (await http.delete(f"/api/sandboxes/{sid}")).status_code == 204
    await browser.shows("#gone", "is gone")
    await browser.click("#gone a")
    await browser.page.settled("location.hash === '#/sandboxes'")


async def test_a_users_token_refused_mid_session_signs_out_with_a_message(
    browser: Console, console_server: Server
) -> None:
    email = f"ada-{secrets.token_hex(3)}@example.com"
    async with console_server.http() as http:
        added = await http.post("/api/users", json={"email": email, "role": "developer"})
        assert added.status_code == 201, added.text
    token = console_server.cli("users", "token", email).splitlines()[-1].strip()
    await browser.sign_in(token, email="someone-else@example.com")
    await browser.shows("[role=alert]", f"it is {email}'s")
    secret = (console_server.data_dir / "jwt-secret").read_text().strip()
    await browser.sign_in(surface.resigned(token, secret, expires_in=-60), email=email)
    await browser.shows("[role=alert]", "token expired")
    await browser.signed_in(token, email=email)
    assert email in await browser.page.evaluate(
        "document.getElementById('org-switch').selectedOptions[0].text"
    )
    await browser.go("#/sandboxes")
    async with console_server.http() as http:  # its tokens are refused from now on
        assert (await http.delete(f"/api/users/{added.json()['id']}")).status_code == 204
    await browser.shows("#root", "Signed out", 30)
    assert await browser.exists("#signin")


async def test_the_main_pages_are_drawn(browser: Console, console_server: Server, screenshots: Path) -> None:
    await browser.signed_in(console_server.key)
    for page, ready in (
        ("#/health", "#chart-live canvas"),
        ("#/audit", "#audit"),
        ("#/templates", "#templates"),
        ("#/sessions", "#code"),
        ("#/users", "#add-user"),
    ):
        await browser.go(page)
        await browser.page.settled(f"document.querySelector({ready!r}) !== null", 30)
        await keep_screenshot(browser, screenshots, page.strip("#/"))
    await browser.go("#/audit")  # filtered by an actor, on the server
    await browser.fill("#audit-actor", "nobody-in-particular")
    await browser.click("#audit-filter")
    await browser.shows("#page", "No audit records match")


async def test_users_and_roles_and_a_second_org_to_switch_to(
    browser: Console, console_server: Server
) -> None:
    await browser.signed_in(console_server.key)
    await browser.go("#/users")
    email = f"bob-{secrets.token_hex(3)}@example.com"
    await browser.fill("#user-email", email)
    await browser.click("#add-user")
    await browser.shows("#users", email)
    async with console_server.http() as http:

        async def user() -> dict[str, Any] | None:
            return next((u for u in (await http.get("/api/users")).json() if u["email"] == email), None)

        added = await user()
        assert added is not None and added["role"] == "developer"
        row = f"#users tr[data-id='{added['id']}']"
        await browser.page.evaluate(
            f"(s => {{ s.value = 'viewer'; s.dispatchEvent(new Event('change', {{bubbles: true}})); }})"
            f"(document.querySelector({json.dumps(row + ' select')}))"
        )
        await eventually_async(lambda: _role_is(user, "viewer"), 30, "the role never changed")
        await browser.click(f"{row} button.danger")
        await browser.shows(f"{row} button.danger", "sure?")
        await browser.click(f"{row} button.danger")
        await eventually_async(lambda: _gone(user), 30, "the user was never removed")
        await browser.page.settled(f"document.querySelector({json.dumps(row)}) === null", 30)

    org = f"beta-{secrets.token_hex(3)}"
    console_server.cli("org", "create", org)
    beta_key = console_server.cli("keys", "create", "--role", "owner", "--org", org).splitlines()[-1].strip()
    await browser.page.evaluate(
        "(s => { s.value = '+'; s.dispatchEvent(new Event('change', {bubbles: true})); })"
        "(document.getElementById('org-switch'))"
    )
    await browser.shows("#root", "Back to default")  # a way back without signing in again
    await browser.fill("#key", beta_key)
    await browser.click("#signin")
    await browser.page.settled("document.getElementById('role') !== null", 30)
    assert org in await browser.page.evaluate("document.getElementById('org-switch').selectedOptions[0].text")
    await browser.go("#/sandboxes")
    await browser.shows("#page", "No sandboxes yet")  # the other org's, none
    default = await browser.page.evaluate(
        "[...document.getElementById('org-switch').options].find(o => o.text.startsWith('default')).value"
    )
    await browser.page.evaluate(
        f"(s => {{ s.value = {json.dumps(default)}; s.dispatchEvent(new Event('change', {{bubbles: true}})); }})"
        "(document.getElementById('org-switch'))"
    )
    await browser.page.settled(
        "document.getElementById('org-switch')?.selectedOptions[0].text.startsWith('default') === true", 30
    )
    await browser.click("#sign-out")  # out of default: the tab's other org remains
    await browser.page.settled(
        f"document.getElementById('org-switch')?.selectedOptions[0].text.startsWith({json.dumps(org)}) === true",
        30,
    )
    await browser.click("#sign-out")  # and out of that one: the sign-in page
    await browser.shows("#root", "Signed out")


async def _role_is(user: Any, role: str) -> bool:
    found = await user()
    return found is not None and found["role"] == role


async def _gone(user: Any) -> bool:
    return await user() is None


async def test_an_agent_run_without_a_model_key_says_what_to_set(
    browser: Console, console_server: Server
) -> None:
    await browser.signed_in(console_server.key)
    await browser.go("#/runs")
    await browser.fill("#run-prompt", "open a terminal")
    await browser.click("#run-launch")
    await browser.shows("[role=alert]", "CORRAL_ANTHROPIC_API_KEY")
    assert await browser.page.evaluate("location.hash") == "#/runs"


async def test_a_template_build_streams_its_log(browser: Console, console_server: Server) -> None:
    name = f"t{secrets.token_hex(3)}"
    await browser.signed_in(console_server.key)
    await browser.go("#/templates")
    await browser.fill("#template-name", name)
    await browser.fill("#dockerfile", "FROM base\nRUN echo built-by-the-console > /etc/console-note\n")
    await browser.click("#build")
    await browser.shows("#build-log", "built-by-the-console", 120)
    await browser.shows("#page", f"Built {name}", 120)
    await browser.shows("#templates", name)
    async with console_server.http() as http:
        assert (await http.delete(f"/api/templates/{name}")).status_code == 204


async def test_checkpoint_fork_hibernate_and_wake_from_the_page(
    browser: Console, console_server: Server, sandbox: dict[str, Any]
) -> None:
    sid = sandbox["sandboxID"]
    await browser.signed_in(console_server.key)
    await browser.go(f"#/sandboxes/{sid}")
    await browser.click("#tab-checkpoints")
    await browser.fill("#checkpoint-name", "before-the-fork")
    await browser.click("#checkpoint")
    await browser.shows("#checkpoints", "ready", 90)
    await browser.click("#checkpoints button.fork")
    await browser.page.settled(
        f"/^#\\/sandboxes\\/sb-/.test(location.hash) && !location.hash.endsWith({sid!r})", 90
    )
    forked = str(await browser.page.evaluate("location.hash.split('/')[2]"))
    try:
        await browser.shows("#page .title", "running", 30)
        await browser.click("#hibernate")
        await browser.shows("#page .title", "hibernated", 90)
        await browser.shows("#page", "This sandbox is hibernated")
        await browser.click("#wake")
        await browser.shows("#page .title", "running", 90)
        await browser.shows("#terminal-state", "connected", 60)
    finally:
        async with console_server.http() as http:
            await http.delete(f"/api/sandboxes/{forked}")
