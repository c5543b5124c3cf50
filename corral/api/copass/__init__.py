"""The Copass compute surface: the routes copass-core (PyPI 1.4.9) calls under
``/api/v1/storage/sandboxes/{sandbox_id}/compute`` (../shared/spec/copass-supplement.md)
and the gateway URLs of its sessions (spec 000, served by corral/gateway), over
``services/compute.py``.

Decisions where the spec is vague or silent:

- A session id is its sandbox's id (``sb-...``), not a UUID: copass-core treats it as
  opaque, and the gateway then reaches it as any sandbox, by the owner's API key.
- Copass's ``sandbox_id`` (a storage namespace, never created or checked by the client)
  is a label on the org's sandboxes (metadata ``copass.sandbox_id``, beside the creator
  ``copass.user_id``); a session is found only under its own namespace. Records show the
  caller's metadata without these labels. Metadata keys ``user_id``, ``sandbox_id``,
  ``agent_id``, ``run_id`` and ``copass.*`` are refused (400 naming ``metadata``).
- Session ``timeout_seconds``: 1 to 3600 (the spec gives no minimum), default 300; the
  sandbox's deadline, kept by the core (``Sandbox.deadline_at``), whose reaper stops and
  removes it then; a session has no idle timeout.
- ``status``: running (``running``), stopped (``stopped``: by the caller or its
  deadline), failed (``failed``); ``health``: ``ready``, ``stopped``, ``errored``.
  ``last_activity_at`` moves with exec and with gateway traffic (``SandboxService.touch``).
- Exec ``timeout_seconds``: 1 to 3600, default 60, cut to the session's remaining life
  less one second (so the command is ended and answered before the deadline stops its
  sandbox; with less than that left, 409); a command past it is killed and answers
  ``exit_code`` 124 (copass-core has no timed-out field). Output: 10 MiB (10,485,760 bytes) in all, stdout first, then
  ``truncated``; bytes that are not UTF-8 become U+FFFD. ``stdin``: at most 128 KiB.
  An exec on a stopped session is 409.
- The kill switch refuses a create with 403 (copass-core documents 403 for it, and
  repeats every 5xx three times); the gateway answers it with 503 (spec 000).
- The per-user cap (``compute_sessions_per_user``, default 10) counts the caller's live
  sessions of every namespace, per API key or user; over it: 409. The org's cap of live
  sandboxes (``max_live_sandboxes_per_org``) is 409 too.
- 5xx and copass-core's retries: a create is the core's all-or-nothing create, after
  which nothing can fail, so an error made nothing and a repeated create makes one
  session; a sandbox failure during an exec is 409, never 5xx (the command ran).
- ``gateway.base_url``: ``public_url`` if set, else the origin the request came to. The
  bare per-port URL (``proxy_url(port, "")``) is the server's ``/``, with no redirect.
- ``provider`` is ``corral``; ``?provider=`` of another lists no templates. A template's
  ``cpu_count`` and ``memory_mb`` are the limits a session gets (the defaults).
"""
