"""The E2B surface: the ``e2b`` Python SDK (PyPI, the tested range in README.md) works
against corral unchanged with ``E2B_API_URL`` and ``E2B_SANDBOX_URL`` both corral's URL
and ``E2B_API_KEY`` a corral API key. Facts come from the SDK itself, which ships the
client of E2B's control plane (``e2b.api.client``) and of its in-sandbox daemon, envd
(Connect RPC ``process`` and ``filesystem`` services with their generated message
classes, plain ``/files``); corral serves both sides over its own services:

    app.py         which requests are the surface's (``claims``) and where each goes
    routes.py      the control plane (schemas.py, mapping.py, auth.py: ``X-API-Key``)
    envd.py        port 49983: the Connect services (process.py, filesystem.py), /files,
                   /health, /envs; caller.py: who calls (``X-Access-Token``) as which user
    errors.py      the E2B envelope and the Connect codes: the one place errors are rendered

Decisions where the SDK leaves corral a choice:

- A sandbox's ``timeout`` (create, ``set_timeout``, ``connect``; default 300 s) is
  corral's idle timeout: a sandbox unused that long is paused by corral's reaper, which
  is E2B's ``autoPause``, whatever the body says; a paused sandbox resumes on
  ``connect`` (or on any use). ``endAt`` is its last use plus the timeout.
- ``pause`` is corral's pause (``LifecycleService.pause``: processes frozen, memory
  kept), ``resume`` and ``connect`` its resume (a hibernated sandbox is woken: its files
  kept, its processes started afresh); both are "paused" to the SDK; 409 for a sandbox
  already in the state asked for. A stopped sandbox is 404 everywhere, as E2B forgets
  killed ones.
- ``envdVersion`` is ``mapping.ENVD_VERSION``, the newest the pinned SDK gates a feature
  on. ``envdAccessToken`` is a worker token of the sandbox (``caller``), and so is
  ``trafficAccessToken`` (the same): ports other than envd's are reached through the
  gateway as any corral preview (the owner's key, the access token as ``X-Access-Token``
  or ``E2B-Traffic-Access-Token`` through ``E2B_SANDBOX_URL``, or a public preview).
  ``e2b_code_interpreter`` sends only the latter on its context calls to port 49999.
  Its default template, ``code-interpreter-v1``, is corral's ``code-interpreter``
  (``mapping.TEMPLATES``).
- ``domain`` is the gateway's domain with the port the client reached corral on, so
  ``get_host(port)`` (``{port}-{id}.<domain>``) names a gateway host of this server.
- Accepted and not acted on: ``autoPause``/``autoResume`` (see above), ``secure`` (envd
  always takes a token), ``allow_internet_access``/``network``, ``mcp``, ``volumeMounts``.
- Users: ``user`` is corral's user ``sandbox`` (uid 1000, home ``/home/sandbox``);
  ``root`` is root (``caller``).
- Logs are the sandbox's audit trail (oldest first, 1,000 records; ``audit:read``);
  metrics one reading now (CPU as the average over its life).
- Roles: a viewer's key reads (get, list) and is refused every write with 403, which
  the SDK raises as ``SandboxException``; another org's sandbox is 404.
"""
