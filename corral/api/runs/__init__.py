"""The agent-runs surface (spec 004 and its supplement): threads at ``/api/sessions``,
runs of a computer-use agent on a Linux desktop, ``/api/sandbox/extend``; over
``services/runs.py``.

Layout as for every surface: ``routes.py`` (thin handlers), ``schemas.py``,
``mapping.py``, ``errors.py`` (the envelope, in one place), ``auth.py``. The routes are
included in the main application (``api/app.py``), before the OpenComputer ones under
``/api``, with ``errors.RunsRoute`` as their route class (a sub-application mounted at
``/api/sessions`` would answer ``POST /api/sessions`` with a redirect).

Decisions where the spec is vague:

- ``POST /api/sessions`` stores the thread and its first user message and starts no
  run (its answer has no ``runId``); ``POST /api/sessions/{threadId}/runs`` starts one,
  whose conversation is the thread's user and assistant texts up to its message (the
  first run: the create's prompt, then its message). It answers 201 at once, the run
  ``QUEUED``; runs of one thread run one at a time, in order.
- ``prompts.goalPrompt`` (or ``prompt``) is told to the model as the goal in the system
  prompt; ``systemPrompt`` replaces corral's. ``template`` may only be ``gui`` (the
  desktop); ``duration`` is the desktop's first lifetime in seconds (60-3600, 900 by
  default). ``POST /api/sandbox/extend`` adds 15 minutes to the deadline (stacking).
- ``GET /api/sessions/{threadId}`` is ``{thread: {id, createdAt, prompts: {userPrompt,
  goalPrompt, systemPrompt}, metadata, messages: [{id, role, content, createdAt, runId,
  action?, status?, detail?}]}}``; an action message's ``action`` is the computer
  action (the tool input) and ``status`` is ``running``, ``done`` or ``failed``.
- ``CANCELED`` comes from corral's ``POST /api/sessions/{threadId}/runs/{runId}/cancel``
  (answering the run once it has stopped; a finished run as it is).
- ``publicAccessToken`` (``pat_...``) reads that one run: ``GET`` of the run and its
  SSE stream (``GET /api/sessions/{threadId}/runs/{runId}/stream``: events ``status``,
  ``desktop``, ``assistant``, ``action``, ``done``, each ``data`` a JSON object), as
  ``Authorization: Bearer`` or ``?token=`` (a browser's EventSource sets no header). A
  wrong token is a 404, as another org's run is. API keys (``ek_...``, owner to viewer:
  viewers read) and user JWTs are accepted everywhere.
- Errors: ``{"error": {code, message, hint, requestId}}`` with the supplement's codes
  (errors.py); ``requestId`` is also the ``X-Request-Id`` header and in the log line.
  No model key configured: creates are 503 ``SERVICE_UNAVAILABLE`` saying to set
  ``CORRAL_ANTHROPIC_API_KEY``.
- Rate limit: 60 requests a minute per key (``rate_limit_runs``), a run token its own
  bucket; ``X-RateLimit-Remaining`` on every answer past authentication.
"""
