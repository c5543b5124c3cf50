// Small shared pieces: formatting, polling, notices, buttons that ask twice.
import { html, useEffect, useRef, useState } from "./html.js";

export function can(me, scope) {
  return me.scopes.includes(scope);
}

export function age(iso) {
  if (!iso) return "—";
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d`;
}

export function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / (1 << 20)).toFixed(1)} MiB`;
}

/** Runs load() now and every `ms` after each run ends, until unmounted or deps change
 * (or the API answers 401 or 404: asking again would not change that).
 * Returns {data, error, reload}; an error is kept (shown once), not thrown again. */
export function usePoll(load, ms, deps = []) {
  const [state, setState] = useState({ data: null, error: null });
  const tick = useRef(() => {});
  useEffect(() => {
    let stopped = false;
    let timer;
    const run = async () => {
      clearTimeout(timer);
      try {
        const data = await load();
        if (!stopped) setState({ data, error: null });
      } catch (error) {
        if (!stopped) setState((s) => ({ data: s.data, error }));
        // signed out (the app shows the sign-in page) or gone (the page says so): no more
        if (error.status === 401 || error.status === 404) return;
      }
      if (!stopped && ms) timer = setTimeout(run, ms);
    };
    tick.current = run;
    run();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, deps);
  return { ...state, reload: () => tick.current() };
}

export function Notice({ error, kind = "error", children }) {
  const text = error ? error.message ?? String(error) : children;
  if (!text) return null;
  return html`<div class="notice ${kind}" role=${kind === "error" ? "alert" : "status"}>${text}</div>`;
}

export function Empty({ children }) {
  return html`<div class="empty">${children}</div>`;
}

/** A button that asks "sure?" on the first press and acts on the second. */
export function ConfirmButton({ label, confirm = `${label}: sure?`, onConfirm, class: cls = "danger", disabled }) {
  const [asking, setAsking] = useState(false);
  useEffect(() => {
    if (!asking) return;
    const timer = setTimeout(() => setAsking(false), 4000);
    return () => clearTimeout(timer);
  }, [asking]);
  const press = () => {
    if (asking) {
      setAsking(false);
      onConfirm();
    } else setAsking(true);
  };
  return html`<button type="button" class=${cls} disabled=${disabled} onClick=${press}>${asking ? confirm : label}</button>`;
}

/** Runs an action, keeps its error for the page to show, and says when it is busy. */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(null);
  const run = async (action) => {
    setBusy(true);
    setError(null);
    try {
      return await action();
    } catch (e) {
      setError(e);
      return undefined;
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, run, setError };
}

export function Status({ status }) {
  return html`<span class="status status-${status}">${status}</span>`;
}
