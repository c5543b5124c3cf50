"""The OpenComputer API surface (spec ``003``): what its Python and TypeScript SDKs send.

Layout: ``routes*.py`` (thin handlers, one module per noun), ``schemas.py`` (camelCase
bodies), ``mapping.py`` (schemas <-> domain), ``errors.py`` (the envelope and statuses),
``auth.py`` (credentials), ``bridge.py`` (WebSocket <-> session attachment).

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
- Hibernation, checkpoints, previews, templates and agent sessions are not served yet
  (404).
"""
