"""Webhooks: corral POSTs a JSON payload to a tenant's URL (e.g. a code session's
``{session, result}`` when it ends), from corral's host, in the background.

``check_url``: the URL as given when it is ``http``/``https`` with a host, at most
2048 characters, without spaces or credentials; InvalidInput naming ``webhookUrl``
otherwise, and for a literal loopback, private or link-local address unless private
destinations are allowed (a name resolving to one is refused at delivery, by the
poster, which connects to the address it checked: docs/security.md, "Webhooks").

``deliver(url, payload, org_id=..., sandbox_id=...)`` returns at once and never
raises: a background task POSTs the payload (bounded by ``timeout`` per attempt),
retries after a connection failure, a timeout, a 408, a 429 or a 5xx (``attempts``
in all, waiting ``backoff``, 4x ``backoff``, 16x ...), and records the outcome in the
audit trail: ``webhook_delivered`` (status, attempts) or ``webhook_failed`` (the last
status or error, attempts). A 2xx is delivered; any other status is final. Records
name the URL without its query (it may hold the tenant's token). ``close`` cancels
deliveries still under way; ``settle`` waits for them (tests, shutdown).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Mapping
from urllib.parse import urlsplit

from corral.errors import CorralError, InvalidInput
from corral.ports import WebhookPoster
from corral.services.audit import AuditService, clip

log = logging.getLogger("corral.webhooks")

DELIVERED = "webhook_delivered"
FAILED = "webhook_failed"
FIELD = "webhookUrl"
MAX_URL = 2048
RETRIED = frozenset({408, 429})


def check_url(url: str, *, allow_private: bool = False) -> str:
    """See the module docstring."""
    if not isinstance(url, str) or len(url) > MAX_URL or not url.isprintable() or " " in url:
        raise InvalidInput(f"{FIELD} must be an http(s) URL of at most {MAX_URL} characters", field=FIELD)
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (raises for a port out of range)
    except ValueError as exc:
        raise InvalidInput(f"{FIELD} has a bad port", field=FIELD) from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput(f"{FIELD} must be an http:// or https:// URL with a host", field=FIELD)
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(f"{FIELD} must not hold credentials", field=FIELD)
    if not allow_private:
        try:
            address = ipaddress.ip_address(parts.hostname)
        except ValueError:
            return url  # a name: checked when it is resolved, at delivery
        if not address.is_global or address.is_multicast:
            raise InvalidInput(f"{FIELD} may not name a private, loopback or link-local address", field=FIELD)
    return url


def shown(url: str) -> str:
    """The URL as records show it: without query or fragment."""
    parts = urlsplit(url)
    return clip(f"{parts.scheme}://{parts.netloc}{parts.path}")


class WebhookService:
    def __init__(
        self,
        poster: WebhookPoster,
        audit: AuditService,
        *,
        allow_private: bool = False,
        timeout: float = 10.0,
        attempts: int = 4,
        backoff: float = 1.0,
    ) -> None:
        self.poster = poster
        self.audit = audit
        self.allow_private = allow_private
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self._tasks: set[asyncio.Task[None]] = set()

    def check_url(self, url: str) -> str:
        return check_url(url, allow_private=self.allow_private)

    def deliver(
        self, url: str, payload: Mapping[str, object], *, org_id: str, sandbox_id: str | None = None
    ) -> None:
        try:
            body = json.dumps(payload, default=str).encode()
        except (TypeError, ValueError) as exc:  # a caller's bug: say so, never raise into it
            log.error("webhook payload for %s is not JSON: %s", shown(url), exc)
            return
        task = asyncio.get_running_loop().create_task(
            self._deliver(url, body, org_id, sandbox_id), name="corral-webhook"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def settle(self) -> None:
        """Return once every delivery under way has ended."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.settle()

    async def _deliver(self, url: str, body: bytes, org_id: str, sandbox_id: str | None) -> None:
        outcome: dict[str, object] = {"url": shown(url)}
        kind = FAILED
        for attempt in range(1, self.attempts + 1):
            outcome["attempts"] = attempt
            try:
                status = await self.poster.post(url, body, self.timeout)
            except CorralError as exc:
                outcome.pop("status", None)
                outcome["error"] = clip(exc.message)
            else:
                outcome.pop("error", None)
                outcome["status"] = status
                if 200 <= status < 300:
                    kind = DELIVERED
                    break
                if status < 500 and status not in RETRIED:
                    break
            if attempt < self.attempts:
                await asyncio.sleep(self.backoff * 4 ** (attempt - 1))
        try:
            await self.audit.record(kind, org_id=org_id, sandbox_id=sandbox_id, data=outcome)
        except Exception:  # the trail's failure is logged there; never raise from here
            log.exception("webhook outcome for %s not recorded: %s", shown(url), outcome)
