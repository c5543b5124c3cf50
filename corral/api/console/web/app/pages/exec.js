// Run a command and read its output; the sandbox's exec sessions and their output
// (attached over the exec WebSocket: its scrollback, then live).
import { html, useEffect, useState } from "../html.js";
import { api, socket } from "../api.js";
import { age, can, Empty, Notice, useAction, usePoll } from "../ui.js";

export function Exec({ me, sandboxId }) {
  const [command, setCommand] = useState("");
  const [result, setResult] = useState(null);
  const [watching, setWatching] = useState(null);
  const action = useAction();
  const base = `/api/sandboxes/${sandboxId}/exec`;
  const sessions = usePoll(() => api.get(base), 3000, [sandboxId]);
  const run = (event) => {
    event.preventDefault();
    if (!command.trim()) return;
    action.run(async () => setResult(await api.post(`${base}/run`, { cmd: "sh", args: ["-c", command] })));
  };
  const list = sessions.data ?? [];
  return html`
    <div>
      ${can(me, "sandbox:exec")
        ? html`<form class="bar" onSubmit=${run}>
            <input class="grow mono" id="command" aria-label="Command" placeholder="a shell command, e.g. ls -la" value=${command} onInput=${(e) => setCommand(e.target.value)} />
            <button type="submit" class="primary" id="run" disabled=${action.busy}>${action.busy ? "Running…" : "Run"}</button>
          </form>`
        : html`<p class="hint">Your role (${me.role}) can read sessions but not run commands.</p>`}
      <${Notice} error=${action.error} />
      ${result && html`<div class="result" id="exec-result">
        <div class="meta">exit code <strong id="exit-code">${result.exitCode}</strong>${result.truncated ? " · output truncated" : ""}</div>
        <pre class="out" id="stdout">${result.stdout}</pre>
        ${result.stderr && html`<pre class="out err">${result.stderr}</pre>`}
      </div>`}
      <h2>Exec sessions</h2>
      <${Notice} error=${sessions.error} />
      ${list.length === 0
        ? html`<${Empty}>No exec sessions. Sessions started by the SDKs (exec.start) show here with their output.</${Empty}>`
        : html`<table class="list"><thead><tr><th>Session</th><th>Command</th><th>State</th><th>Started</th><th></th></tr></thead>
            <tbody>${list.map((s) => html`<tr key=${s.sessionID} data-id=${s.sessionID}>
              <td><code>${s.sessionID}</code></td>
              <td class="mono">${[s.command, ...s.args].join(" ")}</td>
              <td>${s.running ? "running" : `exited ${s.exitCode}`}</td>
              <td>${age(s.startedAt)} ago</td>
              <td class="actions"><button type="button" onClick=${() => setWatching(s.sessionID)}>Output</button></td>
            </tr>`)}</tbody></table>`}
      ${watching && html`<${SessionOutput} key=${watching} sandboxId=${sandboxId} sessionId=${watching} canExec=${can(me, "sandbox:exec")} />`}
    </div>`;
}

function SessionOutput({ sandboxId, sessionId, canExec }) {
  const [text, setText] = useState("");
  const [state, setState] = useState("attaching");
  useEffect(() => {
    if (!canExec) {
      setState("attaching needs sandbox:exec");
      return undefined;
    }
    const ws = socket(`/api/sandboxes/${sandboxId}/exec/${sessionId}`);
    const decoder = new TextDecoder();
    ws.onmessage = (event) => {
      const frame = new Uint8Array(event.data);
      if (frame[0] === 1 || frame[0] === 2) setText((t) => t + decoder.decode(frame.subarray(1), { stream: true }));
      else if (frame[0] === 4) setState("live");
      else if (frame[0] === 3) setState(`exited ${new DataView(frame.buffer).getInt32(1)}`);
    };
    ws.onclose = () => setState((s) => (s.startsWith("exited") ? s : "detached"));
    return () => ws.close();
  }, [sandboxId, sessionId]);
  return html`<div class="result"><div class="meta">session <code>${sessionId}</code> · ${state}</div><pre class="out" id="session-output">${text}</pre></div>`;
}
