"""``corral template ...`` with a fake template store, and ``corral serve``'s settings."""

from __future__ import annotations

import os
import sys
import types
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.cli import template as template_cli
from corral.cli.main import app
from corral.domain import Template
from corral.errors import NotFound
from corral.ports import ProgressFn
from corral.settings import Settings

runner = CliRunner()


class FakeTemplates:
    def __init__(self) -> None:
        self.built: dict[str, Template] = {}
        self.builds: list[tuple[str, bool]] = []
        self.opened_with: list[Settings] = []

    def known(self) -> list[str]:
        return ["base", "python"]

    async def get(self, name: str) -> Template:
        if name not in self.built:
            raise NotFound(name)
        return self.built[name]

    async def build(self, name: str, progress: ProgressFn | None = None, force: bool = False) -> Template:
        self.builds.append((name, force))
        if progress:
            for step, fraction in (("bootstrap", 0.1), ("bootstrap", 0.3), ("packages", 0.6), ("done", 1.0)):
                progress(f"{name}: {step}", fraction)
        template = Template(
            name,
            "ab" * 32,
            f"/t/{name}",
            datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
            150 * 1024 * 1024,
        )
        self.built[name] = template
        return template

    async def list(self) -> list[Template]:
        return list(self.built.values())


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeTemplates:
    store = FakeTemplates()

    def open_templates(settings: Settings) -> FakeTemplates:
        store.opened_with.append(settings)
        return store

    monkeypatch.setattr(template_cli, "open_templates", open_templates)
    return store


def test_build_reports_progress_once_per_message_and_the_result(fake: FakeTemplates, tmp_path: Path) -> None:
    result = runner.invoke(app, ["template", "build", "base", "--force", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:3] == ["[ 10%] base: bootstrap", "[ 60%] base: packages", "[100%] base: done"]
    assert lines[3].startswith("template base: abababababab (150.0 MB) ready in ")
    assert fake.builds == [("base", True)]
    assert fake.opened_with[0].data_dir == tmp_path


def test_build_of_an_unknown_template_names_the_known_ones(fake: FakeTemplates) -> None:
    result = runner.invoke(app, ["template", "build", "gui"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: unknown template 'gui'; known templates: base, python"
    assert fake.builds == []


def test_ls_shows_built_and_buildable_templates(fake: FakeTemplates) -> None:
    runner.invoke(app, ["template", "build", "python"])
    result = runner.invoke(app, ["template", "ls"])
    assert result.exit_code == 0
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[1:]}
    assert rows["base"][:2] == ["not", "built"]
    assert rows["python"][:2] == ["built", "abababababab"]


def fake_server(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    calls: list[Settings] = []
    module = types.ModuleType("corral.api.server")
    module.serve = calls.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "corral.api.server", module)
    return calls


def test_serve_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = fake_server(monkeypatch)
    monkeypatch.setenv("CORRAL_HOST", "0.0.0.0")
    monkeypatch.setenv("CORRAL_PORT", "9000")
    monkeypatch.setenv("CORRAL_RUNTIME", "process")
    result = runner.invoke(
        app,
        [
            "serve",
            "--port",
            "8181",
            "--data-dir",
            str(tmp_path),
            "--database-url",
            "sqlite+aiosqlite:///x.db",
            "--api-key",
            "ek_abcdefgh_0123456789abcdef",
        ],
    )
    assert result.exit_code == 0, result.output
    [settings] = calls
    assert (settings.host, settings.port, settings.data_dir) == ("0.0.0.0", 8181, tmp_path)
    assert settings.db_url == "sqlite+aiosqlite:///x.db"
    assert settings.api_key == "ek_abcdefgh_0123456789abcdef"
    assert settings.runtime == "process"
    assert settings.access_log is False  # off unless asked for


def test_serve_access_log_flag_and_help(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = fake_server(monkeypatch)
    result = runner.invoke(app, ["serve", "--data-dir", str(tmp_path), "--access-log"])
    assert result.exit_code == 0, result.output
    assert calls[0].access_log is True
    shown = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    # the environment variables are shown (square brackets would be taken as markup)
    assert "(env CORRAL_HOST; default 127.0.0.1)" in shown and "CORRAL_ACCESS_LOG" in shown


def test_serve_rejects_a_bad_setting_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_server(monkeypatch)
    result = runner.invoke(app, ["serve", "--port", "0"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: invalid settings: CORRAL_PORT:")
    assert calls == []


def test_serve_on_a_data_dir_another_server_holds_says_so_in_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from corral.datadir import claim

    calls = fake_server(monkeypatch)
    held = claim(tmp_path)  # a server already serving from it (this process stands in)
    try:
        result = runner.invoke(app, ["serve", "--data-dir", str(tmp_path)])
    finally:
        held.release()
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"error: another corral server (pid {os.getpid()}) is serving from {tmp_path}"
    )
    assert calls == []
