"""TemplateStore with a fake mmdebstrap (fast, offline): build-once locking, atomic
publishing, ownership shifting, progress, failures and leftovers. Needs root (the
ownership shift is lchown); the real mmdebstrap build is exercised by the
``base_template`` fixture of the runtime tests.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import sys
from pathlib import Path

import pytest

from corral.errors import InvalidInput, NotFound, RuntimeFailure
from corral.runtime.templates import Recipe, TemplateStore
from corral.settings import Settings
from tests.support.conditions import eventually_async

pytestmark = pytest.mark.integration

FAKE = str(Path(__file__).with_name("fake_mmdebstrap.py"))
RECIPES = {"fake": Recipe(("python3", "bash"))}


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    monkeypatch.setenv("FAKE_MMDEBSTRAP_COUNTER", str(tmp_path / "builds"))
    monkeypatch.setenv("FAKE_MMDEBSTRAP_PIDFILE", str(tmp_path / "builder.pid"))
    monkeypatch.delenv("FAKE_MMDEBSTRAP_FAIL", raising=False)
    return Settings(data_dir=tmp_path / "data")


def store(settings: Settings) -> TemplateStore:
    return TemplateStore(settings, recipes=RECIPES, mmdebstrap=FAKE)


def builds(settings: Settings) -> int:
    counter = settings.data_dir.parent / "builds"
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def work_dirs(settings: Settings) -> list[str]:
    parent = settings.templates_dir / "fake"
    return sorted(p.name for p in parent.iterdir() if p.name.startswith((".build-", ".retired-")))


async def test_concurrent_first_uses_build_once(settings: Settings) -> None:
    one, two = store(settings), store(settings)  # two stores: only the file lock joins them
    script = (
        "import asyncio, sys\n"
        "from pathlib import Path\n"
        "from corral.runtime.templates import Recipe, TemplateStore\n"
        "from corral.settings import Settings\n"
        "s = TemplateStore(Settings(data_dir=Path(sys.argv[1])), recipes={'fake': Recipe(('python3', 'bash'))},"
        " mmdebstrap=sys.argv[2])\n"
        "print(asyncio.run(s.get('fake')).digest)\n"
    )
    other_process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(settings.data_dir), FAKE, stdout=asyncio.subprocess.PIPE
    )
    results = await asyncio.gather(one.get("fake"), one.get("fake"), two.get("fake"), two.build("fake"))
    out, _ = await other_process.communicate()
    assert other_process.returncode == 0
    assert {t.digest for t in results} == {out.decode().strip()} == {one.digest("fake")}
    assert builds(settings) == 1
    assert work_dirs(settings) == []


async def test_built_tree_is_shifted_normalized_and_read_only(settings: Settings) -> None:
    progress: list[float] = []
    template = await store(settings).build("fake", lambda _message, fraction: progress.append(fraction))
    assert progress == sorted(progress) and progress[-1] == 1.0 and len(progress) >= 8
    root = Path(template.rootfs)
    base = settings.uid_base
    assert os.lstat(root).st_uid == base
    assert os.lstat(root / "var" / "cache").st_uid == base + 42  # relative ids kept
    su = os.lstat(root / "usr" / "bin" / "su")
    assert (su.st_uid, stat.S_IMODE(su.st_mode)) == (base, 0o4755)  # setuid survives chown
    assert os.getxattr(root / "usr" / "bin" / "ping", "security.capability")  # so do file caps
    assert os.lstat(root / "usr" / "bin" / "perl5").st_uid == base  # hard links shifted once
    assert os.lstat(root / "usr" / "bin" / "python3").st_uid == base  # symlinks too
    assert (root / "etc" / "hostname").read_text() == "localhost\n"
    assert (root / "etc" / "resolv.conf").read_text() == ""
    assert (root / "opt" / "corral" / "agent.py").is_file()
    assert not (root / "usr" / "lib" / "python3.11" / "EXTERNALLY-MANAGED").exists()
    assert stat.S_IMODE(os.stat(root.parent).st_mode) == 0o555
    assert template.size_bytes > 0
    assert await store(settings).list() == [template]
    assert await store(settings).get("fake") == template  # found on disk, not rebuilt
    assert builds(settings) == 1


async def test_failed_build_publishes_nothing(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_MMDEBSTRAP_FAIL", "1")
    with pytest.raises(RuntimeFailure, match="download failed"):
        await store(settings).get("fake")
    assert work_dirs(settings) == []
    assert await store(settings).list() == []


async def test_cancelled_build_stops_the_builder_and_cleans_up(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FAKE_MMDEBSTRAP_SLEEP", "30")
    task = asyncio.create_task(store(settings).build("fake"))
    pidfile = tmp_path / "builder.pid"
    await eventually_async(lambda: pidfile.exists() and pidfile.read_text(), 10, "the builder never started")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(int(pidfile.read_text()), 0)
    assert work_dirs(settings) == []


async def test_leftovers_of_interrupted_builds_are_removed(settings: Settings) -> None:
    leftover = settings.templates_dir / "fake" / ".build-0123456789abcdef-dead"
    (leftover / "rootfs" / "etc").mkdir(parents=True)
    await store(settings).build("fake")
    assert work_dirs(settings) == []


async def test_forced_rebuild_replaces_and_retires(settings: Settings) -> None:
    templates = store(settings)
    first = await templates.build("fake")
    second = await templates.build("fake", force=True)
    third = await templates.build("fake", force=True)
    assert builds(settings) == 3
    assert first.digest == second.digest == third.digest and third.created_at > first.created_at
    assert [name[:9] for name in work_dirs(settings)] == [".retired-"]  # older ones collected


async def test_get_answers_the_current_build_of_a_name(settings: Settings) -> None:
    """``get`` keeps what it read of a build, and reads again once it is another."""
    templates = store(settings)
    first = await templates.get("fake")
    assert await templates.get("fake") == first
    rebuilt = await templates.build("fake", force=True)
    assert rebuilt.created_at > first.created_at
    assert await templates.get("fake") == rebuilt  # the new template.json, not the one kept
    shutil.rmtree(settings.templates_dir / "fake" / rebuilt.digest)  # gone behind the store's back
    again = await templates.get("fake")  # built anew, not the kept answer
    assert again.created_at > rebuilt.created_at
    assert builds(settings) == 3


async def test_a_recipes_files_are_laid_in_and_make_its_digest(settings: Settings) -> None:
    files = (("usr/local/lib/corral/tool.py", "print('hi')\n"),)
    recipe = Recipe(("python3", "bash"), files=files)
    template = await TemplateStore(settings, recipes={"fake": recipe}, mmdebstrap=FAKE).build("fake")
    laid = Path(template.rootfs) / "usr" / "local" / "lib" / "corral" / "tool.py"
    assert laid.read_text() == "print('hi')\n"
    assert (laid.lstat().st_uid, stat.S_IMODE(laid.lstat().st_mode)) == (settings.uid_base, 0o644)
    made = laid.parent.lstat()
    assert (made.st_uid, stat.S_IMODE(made.st_mode)) == (settings.uid_base, 0o755)
    changed = Recipe(("python3", "bash"), files=((files[0][0], "print('bye')\n"),))
    assert len({recipe.digest(1, 2), changed.digest(1, 2), Recipe(("python3", "bash")).digest(1, 2)}) == 3


async def test_names_and_digests(settings: Settings) -> None:
    templates = store(settings)
    assert templates.known() == ["fake"]
    with pytest.raises(NotFound):
        await templates.get("nonexistent")
    with pytest.raises(InvalidInput):
        await templates.get("../etc")
    default = TemplateStore(settings)
    assert default.known() == ["agent", "base", "code-interpreter", "go", "gui", "nodejs", "python"]
    assert len({default.digest(name) for name in default.known()}) == 7
    hooked = Recipe(("python3",), hooks=('chroot "$1" true',))
    assert hooked.digest(1, 2) != Recipe(("python3",)).digest(1, 2)  # a recipe's hooks make it
    shifted = TemplateStore(settings.model_copy(update={"uid_base": 200000}))
    assert shifted.digest("base") != default.digest("base")
