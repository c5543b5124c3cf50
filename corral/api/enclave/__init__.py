"""The Enclave surface (spec 001): one-shot code sessions at ``/sessions``.

Layout as for every surface: ``routes.py`` (thin handlers), ``schemas.py``,
``mapping.py``, ``errors.py`` (the envelope, in one place), ``auth.py``. The routes
are included in the main application (``api/app.py``) with ``errors.EnclaveRoute``
as their route class, which renders every error of these routes in this surface's
envelope; a sub-application mounted at ``/sessions`` would answer ``POST /sessions``
with a redirect to ``/sessions/``.

Decisions where the spec is vague:

- The error envelope is Fastify's (the Enclave control plane is a Fastify app):
  ``{"statusCode", "error", "message", "field"}``, ``field`` naming the bad field of a
  400 (``limits.memoryMiB``, ``egress.allow[0]``...), else null.
- ``POST /sessions`` answers 201 with the ``Session`` (``pending`` or later); the run
  goes on in the background. ``DELETE /sessions/:id`` answers 200 with the session
  once it is torn down, at any phase (idempotent).
- ``GET /sessions`` pages: ``?limit=`` (1..100, 20 by default) and ``?cursor=`` (the
  ``nextCursor`` of the page before); the body is ``{"sessions": [...], "nextCursor"}``.
- ``GET /sessions/:id/result`` is 409 until the session has its outcome;
  ``GET /sessions/:id/audit`` is ``{"events": [{ts, type, ...}]}``, oldest first.
- Credentials: ``Authorization: Bearer`` with a user JWT (HS256, the server's JWT
  secret; ``POST /api/v1/auth/token`` issues them) or an API key ``ek_<id>_<secret>``;
  rate limited per principal (setting ``rate_limit_enclave``).
- The limits' CPU and pids names, unpublished: ``cpuMillicores`` (or ``cpus``),
  ``cpuSeconds`` (CPU time in all; default: the wall clock times the CPUs) and ``pids``.
  The defaults of memory, CPUs and pids are a sandbox's (settings ``default_memory_mb``,
  one CPU, ``pids_limit``), so a session asking for none starts on a standby sandbox.
- A wrong method or an unknown path under ``/sessions`` is a 405 (with ``Allow``) or a
  404 in this surface's envelope, naming the method or the path.
"""
