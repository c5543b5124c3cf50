// The console's one client of corral's public API. The credential (an API key or a
// user token) lives in this tab's sessionStorage only: sent as a header (Authorization: Bearer) to the API and
// as an offered WebSocket subprotocol, never in a URL, never in a cookie.

const STORE = "corral.credential";
const RETRIES = 3; // for a request cut off by the network (not for POST: it may have been done)
const signedOutListeners = new Set();

const ACCOUNTS = "corral.accounts";

/** The tab's credentials: the one in use, and every org signed in to in this tab
 * (``accounts``: {credential, orgID, orgName, role, who}), for the org switcher. */
export const session = {
  get credential() {
    return sessionStorage.getItem(STORE);
  },
  get accounts() {
    try {
      return JSON.parse(sessionStorage.getItem(ACCOUNTS) ?? "[]");
    } catch {
      return [];
    }
  },
  save(credential, me) {
    sessionStorage.setItem(STORE, credential);
    if (me) {
      const who = me.email ?? `key ${me.keyID}`;
      const others = this.accounts.filter((a) => !(a.orgID === me.orgID && a.who === who));
      const account = { credential, orgID: me.orgID, orgName: me.orgName, role: me.role, who };
      sessionStorage.setItem(ACCOUNTS, JSON.stringify([...others, account]));
    }
  },
  /** Sign out of the credential in use (the tab's other orgs stay). */
  clear() {
    const gone = this.credential;
    sessionStorage.removeItem(STORE);
    sessionStorage.setItem(ACCOUNTS, JSON.stringify(this.accounts.filter((a) => a.credential !== gone)));
  },
  /** Put the credential in use aside, keeping it for the switcher (to add another org). */
  stepAside() {
    sessionStorage.removeItem(STORE);
  },
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls fn(message) when the API refuses the stored credential (expired, revoked). */
export function onSignedOut(fn) {
  signedOutListeners.add(fn);
  return () => signedOutListeners.delete(fn);
}

export function authHeaders(credential) {
  return { Authorization: `Bearer ${credential}` }; // a key or a token: every surface takes both
}

async function messageOf(response) {
  try {
    const body = await response.json();
    if (typeof body.error === "string") return body.error;
    return body.error?.message ?? body.message ?? `${response.status} ${response.statusText}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

/** fetch() with the credential; ApiError (the API's own message) for any non-2xx. */
export async function call(method, path, { body, raw, credential, headers = {}, signal } = {}) {
  const using = credential ?? session.credential;
  if (!using) throw new ApiError(401, "Sign in first.");
  const sent = { ...authHeaders(using), ...headers };
  let payload = raw;
  if (body !== undefined) {
    sent["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  let response;
  for (let attempt = 0; ; attempt++) {
    try {
      response = await fetch(path, { method, headers: sent, body: payload, signal, credentials: "omit" });
      break;
    } catch (error) {
      if (error.name === "AbortError") throw error;
      // A request the network dropped (a browser on corral's host sees its interfaces
      // change as sandboxes come and go): tried again if doing it twice is harmless.
      if (attempt < RETRIES && method !== "POST") {
        await new Promise((resolve) => setTimeout(resolve, 250 * (attempt + 1)));
        continue;
      }
      throw new ApiError(0, method === "POST"
        ? "The request was cut off before corral answered; check whether it took effect, then try again."
        : "corral cannot be reached: is `corral serve` running?");
    }
  }
  if (!response.ok) {
    const message = await messageOf(response);
    if (response.status === 401 && credential === undefined) {
      session.clear();
      for (const fn of signedOutListeners) fn(`Signed out: ${message}`);
    }
    throw new ApiError(response.status, message);
  }
  return response;
}

async function json(response) {
  return response.status === 204 ? null : response.json();
}

export const api = {
  get: async (path, options) => json(await call("GET", path, options)),
  post: async (path, body = {}) => json(await call("POST", path, { body })),
  put: async (path, body) => json(await call("PUT", path, { body })),
  del: async (path) => json(await call("DELETE", path)),
};

/** Reads a server-sent event stream over fetch (so the credential is a header):
 * onEvent(name, data) for each event; resolves at its end. */
export async function stream(path, { method = "GET", body, signal, onEvent }) {
  const response = await call(method, path, { body, signal, headers: { Accept: "text/event-stream" } });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = ""; // line ends made \n (sse-starlette sends CRLF)
  let carried = ""; // a CR at the end of a chunk, whose LF may come next
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    let text = carried + value;
    carried = text.endsWith("\r") ? "\r" : "";
    if (carried) text = text.slice(0, -1);
    buffer += text.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

/** A WebSocket to an API path, its credential offered as a subprotocol. */
export function socket(path) {
  const url = new URL(path, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(url, ["corral", `corral.credential.${session.credential}`]);
  ws.binaryType = "arraybuffer";
  return ws;
}
