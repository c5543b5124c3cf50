"""HTTP client of the CLI: the OpenComputer control-plane routes under ``/api``.

Where it connects: ``--url`` (env ``CORRAL_URL``, default ``http://127.0.0.1:8080``).
How it authenticates: ``--api-key`` (env ``CORRAL_API_KEY``), else the first line of
``<data dir>/admin-key`` when that file is readable (data dir from ``CORRAL_DATA_DIR``,
default ``/var/lib/corral``), sent as ``X-API-Key`` (and ``?api_key=`` on WebSockets).

Contract: every method raises CliError, never an httpx error: an HTTP error status
becomes the server's ``error`` message with the status; an unreachable server says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Self
from urllib.parse import quote

import httpx
import typer
from websockets.exceptions import InvalidStatus

from corral.cli.console import CliError

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_DATA_DIR = Path("/var/lib/corral")

UrlOption = Annotated[
    str,
    typer.Option("--url", envvar="CORRAL_URL", help="Base URL of the corral server.", show_default=True),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="CORRAL_API_KEY",
        help="API key (ek_<id>_<secret>); default: <data dir>/admin-key if readable.",
        show_default=False,
    ),
]


def default_api_key(data_dir: Path | None = None) -> str | None:
    """The key in ``<data dir>/admin-key``, or None when it is absent or unreadable."""
    directory = data_dir or Path(os.environ.get("CORRAL_DATA_DIR") or DEFAULT_DATA_DIR)
    try:
        lines = (directory / "admin-key").read_text().split()
    except OSError:
        return None
    return lines[0] if lines else None


def error_message(response: httpx.Response) -> str:
    """The message a server put in its error envelope, else a short excerpt of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            error = error.get("message") or error.get("code")
        message = error or body.get("message") or body.get("detail")
        if isinstance(message, str) and message:
            return message
    text = response.text.strip()
    return text[:300] if text else response.reason_phrase or "request failed"


class ApiClient:
    """A synchronous client of one corral server. Use as a context manager."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        timeout: float = 120.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key if api_key is not None else default_api_key()
        self.headers = {"X-API-Key": self.api_key} if self.api_key else {}
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.api_base, headers=self.headers, timeout=timeout, transport=transport
        )

    @property
    def api_base(self) -> str:
        return self.url if self.url.endswith("/api") else f"{self.url}/api"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; CliError for a transport failure or an error status."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise CliError(f"{self.url} did not answer in time ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach corral at {self.url}: {exc}") from exc
        check(response, self.url)
        return response

    def get(self, path: str, **kwargs: Any) -> Any:
        return _json(self.request("GET", path, **kwargs))

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return _json(self.request("POST", path, json=body if body is not None else {}))

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def ws_url(self, path: str) -> str:
        """The WebSocket URL of an ``/api`` path, carrying the key as ``?api_key=``."""
        base = self.api_base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        query = f"?api_key={quote(self.api_key, safe='')}" if self.api_key else ""
        return f"{base}{path}{query}"

    def async_client(self, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
        """An async client with the same base URL and credentials (for the terminal)."""
        return httpx.AsyncClient(
            base_url=self.api_base, headers=self.headers, timeout=self.timeout, transport=transport
        )


def check(response: httpx.Response, url: str) -> None:
    """CliError with the server's message for an error status; nothing otherwise."""
    if response.is_success:
        return
    message = f"{error_message(response)} (HTTP {response.status_code})"
    if response.status_code == 401:
        message += "; pass --api-key or set CORRAL_API_KEY"
    elif response.status_code == 404 and not _is_json(response):
        message += f"; is {url} a corral server?"
    raise CliError(message)


def refused(exc: InvalidStatus, what: str) -> CliError:
    """A CliError for a refused WebSocket handshake, with the server's message."""
    answer = exc.response
    response = httpx.Response(
        answer.status_code, headers=list(answer.headers.raw_items()), content=bytes(answer.body)
    )
    return CliError(f"cannot attach to {what}: {error_message(response)} (HTTP {answer.status_code})")


def _is_json(response: httpx.Response) -> bool:
    return "json" in response.headers.get("content-type", "")


def _json(response: httpx.Response) -> Any:
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError as exc:
        raise CliError(f"the server sent a response that is not JSON (HTTP {response.status_code})") from exc
