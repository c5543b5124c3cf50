// A sandbox's open ports (with preview links on their own hosts), egress policy, and
// checkpoints (create, fork).
import { html, useEffect, useState } from "../html.js";
import { api } from "../api.js";
import { can, ConfirmButton, Empty, Notice, useAction, usePoll, when } from "../ui.js";

export function Ports({ sandboxId }) {
  const services = usePoll(() => api.get(`/api/v1/sandboxes/${sandboxId}/services`), 3000, [sandboxId]);
  const list = services.data ?? [];
  return html`
    <div>
      <p class="hint">Ports listening in the sandbox. A preview opens on the port's own host (sbx-…), another origin than this console, with a pass for that one port.</p>
      <${Notice} error=${services.error} />
      ${services.data && list.length === 0
        ? html`<${Empty}>No port is listening. Start a server in the terminal (e.g. <code>python3 -m http.server 8000</code>) and it shows here.</${Empty}>`
        : html`<table class="list" id="ports"><thead><tr><th>Port</th><th>Preview</th></tr></thead>
            <tbody>${list.map((s) => html`<tr key=${s.port}><td>${s.port}</td>
              <td><a href=${s.preview_url} target="_blank" rel="noopener noreferrer">Open preview ↗</a></td></tr>`)}</tbody></table>`}
    </div>`;
}

export function Network({ me, sandboxId }) {
  const policy = usePoll(() => api.get(`/api/sandboxes/${sandboxId}/allowed-hosts`), 0, [sandboxId]);
  const [form, setForm] = useState(null);
  const action = useAction();
  useEffect(() => {
    const egress = policy.data?.egress;
    if (egress) setForm({ mode: egress.mode, allow: egress.allow.join("\n"), deny: egress.deny.join("\n") });
  }, [policy.data]);
  if (!form) return html`<${Notice} error=${policy.error} />`;
  const lines = (text) => text.split(/[\s,]+/).filter(Boolean);
  const save = (event) => {
    event.preventDefault();
    action.run(async () => {
      await api.put(`/api/sandboxes/${sandboxId}/network`, { mode: form.mode, allow: lines(form.allow), deny: lines(form.deny) });
      policy.reload();
    });
  };
  const editable = can(me, "sandbox:write");
  return html`
    <form class="stack" onSubmit=${save}>
      <p class="hint">What the sandbox may reach. Hosts and CIDRs, one a line. The host, other sandboxes and link-local addresses are always denied.</p>
      <label>Mode
        <select id="egress-mode" value=${form.mode} disabled=${!editable} onChange=${(e) => setForm({ ...form, mode: e.target.value })}>
          <option value="allow_all">allow all (but the deny list)</option>
          <option value="deny_all">deny all (but the allow list)</option>
        </select></label>
      <label>Allow<textarea rows="4" id="egress-allow" disabled=${!editable} value=${form.allow} onInput=${(e) => setForm({ ...form, allow: e.target.value })}></textarea></label>
      <label>Deny<textarea rows="4" id="egress-deny" disabled=${!editable} value=${form.deny} onInput=${(e) => setForm({ ...form, deny: e.target.value })}></textarea></label>
      <${Notice} error=${action.error} />
      ${editable && html`<div><button type="submit" class="primary" id="egress-save" disabled=${action.busy}>Save policy</button></div>`}
    </form>`;
}

export function Checkpoints({ me, sandboxId }) {
  const list = usePoll(() => api.get(`/api/sandboxes/${sandboxId}/checkpoints`), 3000, [sandboxId]);
  const [name, setName] = useState("");
  const action = useAction();
  const create = (event) => {
    event.preventDefault();
    action.run(async () => {
      await api.post(`/api/sandboxes/${sandboxId}/checkpoints`, { name: name || `checkpoint-${Date.now()}` });
      setName("");
      list.reload();
    });
  };
  const fork = (checkpoint) =>
    action.run(async () => {
      const sb = await api.post(`/api/sandboxes/from-checkpoint/${checkpoint.id}`, {});
      location.hash = `#/sandboxes/${sb.sandboxID}`;
    });
  const remove = (checkpoint) =>
    action.run(async () => {
      await api.del(`/api/sandboxes/${sandboxId}/checkpoints/${checkpoint.id}`);
      list.reload();
    });
  const checkpoints = list.data ?? [];
  return html`
    <div>
      ${can(me, "sandbox:write") && html`<form class="bar" onSubmit=${create}>
        <input class="grow" id="checkpoint-name" aria-label="Checkpoint name" placeholder="checkpoint name" value=${name} onInput=${(e) => setName(e.target.value)} />
        <button type="submit" class="primary" id="checkpoint" disabled=${action.busy}>Checkpoint</button></form>`}
      <${Notice} error=${list.error} />
      <${Notice} error=${action.error} />
      ${list.data && checkpoints.length === 0
        ? html`<${Empty}>No checkpoints. A checkpoint keeps the sandbox's disk; fork it into new sandboxes.</${Empty}>`
        : html`<table class="list" id="checkpoints"><thead><tr><th>Name</th><th>Status</th><th>Created</th><th></th></tr></thead>
            <tbody>${checkpoints.map((c) => html`<tr key=${c.id}><td>${c.name}</td><td>${c.status}${c.error ? `: ${c.error}` : ""}</td><td>${when(c.createdAt)}</td>
              <td class="actions">
                ${can(me, "sandbox:create") && c.status === "ready" && html`<button type="button" class="fork" onClick=${() => fork(c)} disabled=${action.busy}>Fork</button>`}
                ${can(me, "sandbox:write") && html`<${ConfirmButton} label="Delete" onConfirm=${() => remove(c)} />`}
              </td></tr>`)}</tbody></table>`}
    </div>`;
}
