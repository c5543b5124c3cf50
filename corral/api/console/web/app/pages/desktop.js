// A gui sandbox's desktop: noVNC, served by the gateway on the desktop's own host (an
// origin apart from the console's), opened in a tab of its own.
import { html } from "../html.js";
import { api } from "../api.js";
import { Empty, Notice, usePoll } from "../ui.js";

export function Desktop({ sandboxId }) {
  const found = usePoll(() => api.get(`/api/v1/sandboxes/${sandboxId}`), 0, [sandboxId]);
  const url = found.data?.vnc_url;
  return html`
    <div>
      <${Notice} error=${found.error} />
      ${found.data && (url
        ? html`<p>The desktop runs on its own host, with a pass for it alone: a page in the sandbox cannot reach this console.</p>
            <p><a class="button primary" id="desktop-link" href=${url} target="_blank" rel="noopener noreferrer">Open the desktop ↗</a></p>`
        : html`<${Empty}>This sandbox has no desktop. Create one from the <code>gui</code> template to get one.</${Empty}>`)}
    </div>`;
}
