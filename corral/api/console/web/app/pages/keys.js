// The org's API keys: mint (the key shown once), revoke.
import { html, useState } from "../html.js";
import { api } from "../api.js";
import { can, ConfirmButton, Empty, Notice, useAction, usePoll, when } from "../ui.js";

const ROLES = ["viewer", "developer", "admin", "owner"];

export function Keys({ me }) {
  const allowed = can(me, "keys:manage");
  const keys = usePoll(() => (allowed ? api.get("/api/keys") : null), 0);
  const [form, setForm] = useState({ name: "", role: "developer" });
  const [minted, setMinted] = useState(null);
  const action = useAction();
  if (!allowed) return html`<${Empty}>Managing API keys needs the admin or owner role (keys:manage); yours is ${me.role}.</${Empty}>`;
  const mint = (event) => {
    event.preventDefault();
    action.run(async () => {
      setMinted(await api.post("/api/keys", { role: form.role, name: form.name }));
      setForm({ ...form, name: "" });
      keys.reload();
    });
  };
  const revoke = (key) =>
    action.run(async () => {
      await api.del(`/api/keys/${key.id}`);
      keys.reload();
    });
  const rank = ROLES.indexOf(me.role);
  const list = keys.data ?? [];
  return html`
    <section>
      <div class="title"><h1>API keys</h1></div>
      <form class="bar" onSubmit=${mint} aria-label="Mint an API key">
        <label>Name<input id="key-name" placeholder="e.g. ci" value=${form.name} onInput=${(e) => setForm({ ...form, name: e.target.value })} /></label>
        <label>Role<select id="key-role" value=${form.role} onChange=${(e) => setForm({ ...form, role: e.target.value })}>
          ${ROLES.filter((_, i) => i <= rank).map((r) => html`<option value=${r}>${r}</option>`)}</select></label>
        <button type="submit" class="primary" id="mint" disabled=${action.busy}>Mint key</button>
      </form>
      ${minted && html`<div class="minted" id="minted" role="status">
        <p><strong>Copy this key now: it is shown only once.</strong> Key <code>${minted.id}</code> (${minted.role})</p>
        <input class="mono grow" id="minted-key" readonly value=${minted.key} onFocus=${(e) => e.target.select()} />
        <button type="button" onClick=${() => navigator.clipboard?.writeText(minted.key)}>Copy</button>
        <button type="button" class="quiet" onClick=${() => setMinted(null)}>Done</button>
      </div>`}
      <${Notice} error=${keys.error} />
      <${Notice} error=${action.error} />
      ${keys.data && list.length === 0
        ? html`<${Empty}>No keys. Mint one above.</${Empty}>`
        : html`<table class="list" id="keys"><thead><tr><th>Key</th><th>Name</th><th>Role</th><th>Created</th><th>Last used</th><th></th></tr></thead>
            <tbody>${list.map((k) => html`<tr key=${k.id} data-id=${k.id} class=${k.revokedAt ? "revoked" : ""}>
              <td><code>${k.id}</code>${k.id === me.keyID ? " (this one)" : ""}</td><td>${k.name || "—"}</td><td>${k.role}</td>
              <td>${when(k.createdAt)}</td><td>${when(k.lastUsedAt)}</td>
              <td class="actions">${k.revokedAt
                ? html`<span class="muted">revoked ${when(k.revokedAt)}</span>`
                : k.id !== me.keyID && ROLES.indexOf(k.role) <= rank && html`<${ConfirmButton} label="Revoke" onConfirm=${() => revoke(k)} />`}</td>
            </tr>`)}</tbody></table>`}
    </section>`;
}
