// A terminal in the browser: xterm.js over the PTY WebSocket (raw bytes both ways),
// resized with the window; a dropped connection says so and offers to reconnect.
import { html, useEffect, useRef, useState } from "../html.js";
import { Terminal as XTerm } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import { api, socket } from "../api.js";
import { Notice } from "../ui.js";

export function Terminal({ sandboxId }) {
  const box = useRef(null);
  const [state, setState] = useState("connecting");
  const [error, setError] = useState(null);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const term = new XTerm({ cursorBlink: true, fontSize: 14, convertEol: false, theme: { background: "#000000" } });
    const fit = new FitAddon();
    term.loadAddon(fit);
    term.open(box.current);
    fit.fit();
    let ws = null;
    let ptyId = null;
    let closed = false;
    const encoder = new TextEncoder();
    // data-pty: the size the PTY was last given ("COLSxROWS"), once corral took it
    const sized = (cols, rows) => {
      if (box.current) box.current.dataset.pty = `${cols}x${rows}`;
    };
    const resize = () => {
      fit.fit();
      if (ptyId && ws?.readyState === WebSocket.OPEN) {
        const { cols, rows } = term;
        api.post(`/api/sandboxes/${sandboxId}/pty/${ptyId}/resize`, { cols, rows }).then(() => sized(cols, rows), () => {});
      }
    };
    const observer = new ResizeObserver(resize);
    observer.observe(box.current);
    (async () => {
      try {
        const pty = await api.post(`/api/sandboxes/${sandboxId}/pty`, { cols: term.cols, rows: term.rows });
        if (closed) return;
        ptyId = pty.sessionID;
        sized(term.cols, term.rows);
        ws = socket(`/api/sandboxes/${sandboxId}/pty/${ptyId}`);
        ws.onopen = () => {
          setState("open");
          term.focus();
        };
        ws.onmessage = (event) => term.write(new Uint8Array(event.data));
        ws.onclose = (event) => {
          if (closed) return;
          setState("closed");
          setError(event.code === 1000 ? "The shell exited." : "The terminal's connection dropped.");
        };
        term.onData((data) => ws.readyState === WebSocket.OPEN && ws.send(encoder.encode(data)));
      } catch (e) {
        setState("closed");
        setError(e.message);
      }
    })();
    return () => {
      closed = true;
      observer.disconnect();
      ws?.close();
      if (ptyId) api.del(`/api/sandboxes/${sandboxId}/pty/${ptyId}`).catch(() => {});
      term.dispose();
    };
  }, [sandboxId, attempt]);

  const reconnect = () => {
    setError(null);
    setState("connecting");
    setAttempt(attempt + 1);
  };
  return html`
    <div class="terminal-wrap">
      <div class="bar">
        <span class="state state-${state}" id="terminal-state">${state === "open" ? "connected" : state}</span>
        ${state === "closed" && html`<button type="button" class="primary" onClick=${reconnect} id="reconnect">Reconnect</button>`}
      </div>
      ${error && html`<${Notice} kind="warn">${error}</${Notice}>`}
      <div class="terminal" id="terminal" ref=${box}></div>
    </div>`;
}
