// The org's sandboxes, live (polled), with create, kill, hibernate and wake.
import { html, useState } from "../html.js";
import { api } from "../api.js";
import { age, can, ConfirmButton, Empty, Notice, Status, useAction, usePoll } from "../ui.js";

export function Sandboxes({ me }) {
  const list = usePoll(() => api.get("/api/sandboxes"), 2000);
  const action = useAction();
  const act = (fn) => action.run(async () => {
    await fn();
    list.reload();
  });
  const sandboxes = list.data ?? [];
  return html`
    <section>
      <div class="title"><h1>Sandboxes</h1><span class="live" title="updated every 2 seconds">live</span></div>
      ${can(me, "sandbox:create") && html`<${CreateForm} onCreated=${(sb) => (location.hash = `#/sandboxes/${sb.sandboxID}`)} />`}
      <${Notice} error=${list.error} />
      <${Notice} error=${action.error} />
      ${list.data === null && !list.error
        ? html`<div class="loading">Loading…</div>`
        : sandboxes.length === 0
          ? html`<${Empty}>No sandboxes yet. ${can(me, "sandbox:create") ? "Create one above, or from a script with the SDK or `corral sandbox create`." : "Someone with the developer role can create one."}</${Empty}>`
          : html`<table class="list" id="sandboxes">
              <thead><tr><th>Sandbox</th><th>Status</th><th>Template</th><th>Limits</th><th>Age</th><th></th></tr></thead>
              <tbody>
                ${sandboxes.map((sb) => html`
                  <tr key=${sb.sandboxID} data-id=${sb.sandboxID}>
                    <td><a href=${`#/sandboxes/${sb.sandboxID}`}><code>${sb.sandboxID}</code></a></td>
                    <td><${Status} status=${sb.status} /></td>
                    <td>${sb.templateID}</td>
                    <td>${sb.cpuCount} CPU · ${sb.memoryMB} MiB · ${Math.round(sb.diskMB / 1024)} GiB</td>
                    <td title=${sb.startedAt}>${age(sb.startedAt)}</td>
                    <td class="actions">
                      ${can(me, "sandbox:delete") && html`
                        ${sb.status === "hibernated"
                          ? html`<button type="button" disabled=${action.busy} onClick=${() => act(() => api.post(`/api/sandboxes/${sb.sandboxID}/wake`))}>Wake</button>`
                          : html`<button type="button" disabled=${action.busy} onClick=${() => act(() => api.post(`/api/sandboxes/${sb.sandboxID}/hibernate`))}>Hibernate</button>`}
                        <${ConfirmButton} label="Kill" confirm="Kill: sure?" onConfirm=${() => act(() => api.del(`/api/sandboxes/${sb.sandboxID}`))} />`}
                    </td>
                  </tr>`)}
              </tbody>
            </table>`}
    </section>`;
}

function CreateForm({ onCreated }) {
  const templates = usePoll(() => api.get("/api/templates"), 0);
  const [form, setForm] = useState({ templateID: "base", cpuCount: "", memoryMB: "", timeout: "" });
  const action = useAction();
  const set = (name) => (e) => setForm({ ...form, [name]: e.target.value });
  const submit = (event) => {
    event.preventDefault();
    const body = { templateID: form.templateID };
    for (const name of ["cpuCount", "memoryMB", "timeout"]) if (form[name] !== "") body[name] = Number(form[name]);
    action.run(async () => onCreated(await api.post("/api/sandboxes", body)));
  };
  const ready = (templates.data ?? []).filter((t) => t.status === "ready");
  return html`
    <form class="bar" onSubmit=${submit} aria-label="Create a sandbox">
      <label>Template
        <select id="template" value=${form.templateID} onChange=${set("templateID")}>
          ${(ready.length ? ready : [{ name: "base" }]).map((t) => html`<option value=${t.name}>${t.name}</option>`)}
        </select></label>
      <label>CPUs<input type="number" min="1" placeholder="default" value=${form.cpuCount} onInput=${set("cpuCount")} /></label>
      <label>Memory MiB<input type="number" min="64" placeholder="default" value=${form.memoryMB} onInput=${set("memoryMB")} /></label>
      <label>Idle timeout s<input type="number" min="1" placeholder="default" value=${form.timeout} onInput=${set("timeout")} /></label>
      <button type="submit" class="primary" id="create" disabled=${action.busy}>${action.busy ? "Creating…" : "Create sandbox"}</button>
      <${Notice} error=${action.error} />
    </form>`;
}
