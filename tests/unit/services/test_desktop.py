"""DesktopService over the in-memory runtime: which template a desktop asks for, the
desktop started in every gui sandbox before its create returns (and not in others),
a create whose desktop fails leaves nothing, a wake starts it again, vnc_url and the
scope start needs. The desktop itself (Xvfb, noVNC in a browser) is
tests/e2e/test_desktop.py's, on runc."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.auth.principal import Principal, Role
from corral.core import Core
from corral.domain import ExecRequest, ExecResult, SandboxStatus
from corral.errors import Forbidden, InvalidInput, RuntimeFailure
from corral.runtime.memory import FakeRuntime, FakeSandbox
from corral.runtime.static_templates import StaticTemplates
from corral.services.desktop import SUPERVISE, DesktopService
from corral.services.sandboxes import CreateSandbox
from corral.settings import Settings
from tests.unit.services.conftest import close_core, owner


class Desktops:
    """The fake sandboxes' ``/bin/bash``: records each desktop start, answers ``code``."""

    def __init__(self) -> None:
        self.started: list[ExecRequest] = []
        self.code = 0

    def __call__(self, request: ExecRequest, sandbox: FakeSandbox) -> ExecResult:
        self.started.append(request)
        return ExecResult(self.code, b"", b"" if self.code == 0 else b"the desktop was not ready in 20 s\n")


@pytest.fixture
def desktops() -> Desktops:
    return Desktops()


@pytest.fixture
async def core(tmp_path: Path, desktops: Desktops) -> AsyncIterator[Core]:
    c = await Core.open(
        Settings(data_dir=tmp_path, runtime="process", reaper_interval_s=3600, standby_sandboxes=0),
        runtime=FakeRuntime({"/bin/bash": desktops}),
        templates=StaticTemplates(("base", "nodejs", "gui")),
    )
    yield c
    await close_core(c)


@pytest.mark.parametrize(
    ("template", "desktop", "expected"),
    [
        (None, True, "gui"),
        ("base", True, "gui"),
        ("gui", True, "gui"),
        ("gui", False, "gui"),
        (None, False, None),
    ],
)
def test_the_template_of_a_desktop(template: str | None, desktop: bool, expected: str | None) -> None:
    assert DesktopService.template_for(template, desktop=desktop) == expected


def test_a_desktop_on_another_template_is_refused() -> None:
    assert DesktopService.template_for("nodejs", desktop=False) == "nodejs"
    with pytest.raises(InvalidInput) as refused:
        DesktopService.template_for("nodejs", desktop=True)
    assert refused.value.field == "gui"


async def test_a_gui_sandbox_has_its_desktop_when_created(core: Core, desktops: Desktops) -> None:
    me = await owner(core)
    plain = await core.sandboxes.create(me, CreateSandbox(template="base"))
    assert desktops.started == [] and core.desktop.vnc_url(plain) is None
    sandbox = await core.sandboxes.create(me, CreateSandbox(template="gui"))
    [started] = desktops.started
    assert started.cmd == "/bin/bash" and SUPERVISE in started.args
    url = core.desktop.vnc_url(sandbox)
    assert (
        url
        == f"http://sbx-{sandbox.id}-6080.localhost:8080/?token={core.previews.pass_for(sandbox.id, 6080)}"
    )
    await core.desktop.start(me, sandbox.id)  # again: the script finds it running
    assert len(desktops.started) == 2


async def test_a_create_whose_desktop_fails_leaves_nothing(core: Core, desktops: Desktops) -> None:
    me = await owner(core)
    desktops.code = 1
    with pytest.raises(RuntimeFailure, match="not ready"):
        await core.sandboxes.create(me, CreateSandbox(template="gui"))
    assert await core.sandboxes.list(me) == []
    assert await core.runtime.list_ids() == set()


async def test_starting_a_desktop_needs_exec(core: Core, desktops: Desktops) -> None:
    me = await owner(core)
    sandbox = await core.sandboxes.create(me, CreateSandbox(template="gui"))
    with pytest.raises(Forbidden):
        await core.desktop.start(Principal(me.org_id, Role.VIEWER), sandbox.id)
    assert len(desktops.started) == 1


async def test_a_woken_gui_sandbox_has_its_desktop_again(core: Core, desktops: Desktops) -> None:
    me = await owner(core)
    sandbox = await core.sandboxes.create(me, CreateSandbox(template="gui"))
    await core.lifecycle.hibernate(me, sandbox.id)
    assert len(desktops.started) == 1
    await core.lifecycle.wake(me, sandbox.id)
    assert len(desktops.started) == 2  # its processes were gone: the desktop is started again
    desktops.code = 1
    await core.lifecycle.hibernate(me, sandbox.id)
    woken = await core.lifecycle.wake(me, sandbox.id)  # a desktop that fails on a wake is logged
    assert woken.status is SandboxStatus.RUNNING and len(desktops.started) == 3
