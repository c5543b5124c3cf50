"""The xgen sandbox API surface (spec ``002`` and its supplement), mounted at ``/api/v1``.

Layout as for every surface: ``routes.py`` (thin handlers), ``schemas.py``,
``mapping.py`` (xgen bodies to corral's requests and back), ``auth.py``, ``errors.py``
(the envelope ``{error, code, details}``, in one place, for HTTP and for a WebSocket
refused before its upgrade), ``app.py`` (the mounted sub-application, with its own
OpenAPI document at ``/api/v1/openapi.json``). The WebSocket is ``frames.py`` (the
9-byte header and MessagePack), ``connection.py`` (one connection: files, watches,
ports, stats, errors), ``channels.py`` (its processes, one per client-chosen channel)
and ``outbox.py`` (what it sends, bounded). The client the tests drive,
``tests/support/xgen_client.py``, is the protocol's reference in this repository.

Routes: ``POST /auth/token``; ``POST|GET /sandboxes``, ``GET|DELETE
/sandboxes/{id}``, ``POST /sandboxes/{id}/keepalive``, ``POST /sandboxes/{id}/exec``,
``GET /sandboxes/{id}/services``, ``GET /sandboxes/{id}/ws`` (WebSocket).

Roles and permissions. xgen's roles map onto corral's, its permissions onto corral's
scopes of the same names (``corral.auth.scopes``):

    xgen role   corral role         sandbox:create read write exec delete
    admin       owner or admin             x        x    x     x     x
    user        developer                  x        x    x     x     x (see below)
    viewer      viewer                              x

xgen's ``user`` may not delete; corral's developer may (corral's roles are shared by
every surface and are not changed for one), so a developer key deletes here too.
Each route requires the document's permission: create ``sandbox:create``; list, get,
services ``sandbox:read``; keepalive ``sandbox:write``; exec and the WebSocket
``sandbox:exec`` (its file writes and removes also need ``sandbox:write``, its reads
``sandbox:read``); delete ``sandbox:delete``. Another org's sandbox is 404, never 403.

Decisions where the spec is vague:

- Auth: ``Authorization: Bearer <token>`` (the token of ``/auth/token``, or an API
  key), ``Authorization: ApiKey <key>``, and ``?token=`` on the WebSocket only (not on
  REST routes, where it would end up in logs). Anything else is 401 UNAUTHORIZED.
- The token exchange takes the key in the body (``{"api_key": "ek_..."}``) and answers
  200 ``{token, expires_at, expires_in}``: ``expires_at`` in whole seconds with a
  ``Z``, and the seconds left (900 by default, setting ``user_token_ttl_s``). The token
  is a user JWT (HS256) with the key's org and role; any valid key may exchange: the
  token can do exactly what the key can, no more, and lives at most 15 minutes. A
  missing or empty ``api_key`` is 401, like a wrong one.
- Errors: the supplement's codes; a body field of the wrong type or out of range is
  400 INVALID_PARAMETER with ``details`` naming it (``resources.memory``); a body that
  is not JSON 400 INVALID_REQUEST; an unknown route 404 NOT_FOUND; a sandbox that is
  not running where it must be 409 SANDBOX_NOT_READY; 429 QUOTA_EXCEEDED with
  ``Retry-After`` (120 a minute per key, ``rate_limit_xgen``; per client address while
  the credential is not valid).
- Create answers 201 with ``running``: corral's create returns once the sandbox runs,
  the workspace is prepared and the ports given have preview URLs (a failure of those
  removes the sandbox again). ``template`` is one of base, nodejs, python, go, gui;
  ``gui: true`` or the ``browser`` capability give the desktop
  (``DesktopService.template_for``: the ``gui`` template, asked with base or gui;
  another template with a desktop is 400 naming ``gui``), running before create
  answers; ``vnc_url`` is ``DesktopService.vnc_url``. ``resources.cpu`` is cores
  (a number or ``"500m"``, rounded up to whole cores), ``memory`` and ``disk`` MiB or a
  quantity (``"512Mi"``, ``"2Gi"``, ``"1G"``), within corral's maxima. ``metadata``:
  at most 20 entries, keys 1-63 characters, values at most 256. ``ports``: 1-65535, no
  repeats, at most 20; each gets a preview (kept with the sandbox, so
  ``preview_urls`` and ``services`` list it later) whose URL is of xgen's host form
  ``sbx-{id}-{port}.{domain}`` and carries the pass a browser needs
  (``PreviewService.browser_url``). Capabilities:
  ``sudo`` adds a sudoers entry for the user ``sandbox`` where the template has sudo;
  ``git-ssh`` is accepted and changes nothing yet; ``browser`` implies the desktop.
- Lifetime: ``timeout_seconds`` (1-86400, default 3600) is the sandbox's deadline
  (``CreateSandbox.lifetime_s``): the reaper stops and removes it then, whatever its
  use, and ``expires_at`` says when; there is no idle timeout besides. ``keepalive``
  moves the deadline to now plus 3600 s, never earlier than it was
  (``SandboxService.postpone_deadline``). There is no observable ``stopping``: a
  delete returns once the sandbox's processes are dead.
  ``DELETE`` answers 204 for an unknown id too (and for another org's), 403 without
  ``sandbox:delete``.
- Exec (REST): ``timeout_seconds`` 1-3600, default 30; on expiry the command is killed
  and the answer is 504 EXEC_TIMEOUT. A relative ``cwd`` is taken under the workspace.
  Output is decoded as UTF-8 with replacement characters.
- ``services`` lists the ports given at create and the ports listening now.
- WebSocket: see ``connection.py`` and ``channels.py``. A process killed by a signal
  this connection sent reports -1 (the agent reports 128+n, as a shell does); an
  ExecStdin with nothing after its 4-byte prefix closes the process's stdin; processes
  a connection started are killed when it closes. FsRead answers at most 16 MiB.
  An open connection is no use of the sandbox (its polls never wake one): when the
  sandbox stops, SandboxError ``{code: "sandbox_stopped"}`` is sent and it closes.
  FsEvent paths are relative to the workspace, on the channel and id of the FsWatch.
"""
