"""The xgen sandbox API surface (spec ``002``), mounted at ``/api/v1``.

Layout as for every surface: ``routes.py`` (thin handlers), ``schemas.py``,
``errors.py`` (the envelope, in one place), ``app.py`` (the mounted sub-application,
which gives this surface its own envelope and its own OpenAPI document at
``/api/v1/openapi.json``).

Served so far: ``POST /api/v1/auth/token``. The sandbox routes come later.

Decisions where the spec is vague:

- The token exchange takes the key in the body (``{"api_key": "ek_..."}``) and answers
  ``{token, expires_at, expires_in}``: the spec's ``expires_at`` and the seconds left
  (900 by default, setting ``user_token_ttl_s``). The token is a user JWT (HS256) with
  the key's org and role (``corral.auth.service``); every surface accepts it as
  ``Authorization: Bearer <token>``. Any valid key may exchange, whatever its role: the
  token can do exactly what the key can, no more, and lives at most 15 minutes.
- A missing or empty ``api_key`` is 401 (a missing credential), like a wrong one; a
  body that is not a JSON object is 400.
- The route is limited like every other on this surface (setting ``rate_limit_xgen``,
  120 a minute): per key once it is valid, per client address while it is not.
"""
