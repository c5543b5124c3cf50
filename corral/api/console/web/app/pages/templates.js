// Templates: the built-in ones and the org's, and a build from a Dockerfile with its
// log streaming.
import { html, useRef, useState } from "../html.js";
import { api, stream } from "../api.js";
import { can, ConfirmButton, Empty, Notice, Status, useAction, usePoll, when } from "../ui.js";

const EXAMPLE = "FROM base\nRUN echo built > /etc/motd\n";

export function Templates({ me }) {
  const list = usePoll(() => api.get("/api/templates"), 5000);
  const [form, setForm] = useState({ name: "", dockerfile: EXAMPLE });
  const [log, setLog] = useState(null);
  const [outcome, setOutcome] = useState(null);
  const logBox = useRef(null);
  const action = useAction();
  const build = (event) => {
    event.preventDefault();
    setLog([]);
    setOutcome(null);
    action.run(async () => {
      await stream("/api/templates", {
        method: "POST",
        body: { name: form.name, dockerfile: form.dockerfile },
        onEvent: (name, data) => {
          if (name === "build_log") {
            setLog((lines) => [...lines, data.message]);
            logBox.current?.scrollTo(0, logBox.current.scrollHeight);
          } else if (name === "result") setOutcome(data);
          else if (name === "error") setOutcome({ status: "failed", error: data.error });
        },
      });
      list.reload();
    });
  };
  const remove = (t) => action.run(async () => {
    await api.del(`/api/templates/${t.name}`);
    list.reload();
  });
  const templates = list.data ?? [];
  return html`
    <section>
      <div class="title"><h1>Templates</h1></div>
      <${Notice} error=${list.error} />
      <${Notice} error=${action.error} />
      ${list.data && templates.length === 0
        ? html`<${Empty}>No templates. Build one from a Dockerfile below.</${Empty}>`
        : html`<table class="list" id="templates"><thead><tr><th>Name</th><th>Tag</th><th>Status</th><th>Created</th><th></th></tr></thead>
            <tbody>${templates.map((t) => html`<tr key=${t.templateID}><td>${t.name}${t.builtin ? html` <span class="muted">built-in</span>` : ""}</td>
              <td>${t.tag}</td><td><${Status} status=${t.status} />${t.error ? ` ${t.error}` : ""}</td><td>${when(t.createdAt)}</td>
              <td class="actions">${!t.builtin && can(me, "sandbox:create") && html`<${ConfirmButton} label="Delete" onConfirm=${() => remove(t)} />`}</td></tr>`)}</tbody></table>`}
      ${can(me, "sandbox:create") && html`<h2>Build from a Dockerfile</h2>
        <form class="stack" onSubmit=${build}>
          <label>Name<input id="template-name" required placeholder="my-template" value=${form.name} onInput=${(e) => setForm({ ...form, name: e.target.value })} /></label>
          <label>Dockerfile<textarea class="mono" id="dockerfile" rows="6" spellcheck="false" value=${form.dockerfile} onInput=${(e) => setForm({ ...form, dockerfile: e.target.value })}></textarea></label>
          <div><button type="submit" class="primary" id="build" disabled=${action.busy}>${action.busy ? "Building…" : "Build"}</button></div>
        </form>
        ${log && html`<pre class="out tall" ref=${logBox} id="build-log">${log.join("\n")}</pre>`}
        ${outcome && html`<${Notice} kind=${outcome.status === "ready" ? "info" : "error"}>${outcome.status === "ready" ? `Built ${outcome.name ?? form.name}.` : `Build failed: ${outcome.error}`}</${Notice}>`}`}
    </section>`;
}
