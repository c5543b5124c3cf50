// Enclave code sessions: launch code, follow its stream (output beside the audit
// events, live), read the result.
import { html, useEffect, useState } from "../html.js";
import { api, ApiError, stream } from "../api.js";
import { age, can, ConfirmButton, Empty, Notice, useAction, usePoll } from "../ui.js";

const SAMPLE = { python: 'print("hello from a session")\n', node: 'console.log("hello from a session")\n' };

export function Sessions({ me }) {
  const list = usePoll(() => api.get("/sessions?limit=50"), 3000);
  const [language, setLanguage] = useState("python");
  const [code, setCode] = useState(SAMPLE.python);
  const action = useAction();
  const launch = (event) => {
    event.preventDefault();
    action.run(async () => {
      const session = await api.post("/sessions", { language, code });
      location.hash = `#/sessions/${session.id}`;
    });
  };
  const sessions = list.data?.sessions ?? [];
  return html`
    <section>
      <div class="title"><h1>Code sessions</h1><span class="live">live</span></div>
      ${can(me, "sessions:write") && html`<form class="stack" onSubmit=${launch} aria-label="Launch code">
        <div class="bar"><label>Language<select id="language" value=${language} onChange=${(e) => {
          setLanguage(e.target.value);
          if (Object.values(SAMPLE).includes(code)) setCode(SAMPLE[e.target.value]);
        }}><option value="python">Python</option><option value="node">Node.js</option></select></label>
        <span class="spacer"></span><button type="submit" class="primary" id="launch" disabled=${action.busy}>${action.busy ? "Launching…" : "Launch"}</button></div>
        <textarea id="code" class="mono" rows="8" spellcheck="false" aria-label="Code" value=${code} onInput=${(e) => setCode(e.target.value)}></textarea>
      </form>`}
      <${Notice} error=${action.error} />
      <${Notice} error=${list.error} />
      ${list.data && sessions.length === 0
        ? html`<${Empty}>No sessions yet. ${can(me, "sessions:write") ? "Launch some code above." : ""}</${Empty}>`
        : html`<table class="list"><thead><tr><th>Session</th><th>Language</th><th>Phase</th><th>Outcome</th><th>Age</th></tr></thead>
            <tbody>${sessions.map((s) => html`<tr key=${s.id}><td><a href=${`#/sessions/${s.id}`}><code>${s.id}</code></a></td>
              <td>${s.language}</td><td>${s.phase}</td><td>${s.outcome ?? "—"}</td><td>${age(s.createdAt)}</td></tr>`)}</tbody></table>`}
    </section>`;
}

export function SessionPage({ me, args: [id] }) {
  const [frames, setFrames] = useState({ output: [], audit: [], phase: "…", result: null, ended: false });
  const [error, setError] = useState(null);
  const action = useAction();
  useEffect(() => {
    const abort = new AbortController();
    const onEvent = (_name, frame) =>
      setFrames((f) => {
        if (frame.kind === "stdout" || frame.kind === "stderr") return { ...f, output: [...f.output, frame] };
        if (frame.kind === "audit") return { ...f, audit: [...f.audit, frame.event] };
        if (frame.kind === "phase") return { ...f, phase: frame.phase };
        if (frame.kind === "result") return { ...f, result: frame.result };
        if (frame.kind === "end") return { ...f, phase: frame.phase, ended: true };
        return f;
      });
    stream(`/sessions/${id}/stream`, { signal: abort.signal, onEvent }).catch((e) => {
      if (e.name !== "AbortError") setError(e instanceof ApiError && e.status === 404 ? new Error(`No session ${id} in this org.`) : e);
    });
    return () => abort.abort();
  }, [id]);
  const stop = () => action.run(() => api.del(`/sessions/${id}`));
  const result = frames.result;
  return html`
    <section>
      <p class="crumbs"><a href="#/sessions">Code sessions</a> /</p>
      <div class="title"><h1><code>${id}</code></h1><span class=${`status status-${frames.phase}`} id="phase">${frames.phase}</span>
        <span class="spacer"></span>
        ${can(me, "sessions:write") && !frames.ended && html`<${ConfirmButton} label="Stop" onConfirm=${stop} />`}</div>
      <${Notice} error=${error} />
      <${Notice} error=${action.error} />
      ${result && html`<div class="result" id="session-result">
        <div class="meta">exit code <strong id="session-exit">${result.exitCode ?? "—"}</strong> · ${result.durationMs} ms${result.killReason ? ` · killed: ${result.killReason}` : ""}</div>
        ${result.result !== null && result.result !== undefined && html`<pre class="out">${JSON.stringify(result.result, null, 2)}</pre>`}
      </div>`}
      <div class="split">
        <div><h2>Output</h2>
          <pre class="out tall" id="session-output">${frames.output.map((f) => html`<span class=${f.kind === "stderr" ? "err" : ""}>${f.chunk}</span>`)}</pre></div>
        <div><h2>Audit events</h2>
          ${frames.audit.length === 0
            ? html`<${Empty}>Events appear here as the session runs.</${Empty}>`
            : html`<ol class="events" id="session-audit">${frames.audit.map((e) => html`<li><code>${e.type}</code> <span class="muted">${new Date(e.ts).toLocaleTimeString()}</span></li>`)}</ol>`}</div>
      </div>
    </section>`;
}
