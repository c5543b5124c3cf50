"""Model access (issue 14, item 1): the Anthropic Messages API for corral's own loops
and for code inside sandboxes, with one key that only corral's host holds.

``messages(org_id, body, sandbox_id=)`` makes one non-streamed call from the host
(``MessagesApi``) and returns the answer's JSON object. ``body`` is the Messages API's
request as a dict; ``stream`` may not be true (InvalidInput naming ``stream``).
Errors: ModelUnavailable when no key is configured (its message says to set
CORRAL_ANTHROPIC_API_KEY); Unavailable for no answer, a 5xx or 529, a refused key
(401, 403: "check CORRAL_ANTHROPIC_API_KEY") or an answer that is not a JSON object;
LimitExceeded for 429; InvalidInput (field ``body``) for another 4xx, with the API's
own message. No message holds the key (an upstream message that echoes it has it
replaced).

For code inside a sandbox, ``binding(org_id)`` is the model API as a service binding
(``MODEL_BINDING``, not a name an org's own binding can have): granted to a sandbox
(BindingService.grant), the sandbox calls the forwarder on its bridge with a
per-sandbox token, and the forwarder adds the key as ``x-api-key`` on the host's side
(``sandbox_env``: the variables the Anthropic SDKs and the Claude Code CLI read).
ModelUnavailable without a key.

Metering, per org: every call (the host's here, a sandbox's through its binding,
reported by the forwarder to ``metered``) counts in /metrics
(``corral_model_requests_total`` by org, via and status, input and output tokens read
from the answer) and is a ``model_called`` audit record of the org (and the sandbox,
if any): ``via`` (host, sandbox), ``status``, ``model``, ``input_tokens``,
``output_tokens``, ``duration_ms``; never the key, the prompt or the answer. A call
from a sandbox is also activity of that sandbox (``on_sandbox_call``, the sandboxes'
``touch``, set by the core once they exist): an agent talking to the model is not idle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from corral.domain.bindings import Binding
from corral.domain.model_usage import ModelUsage, usage_of
from corral.errors import InvalidInput, LimitExceeded, ModelUnavailable, Unavailable
from corral.metrics import Metrics
from corral.ports import MessagesApi
from corral.services.audit import AuditService

CALLED = "model_called"
MODEL_BINDING = "model-api"
KEY_HEADER = "x-api-key"
HOST = "host"
SANDBOX = "sandbox"


class ModelService:
    def __init__(
        self,
        api: MessagesApi | None,
        audit: AuditService,
        metrics: Metrics,
        key: str = "",
        base_url: str = "",
    ) -> None:
        self.api = api
        self.audit = audit
        self.metrics = metrics
        self.base_url = base_url.rstrip("/")
        self._key = key
        self.on_sandbox_call: Callable[[str], None] = lambda _sandbox_id: None

    @property
    def configured(self) -> bool:
        """Whether a key is set: without one every call raises ModelUnavailable."""
        return self.api is not None

    def require(self) -> None:
        """ModelUnavailable unless configured (for surfaces, before they start anything)."""
        if self.api is None:
            raise ModelUnavailable()

    def binding(self, org_id: str) -> Binding:
        """The model API as a binding of ``org_id``'s (see the module docstring)."""
        if self.api is None or not self._key:
            raise ModelUnavailable()
        epoch = datetime.fromtimestamp(0, UTC)
        return Binding(org_id, MODEL_BINDING, self.base_url, KEY_HEADER, self._key, epoch, metered=True)

    async def close(self) -> None:
        if self.api is not None:
            await self.api.close()

    async def messages(
        self, org_id: str, body: dict[str, object], *, sandbox_id: str | None = None
    ) -> dict[str, object]:
        if self.api is None:
            raise ModelUnavailable()
        if body.get("stream") is True:
            raise InvalidInput("stream must be false: corral's host calls are not streamed", field="stream")
        started = time.monotonic()
        status = 0
        answer: object = None
        try:
            status, answer = await self.api.create(body)
        finally:
            usage = usage_of(answer) if status == 200 else ModelUsage()
            if not usage.model and isinstance(body.get("model"), str):
                usage = ModelUsage(str(body["model"]), usage.input_tokens, usage.output_tokens)
            await self.metered(
                org_id, sandbox_id, HOST, status, usage, round((time.monotonic() - started) * 1000)
            )
        if status == 200 and isinstance(answer, dict):
            return answer
        raise self._error(status, answer)

    async def metered(
        self, org_id: str, sandbox_id: str | None, via: str, status: int, usage: ModelUsage, duration_ms: int
    ) -> None:
        """Count one call of the org's (see the module docstring)."""
        if via == SANDBOX and sandbox_id is not None:
            self.on_sandbox_call(sandbox_id)
        self.metrics.model_call(org_id, via, status, usage.input_tokens, usage.output_tokens)
        await self.audit.record(
            CALLED,
            org_id=org_id,
            sandbox_id=sandbox_id,
            data={
                "via": via,
                "status": status,
                "model": usage.model[:128],
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "duration_ms": duration_ms,
            },
        )

    def _error(self, status: int, answer: object) -> Exception:
        said = self._scrub(_message(answer))
        if status == 200:
            return Unavailable("the model API's answer was not a JSON object")
        if status in (401, 403):
            return Unavailable(
                f"the model API refused corral's key ({status}): check CORRAL_ANTHROPIC_API_KEY"
            )
        if status == 429:
            return LimitExceeded(f"the model API is rate limiting: {said}")
        if 400 <= status < 500:
            return InvalidInput(f"the model API refused the request ({status}): {said}", field="body")
        return Unavailable(f"the model API failed ({status}): {said}")

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "[key]") if self._key else text


def _message(answer: object) -> str:
    """The message of an Anthropic error envelope, or a short stand-in."""
    if isinstance(answer, dict):
        error = answer.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:500]
    return "no message"


def sandbox_env(url: str) -> dict[str, str]:
    """What a sandbox's code reads to reach the model through its binding at ``url``
    (``http://<bridge>:<port>/<token>/model-api``): the base URL, and as the key the
    sandbox's token (the forwarder replaces it with the real key)."""
    token = url.rstrip("/").split("/")[-2]
    return {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_API_KEY": f"corral-sandbox-{token}"}
