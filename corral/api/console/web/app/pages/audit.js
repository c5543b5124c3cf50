// The audit trail: the org's (filter by sandbox, actor, type) or one sandbox's.
import { html, useState } from "../html.js";
import { api, ApiError } from "../api.js";
import { can, Empty, Notice, useAction, usePoll, when } from "../ui.js";

export function Audit({ me, sandboxId }) {
  const [filter, setFilter] = useState({ sandbox: "", actor: "", kind: "" });
  const [applied, setApplied] = useState(filter);
  const [more, setMore] = useState({ events: [], cursor: null });
  const action = useAction();
  const query = (cursor) => {
    const params = new URLSearchParams({ limit: "100" });
    if (cursor) params.set("cursor", cursor);
    if (sandboxId) return `/api/sandboxes/${sandboxId}/audit?${params}`;
    if (applied.sandbox) params.set("sandboxID", applied.sandbox.trim());
    if (applied.actor.trim()) params.set("actor", applied.actor.trim());
    for (const kind of applied.kind.split(/[\s,]+/).filter(Boolean)) params.append("kind", kind);
    return `/api/audit?${params}`;
  };
  const page = usePoll(() => (can(me, "audit:read") ? api.get(query()) : null), 3000, [sandboxId, applied]);
  if (!can(me, "audit:read")) {
    return html`<${Empty}>Reading the audit trail needs the admin or owner role (audit:read); yours is ${me.role}.</${Empty}>`;
  }
  const loadMore = (cursor) =>
    action.run(async () => {
      const next = await api.get(query(cursor));
      setMore({ events: [...more.events, ...next.events], cursor: next.nextCursor });
    });
  const events = [...(page.data?.events ?? []), ...more.events];
  const nextCursor = more.events.length ? more.cursor : page.data?.nextCursor;
  const apply = (event) => {
    event.preventDefault();
    setMore({ events: [], cursor: null });
    setApplied(filter);
  };
  const set = (name) => (e) => setFilter({ ...filter, [name]: e.target.value });
  return html`
    <section>
      ${!sandboxId && html`<div class="title"><h1>Audit</h1><span class="live">live</span></div>
        <form class="bar" onSubmit=${apply} aria-label="Filter the audit trail">
          <label>Sandbox<input id="audit-sandbox" placeholder="sb-…" value=${filter.sandbox} onInput=${set("sandbox")} /></label>
          <label>Actor (key or client id)<input id="audit-actor" value=${filter.actor} onInput=${set("actor")} /></label>
          <label>Types<input id="audit-kind" placeholder="e.g. sandbox_created exec_started" value=${filter.kind} onInput=${set("kind")} /></label>
          <button type="submit" class="primary" id="audit-filter">Filter</button>
        </form>`}
      <${Notice} error=${page.error instanceof ApiError && page.error.status === 403 ? "Your role cannot read this audit trail." : page.error} />
      <${Notice} error=${action.error} />
      ${page.data && events.length === 0
        ? html`<${Empty}>No audit records${sandboxId ? " for this sandbox" : " match"}. Records appear as sandboxes are created, used and killed.</${Empty}>`
        : html`<table class="list" id="audit"><thead><tr><th>When</th><th>Type</th><th>Sandbox</th><th>Actor</th><th>Details</th></tr></thead>
            <tbody>${events.map((e) => html`<tr key=${e.id}>
              <td title=${e.at}>${when(e.at)}</td><td><code>${e.kind}</code></td>
              <td>${e.sandboxID ? html`<a href=${`#/sandboxes/${e.sandboxID}`}><code>${e.sandboxID}</code></a>` : "—"}</td>
              <td>${e.keyID ? `key ${e.keyID}` : "—"}${e.clientID ? ` · ${e.clientID}` : ""}</td>
              <td class="mono small">${Object.keys(e.data).length ? JSON.stringify(e.data) : ""}</td></tr>`)}</tbody></table>`}
      ${nextCursor && html`<button type="button" onClick=${() => loadMore(nextCursor)} disabled=${action.busy}>Older records</button>`}
    </section>`;
}
