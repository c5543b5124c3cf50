// Agent runs (/api/sessions): a computer-use agent on a desktop. Launch one with a
// prompt; a thread's page shows its messages and actions live, its run's status, and
// a link to its desktop (on its own host). The API lists no threads: the ones opened
// in this tab are kept here (session storage).
import { html, useEffect, useState } from "../html.js";
import { api, stream } from "../api.js";
import { can, ConfirmButton, Empty, Notice, useAction, usePoll, when } from "../ui.js";

const RECENT = "corral.threads";

function recent() {
  try {
    return JSON.parse(sessionStorage.getItem(RECENT) ?? "[]");
  } catch {
    return [];
  }
}

function remember(threadId, prompt) {
  const others = recent().filter((t) => t.id !== threadId);
  sessionStorage.setItem(RECENT, JSON.stringify([{ id: threadId, prompt, at: new Date().toISOString() }, ...others].slice(0, 50)));
}

export function Runs({ me }) {
  const [prompt, setPrompt] = useState("");
  const [open, setOpen] = useState("");
  const action = useAction();
  const launch = (event) => {
    event.preventDefault();
    action.run(async () => {
      const thread = await api.post("/api/sessions", { prompt });
      await api.post(`/api/sessions/${thread.threadId}/runs`, { message: prompt });
      remember(thread.threadId, prompt);
      location.hash = `#/runs/${thread.threadId}`;
    });
  };
  const threads = recent();
  return html`
    <section>
      <div class="title"><h1>Agent runs</h1></div>
      <p class="hint">A computer-use agent works on a Linux desktop until its goal is met; watch its actions here and its desktop live. The model is called from corral's host (CORRAL_ANTHROPIC_API_KEY).</p>
      ${can(me, "sessions:write") && html`<form class="stack" onSubmit=${launch} aria-label="Launch an agent run">
        <label>Goal<textarea id="run-prompt" rows="3" required placeholder="e.g. open a terminal and save the date to ~/Desktop/today.txt" value=${prompt} onInput=${(e) => setPrompt(e.target.value)}></textarea></label>
        <div><button type="submit" class="primary" id="run-launch" disabled=${action.busy}>${action.busy ? "Launching…" : "Launch"}</button></div>
      </form>`}
      <${Notice} error=${action.error} />
      <form class="bar" onSubmit=${(e) => (e.preventDefault(), open && (location.hash = `#/runs/${open.trim()}`))}>
        <input class="grow" aria-label="Thread id" placeholder="a thread id (th-…) to open" value=${open} onInput=${(e) => setOpen(e.target.value)} />
        <button type="submit">Open</button>
      </form>
      ${threads.length === 0
        ? html`<${Empty}>No threads opened in this tab yet. Launch one above, or open one by its id.</${Empty}>`
        : html`<table class="list"><thead><tr><th>Thread</th><th>Goal</th><th>Opened</th></tr></thead>
            <tbody>${threads.map((t) => html`<tr key=${t.id}><td><a href=${`#/runs/${t.id}`}><code>${t.id}</code></a></td><td>${t.prompt}</td><td>${when(t.at)}</td></tr>`)}</tbody></table>`}
    </section>`;
}

export function RunPage({ me, args: [threadId] }) {
  const thread = usePoll(() => api.get(`/api/sessions/${threadId}`), 2000, [threadId]);
  const [message, setMessage] = useState("");
  const [live, setLive] = useState({ run: null, status: null });
  const action = useAction();
  const messages = thread.data?.thread.messages ?? [];
  const lastRun = [...messages].reverse().find((m) => m.runId)?.runId ?? live.run;
  useEffect(() => {
    if (!lastRun) return undefined;
    const abort = new AbortController();
    stream(`/api/sessions/${threadId}/runs/${lastRun}/stream`, {
      signal: abort.signal,
      onEvent: (name, data) => {
        if (name === "status") setLive({ run: lastRun, status: data.status });
        thread.reload();
      },
    }).catch(() => {});
    return () => abort.abort();
  }, [threadId, lastRun]);
  const followUp = (event) => {
    event.preventDefault();
    action.run(async () => {
      const run = await api.post(`/api/sessions/${threadId}/runs`, { message });
      setMessage("");
      setLive({ run: run.runId, status: "QUEUED" });
      thread.reload();
    });
  };
  const cancel = () => action.run(() => api.post(`/api/sessions/${threadId}/runs/${lastRun}/cancel`));
  const meta = thread.data?.thread.metadata ?? {};
  const running = live.status === "RUNNING" || live.status === "QUEUED";
  return html`
    <section>
      <p class="crumbs"><a href="#/runs">Agent runs</a> /</p>
      <div class="title"><h1><code>${threadId}</code></h1>
        ${live.status && html`<span class=${`status status-${live.status}`} id="run-status">${live.status}</span>`}
        <span class="spacer"></span>
        ${meta.vncUrl && html`<a class="button" href=${meta.vncUrl} target="_blank" rel="noopener noreferrer">Open its desktop ↗</a>`}
        ${can(me, "sessions:write") && running && html`<${ConfirmButton} label="Cancel run" onConfirm=${cancel} />`}
      </div>
      <${Notice} error=${thread.error} />
      <${Notice} error=${action.error} />
      ${thread.data && html`<p class="hint">Goal: ${thread.data.thread.prompts.goalPrompt}${meta.sandboxStatus ? ` · desktop ${meta.sandboxStatus}` : ""}</p>`}
      ${messages.length === 0
        ? html`<${Empty}>No messages yet.</${Empty}>`
        : html`<ol class="events" id="run-messages">${messages.map((m) => html`<li key=${m.id}>
            <strong>${m.role}</strong> ${m.role === "action"
              ? html`<code>${JSON.stringify(m.action)}</code> <span class="muted">${m.status ?? ""}${m.detail ? `: ${m.detail}` : ""}</span>`
              : m.content}
            <span class="muted small"> ${when(m.createdAt)}</span></li>`)}</ol>`}
      ${can(me, "sessions:write") && !running && html`<form class="bar" onSubmit=${followUp}>
        <input class="grow" aria-label="Follow-up" placeholder="a follow-up for the agent" required value=${message} onInput=${(e) => setMessage(e.target.value)} />
        <button type="submit" class="primary" disabled=${action.busy}>Send</button></form>`}
    </section>`;
}
