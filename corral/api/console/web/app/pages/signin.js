// Sign-in: an API key, or a user's email and a token `corral users token EMAIL` mints.
import { html, useState } from "../html.js";
import { api, ApiError, session } from "../api.js";
import { Notice } from "../ui.js";

export function SignIn({ notice, onSignedIn, back }) {
  const [mode, setMode] = useState("key");
  const [error, setError] = useState(null);
  const [busy, setBusy] = useState(false);

  const submit = async (event) => {
    event.preventDefault();
    setError(null);
    const field = (name) => (new FormData(event.target).get(name) ?? "").trim();
    const credential = field(mode === "key" ? "key" : "token");
    const email = field("email");
    if (!credential) return setError(mode === "key" ? "Paste an API key (ek_…)." : "Paste the user's token.");
    if (mode === "key" && !credential.startsWith("ek_")) return setError("An API key starts with ek_.");
    setBusy(true);
    try {
      const me = await api.get("/api/me", { credential });
      if (mode === "user" && me.email?.toLowerCase() !== email.trim().toLowerCase()) {
        return setError(`That token is not ${email || "this email"}'s${me.email ? ` (it is ${me.email}'s)` : ""}.`);
      }
      session.save(credential, me);
      onSignedIn(me);
    } catch (e) {
      setError(
        e instanceof ApiError && e.status === 401
          ? `corral refused it: ${e.message}`
          : e.message ?? String(e),
      );
    } finally {
      setBusy(false);
    }
  };

  return html`
    <div class="signin">
      <form class="card" onSubmit=${submit} aria-labelledby="signin-title">
        <h1 id="signin-title">Sign in to corral</h1>
        ${notice && html`<${Notice} kind="info">${notice}</${Notice}>`}
        <div class="tabs" role="tablist">
          <button type="button" role="tab" aria-selected=${mode === "key"} class=${mode === "key" ? "active" : ""} onClick=${() => setMode("key")}>API key</button>
          <button type="button" role="tab" aria-selected=${mode === "user"} class=${mode === "user" ? "active" : ""} onClick=${() => setMode("user")}>User token</button>
        </div>
        ${mode === "key"
          ? html`<label>API key<input id="key" name="key" type="password" autocomplete="off" placeholder="ek_…" autofocus /></label>
              <p class="hint">The admin key is printed once when corral first starts (and kept at ${"<data dir>"}/admin-key); <code>corral keys create</code> makes more.</p>`
          : html`<label>Email<input id="email" name="email" type="email" autocomplete="username" /></label>
              <label>Token<input id="token" name="token" type="password" autocomplete="off" /></label>
              <p class="hint">Mint one with <code>corral users token EMAIL</code>; it expires, and the console then asks again.</p>`}
        <${Notice} error=${error} />
        <button type="submit" class="primary" id="signin" disabled=${busy}>${busy ? "Checking…" : "Sign in"}</button>
        <p class="hint">Kept in this tab only (session storage), sent as a header; closing the tab signs you out.</p>
        ${back && html`<button type="button" class="quiet" onClick=${back.go}>Back to ${back.orgName}</button>`}
      </form>
    </div>`;
}
