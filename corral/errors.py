"""The one error tree of corral.

Everything below ``api/`` raises these; each API surface renders them in its own
envelope in exactly one place. Adapters translate runc, SQL, OS and agent errors at
their boundary with ``raise CorralError(...) from exc``.

    CorralError                      neutral code "internal"
    ├── InvalidInput                 "invalid"       a client's mistake; names the field
    ├── Unauthenticated              "unauthenticated"  missing or bad credentials
    ├── Forbidden                    "forbidden"     authenticated, not allowed
    ├── NotFound                     "not_found"     unknown, or not visible to this org
    ├── Conflict                     "conflict"      duplicate, or wrong state for the action
    ├── LimitExceeded                "limit"         a quota or rate limit
    │   ├── Busy                     "busy"          the node's create queue is full: retry after
    │   │                                             ``retry_after_s`` (Retry-After)
    │   └── InsufficientStorage      "storage"       the sandbox's disk is full (ENOSPC, EDQUOT):
    │                                                 the request was fine, a retry won't help
    ├── Unavailable                  "unavailable"   a dependency is down or switched off
    │   ├── SandboxWaking            "waking"        hibernated, being woken: retry shortly
    │   └── ModelUnavailable         "model_unavailable"  no model API key is set (503)
    └── SandboxError                 "sandbox"       the sandbox or its runtime failed
        ├── RuntimeFailure           "runtime"       runc, mounts, cgroups
        ├── AgentError               "agent"         the in-sandbox agent failed or lied
        └── ExecTimeout              "timeout"       a command ran past its timeout
"""

from __future__ import annotations


class CorralError(Exception):
    """Base of every error corral raises on purpose."""

    code = "internal"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(CorralError):
    code = "invalid"


class Unauthenticated(CorralError):
    code = "unauthenticated"


class Forbidden(CorralError):
    code = "forbidden"


class NotFound(CorralError):
    code = "not_found"


class Conflict(CorralError):
    code = "conflict"


class NoRoom(Conflict):
    """The node may not promise one more sandbox's disk or memory now, or its org has
    all the live sandboxes it may: one that ends makes room (a 409 to an API caller; a
    code session waits for it)."""


class LimitExceeded(CorralError):
    code = "limit"


class Busy(LimitExceeded):
    """This node queues no more creates now (``services/create_queue.py``): the same
    request succeeds later; ``retry_after_s`` says when to try again (Retry-After)."""

    code = "busy"

    def __init__(self, message: str, *, retry_after_s: int = 1, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = retry_after_s


class InsufficientStorage(LimitExceeded):
    """No room to store what the request asked for: the sandbox's disk (or its quota)
    is full. A surface that knows no better renders it as its LimitExceeded."""

    code = "storage"


class Unavailable(CorralError):
    code = "unavailable"


class SandboxWaking(Unavailable):
    """The sandbox is hibernated and is being woken in the background; the same request
    succeeds once it runs (the caller asked not to wait for the wake)."""

    code = "waking"


class ModelUnavailable(Unavailable):
    """Model access is not configured on this node: the message says what to set."""

    code = "model_unavailable"

    def __init__(self, message: str = "", *, field: str | None = None) -> None:
        super().__init__(
            message or "model access is not configured: set CORRAL_ANTHROPIC_API_KEY", field=field
        )


class SandboxError(CorralError):
    code = "sandbox"


class RuntimeFailure(SandboxError):
    code = "runtime"


class AgentError(SandboxError):
    code = "agent"


class ExecTimeout(SandboxError):
    code = "timeout"
