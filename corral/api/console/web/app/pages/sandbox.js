// One sandbox: its header and actions, then tabs: terminal, files, exec, ports,
// network, checkpoints, audit. A sandbox gone while the page is open says so.
import { html, useState } from "../html.js";
import { api, ApiError } from "../api.js";
import { age, can, ConfirmButton, Notice, Status, useAction, usePoll } from "../ui.js";
import { Terminal } from "./terminal.js";
import { Files } from "./files.js";
import { Exec } from "./exec.js";
import { Audit } from "./audit.js";
import { Ports, Network, Checkpoints } from "./settings.js";
import { Desktop } from "./desktop.js";

const TABS = [
  ["terminal", "Terminal"],
  ["files", "Files"],
  ["exec", "Exec"],
  ["ports", "Ports"],
  ["network", "Network"],
  ["checkpoints", "Checkpoints"],
  ["audit", "Audit"],
  ["desktop", "Desktop"],
];

export function SandboxPage({ me, args: [id] }) {
  const sandbox = usePoll(() => api.get(`/api/sandboxes/${id}`), 3000, [id]);
  const [tab, setTab] = useState("terminal");
  const action = useAction();
  const sb = sandbox.data;
  const gone = sandbox.error instanceof ApiError && sandbox.error.status === 404;
  if (gone || sb?.status === "stopped" || sb?.status === "killed") {
    return html`<section class="gone" id="gone">
      <h1>Sandbox <code>${id}</code> is gone</h1>
      <p>It was killed or stopped${sb?.error ? `: ${sb.error}` : ""}. Its terminal and files went with it.</p>
      <p><a class="button" href="#/sandboxes">Back to the sandboxes</a></p>
    </section>`;
  }
  if (!sb) return html`<${Notice} error=${sandbox.error} />${!sandbox.error && html`<div class="loading">Loading…</div>`}`;
  const act = (fn) => action.run(async () => {
    await fn();
    sandbox.reload();
  });
  const hibernated = sb.status === "hibernated";
  return html`
    <section>
      <p class="crumbs"><a href="#/sandboxes">Sandboxes</a> /</p>
      <div class="title">
        <h1><code id="sandbox-id">${sb.sandboxID}</code></h1>
        <${Status} status=${sb.status} />
        <span class="meta">${sb.templateID} · ${sb.cpuCount} CPU · ${sb.memoryMB} MiB · up ${age(sb.startedAt)}</span>
        <span class="spacer"></span>
        ${can(me, "sandbox:write") && (hibernated
          ? html`<button type="button" id="wake" disabled=${action.busy} onClick=${() => act(() => api.post(`/api/sandboxes/${id}/wake`))}>Wake</button>`
          : html`<button type="button" id="hibernate" disabled=${action.busy} onClick=${() => act(() => api.post(`/api/sandboxes/${id}/hibernate`))}>Hibernate</button>`)}
        ${can(me, "sandbox:delete") && html`<${ConfirmButton} label="Kill" confirm="Kill: sure?" onConfirm=${() => act(() => api.del(`/api/sandboxes/${id}`))} />`}
      </div>
      <${Notice} error=${action.error} />
      <${Notice} error=${sandbox.error} />
      <div class="tabs" role="tablist">
        ${TABS.filter(([name]) => name !== "desktop" || sb.templateID === "gui").map(([name, label]) => html`
          <button type="button" role="tab" id=${"tab-" + name} aria-selected=${tab === name} class=${tab === name ? "active" : ""} onClick=${() => setTab(name)}>${label}</button>`)}
      </div>
      <div class="tab-body" role="tabpanel">
        ${hibernated && tab !== "audit" && tab !== "checkpoints"
          ? html`<div class="empty">This sandbox is hibernated. ${can(me, "sandbox:write") ? "Wake it to use its terminal, files and ports." : "Someone with the developer role can wake it."}</div>`
          : html`<${TabBody} tab=${tab} me=${me} sandbox=${sb} />`}
      </div>
    </section>`;
}

function TabBody({ tab, me, sandbox }) {
  const id = sandbox.sandboxID;
  switch (tab) {
    case "terminal":
      return can(me, "sandbox:exec")
        ? html`<${Terminal} sandboxId=${id} />`
        : html`<div class="empty">Your role (${me.role}) can look but not type: a terminal needs sandbox:exec.</div>`;
    case "files":
      return html`<${Files} me=${me} sandboxId=${id} />`;
    case "exec":
      return html`<${Exec} me=${me} sandboxId=${id} />`;
    case "ports":
      return html`<${Ports} me=${me} sandboxId=${id} />`;
    case "network":
      return html`<${Network} me=${me} sandboxId=${id} />`;
    case "checkpoints":
      return html`<${Checkpoints} me=${me} sandboxId=${id} />`;
    case "audit":
      return html`<${Audit} me=${me} sandboxId=${id} />`;
    case "desktop":
      return html`<${Desktop} sandboxId=${id} />`;
  }
  return null;
}
