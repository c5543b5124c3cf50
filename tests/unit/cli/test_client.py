"""The CLI's HTTP client: credentials, URLs and error messages."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from corral.cli.client import ApiClient, default_api_key, error_message
from corral.cli.console import CliError


def test_the_key_defaults_to_the_data_dirs_admin_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORRAL_DATA_DIR", str(tmp_path))
    assert default_api_key() is None
    (tmp_path / "admin-key").write_text("ek_fromfile01_secretsecretsecret\n")
    assert default_api_key() == "ek_fromfile01_secretsecretsecret"
    assert ApiClient("http://x").api_key == "ek_fromfile01_secretsecretsecret"
    assert (
        ApiClient("http://x", "ek_given0001_secretsecretsecret").api_key == "ek_given0001_secretsecretsecret"
    )


def test_requests_go_under_api_with_the_key_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    for url in ("http://h:1", "http://h:1/", "http://h:1/api"):
        with ApiClient(url, "ek_k0000001_s", transport=httpx.MockTransport(handler)) as api:
            assert api.get("/sandboxes") == []
    assert [str(r.url) for r in seen] == ["http://h:1/api/sandboxes"] * 3
    assert all(r.headers["x-api-key"] == "ek_k0000001_s" for r in seen)


def test_ws_url_quotes_the_key() -> None:
    api = ApiClient("https://corral.example/", "ek_a_b+c/d")
    assert api.ws_url("/sandboxes/sb-1/pty/ps-1") == (
        "wss://corral.example/api/sandboxes/sb-1/pty/ps-1?api_key=ek_a_b%2Bc%2Fd"
    )


@pytest.mark.parametrize(
    ("response", "message"),
    [
        (httpx.Response(404, json={"error": "sandbox sb-1 not found"}), "sandbox sb-1 not found"),
        (httpx.Response(400, json={"error": {"code": "invalid", "message": "bad cpu"}}), "bad cpu"),
        (httpx.Response(422, json={"detail": "nope"}), "nope"),
        (httpx.Response(502, text="upstream exploded\n"), "upstream exploded"),
        (httpx.Response(500), "Internal Server Error"),
    ],
)
def test_error_message_reads_every_envelope(response: httpx.Response, message: str) -> None:
    assert error_message(response) == message


def test_a_server_error_becomes_a_cli_error_with_the_status() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(409, json={"error": "sandbox is stopped"}))
    with ApiClient("http://h", "k", transport=transport) as api, pytest.raises(CliError) as info:
        api.post("/sandboxes/sb-1/exec", {"cmd": "true"})
    assert info.value.message == "sandbox is stopped (HTTP 409)"
