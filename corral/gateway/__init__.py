"""The gateway: an in-process reverse proxy into servers listening inside sandboxes
(spec 000, the Compute Gateway; spec 003's preview URLs).

``corral.api.front`` reads every connection first and gives the plain requests it can
answer at once to the fast path (``fast_path.py``); ``corral.api.app`` sends every other request
that ``Gateway.match`` claims to ``Gateway.serve``, before FastAPI sees it; everything
else goes to the API.

    routing.py    which requests are the gateway's: {port}-{id}.D, {id}-p{port}.D,
                  /preview/{id}/{port}/...
    access.py     API key, worker token, preview token (header, query, cookie), public
                  previews; 401/404/503
    fast_path.py       plain keep-alive requests answered on the connection, without ASGI
    forward.py    one HTTP exchange, streamed both ways (uploads, SSE, downloads)
    upstream.py   pooled HTTP/1.1 connections into sandboxes, every wait bounded
    websocket.py  WebSocket bridging
    headers.py    hop-by-hop, credentials, X-Forwarded-*, cookies, Location
    cors.py       corral's CORS allowlist (servers' own CORS headers are dropped)
    errors.py     the gateway's error envelope: CorralError to status and body
    replies.py    the gateway's own answers: errors, redirects
    services.py   ``GatewayServices``: what the gateway uses of the services
    dispatch.py   ``Gateway``: the above in order

Statuses (spec 000): 401 missing or malformed credentials; 404 unknown, stopped or
not-owned sandbox, or a port without a preview for a non-owner, all with one body; 502
the sandbox's server is not listening, failed, timed out or sent garbage; 503 the kill
switch (``GatewayServices.kill_switch``, setting ``gateway_enabled``). Limits are settings
``gateway_*`` (see ``corral.settings``); the HTTP server's own limits on clients are in
``corral.api.front``.
"""
