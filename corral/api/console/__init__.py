"""The web console (issue 16): a single page served at ``/console``, a client of
corral's own public API only (the OpenComputer control plane at ``/api``, the Enclave
surface at ``/sessions``), so what the console can do a script can do.

    /console                the page (``web/app/index.html`` with its import map)
    /console/app/...        the console's own ES modules and CSS (``web/app/``)
    /console/vendor/...     the front-end packages npm installed (``web/node_modules``,
                            pinned by ``web/package-lock.json``; ``make install``), only
                            the files of ``VENDOR`` (no package.json, no sources maps' siblings)

No build step: the browser loads the modules as they are, their bare names ("preact",
"@xterm/xterm", ...) resolved by the page's import map. Nothing comes from another
origin (the console works without internet).

Every answer carries a strict Content-Security-Policy: scripts from this origin only
(and the import map, by its hash), connections to this origin only (``fetch`` and
WebSockets), no frames of it anywhere, no plugins, no base or form targets elsewhere.
Styles may be inline (xterm.js and uPlot size their elements from script).

Credentials never reach these routes: the page keeps the key or token in the tab's
session storage and sends it as a header (``X-API-Key`` or ``Authorization: Bearer``) to
the API, and to WebSockets as an offered subprotocol (``corral.api.credentials``); no
cookie is ever set, so there is no CSRF to fear. Preview and desktop pages are served
from their own hosts (the gateway's), another origin, which cannot read that storage.
"""
