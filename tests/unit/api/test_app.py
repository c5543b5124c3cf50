"""App wiring: the factory, the first key, health, and the uvicorn options."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from corral.api import app as app_module
from corral.api.app import create_app
from corral.api.front import FrontProtocol
from corral.api.server import UVICORN_OPTIONS, config
from corral.errors import RuntimeFailure
from corral.runtime.process import ProcessRuntime
from corral.runtime.static_templates import StaticTemplates
from corral.settings import Settings
from tests.support.app import make_settings


async def test_first_start_prints_and_saves_the_admin_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path, runtime="process", reaper_interval_s=3600)  # type: ignore[call-arg]
    app = create_app(
        settings, runtime=ProcessRuntime(tmp_path / "rt"), templates=StaticTemplates(), reconcile=False
    )
    async with app.router.lifespan_context(app):
        key = (tmp_path / "admin-key").read_text().strip()
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://t", headers={"X-API-Key": key}
        ) as c:
            assert (await c.get("/api/sandboxes")).json() == []
    err = capsys.readouterr().err
    assert f"admin key: {key}" in err and str(tmp_path / "admin-key") in err
    async with app.router.lifespan_context(app):  # a second start has a key already: silent
        pass
    assert "admin key" not in capsys.readouterr().err


class SickRuntime(ProcessRuntime):
    async def health(self) -> dict[str, object]:
        raise RuntimeFailure("runc is not installed")


async def test_healthz_is_503_when_the_runtime_does_not_answer(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    app = create_app(settings, runtime=SickRuntime(tmp_path / "rt"), templates=StaticTemplates())
    transport = httpx.ASGITransport(app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as c,
    ):
        response = await c.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded" and body["runtime"] == {
        "name": "process",
        "error": "runc is not installed",
    }


def test_unknown_overrides_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="runtim"):
        create_app(make_settings(tmp_path), runtim=object())


def test_factory_reads_settings_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CORRAL_PUBLIC_URL", "https://corral.example")
    seen: list[Settings] = []
    real = app_module.create_app

    def spy(settings: Settings, **overrides: object) -> FastAPI:
        seen.append(settings)
        return real(settings, **overrides)

    monkeypatch.setattr(app_module, "create_app", spy)
    app = app_module.main()
    assert isinstance(app, FastAPI) and not list(tmp_path.iterdir())  # nothing opened yet
    assert seen[0].data_dir == tmp_path and seen[0].base_url == "https://corral.example"


def test_uvicorn_options_never_negotiate_permessage_deflate(tmp_path: Path) -> None:
    assert UVICORN_OPTIONS["ws_per_message_deflate"] is False
    cfg = config(make_settings(tmp_path, port=18080), FastAPI())
    assert cfg.ws_per_message_deflate is False and cfg.ws == "websockets-sansio"
    assert (cfg.host, cfg.port, cfg.lifespan, cfg.loop) == ("127.0.0.1", 18080, "on", "uvloop")
    assert isinstance(cfg.http, type) and issubclass(cfg.http, FrontProtocol)  # bounded, the gateway first
    assert cfg.access_log is False
    assert config(make_settings(tmp_path, port=18080, access_log=True), FastAPI()).access_log is True


async def test_the_front_answers_with_the_lane_of_the_apps_open_gateway(tmp_path: Path) -> None:
    """The server set-up gives the front its fast path (``corral.api.server.fast_path_of``): the
    gateway's while the app's lifespan holds it open, none before and after."""
    settings = Settings(data_dir=tmp_path, runtime="process", reaper_interval_s=3600)  # type: ignore[call-arg]
    app = create_app(
        settings, runtime=ProcessRuntime(tmp_path / "rt"), templates=StaticTemplates(), reconcile=False
    )
    front = config(settings, app).http
    assert isinstance(front, type) and issubclass(front, FrontProtocol)
    assert front.fast_path_source() is None
    async with app.router.lifespan_context(app):
        assert front.fast_path_source() is app.state.gateway.fast_path
    assert front.fast_path_source() is None
    other = config(settings, FastAPI()).http
    assert isinstance(other, type) and issubclass(other, FrontProtocol) and other.fast_path_source() is None
