"""The OpenComputer API surface (spec ``003``): what its Python and TypeScript SDKs send.

Layout: ``routes*.py`` (thin handlers, one module per noun), ``schemas.py`` (camelCase
bodies), ``mapping.py`` (schemas <-> domain), ``errors.py`` (the envelope and statuses),
``auth.py`` (credentials), ``session_socket.py`` (WebSocket <-> session attachment).

Decisions where the spec is vague or the SDKs disagree with it:

- One process serves both surfaces: ``connectURL`` is corral's own base URL, so
  "worker-direct" routes are the same handlers at the root, without ``/api``.
- Credentials are recognised by form (``ek_...`` key, or JWT) on both surfaces; see
  ``auth``. WebSockets also take ``?token=`` and ``?api_key=``.
- Auth and lookup failures on a WebSocket refuse the handshake with the HTTP status and
  envelope (401, 404, ...) rather than accepting and closing: the Python SDK then
  raises at ``connect`` and the TypeScript SDK rejects ``attach``, instead of both
  reporting a silent exit code -1.
- ``POST .../timeout`` is served on the control plane too (the Python SDK sends it
  there); ``timeout`` 0 means never.
- ``GET /api/sandboxes`` lists live sandboxes, each with a fresh ``token`` like get and
  create; ``endAt`` is when the idle timeout would stop the sandbox (null: never).
- ``exec/run-async`` answers 201; results are kept in memory for 10 minutes.
- Unknown request fields are ignored; known ones are type-checked strictly (400 naming
  the field). ``diskMB`` is honoured.
- Malformed path ids are 404, like unknown ones. A stopped sandbox is 409 for
  operations. A full sandbox disk is 507; the sandbox's own failures are 502.
- Preview URLs (``routes_preview``): a second create of a port returns the existing
  preview (200); ``sslStatus`` is ``"none"``; ``url`` is added to each preview. Preview
  auth (``previewAuth`` on create, ``preview/rotate``) is enforced by the gateway
  (``corral.gateway``), which also serves ``{id}-p{port}.<gateway domain>``. A preview
  without ``authConfig.public`` needs the preview token or the owner's key.
- ``GET /sandboxes/{id}/ports`` (both mounts) is corral's own: listening TCP ports.
- corral's own too, control plane only: the audit trail (``routes_audit``:
  ``GET /sandboxes/{id}/audit``, ``GET /audit``) and API keys (``routes_keys``).
- A role without the scope a route needs is 403 (``corral.auth.scopes``); too many
  requests are 429 with ``Retry-After`` (``corral.api.guard``); creating while the kill
  switch is on is 503, past the org's cap of live sandboxes 409.
- Hibernation, checkpoints, templates and agent sessions are not served yet (404).
"""
