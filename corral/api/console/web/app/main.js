// The console's shell: sign-in, the navigation, and the page of the location's hash.
import { html, render, useEffect, useState } from "./html.js";
import { api, ApiError, onSignedOut, session } from "./api.js";
import { can } from "./ui.js";
import { SignIn } from "./pages/signin.js";
import { Sandboxes } from "./pages/sandboxes.js";
import { SandboxPage } from "./pages/sandbox.js";
import { Keys } from "./pages/keys.js";
import { Audit } from "./pages/audit.js";
import { Health } from "./pages/health.js";
import { Sessions, SessionPage } from "./pages/sessions.js";
import { Templates } from "./pages/templates.js";
import { Users } from "./pages/users.js";
import { Runs, RunPage } from "./pages/runs.js";

const PAGES = [
  { path: /^sandboxes\/([\w-]+)$/, page: SandboxPage },
  { path: /^sandboxes$/, page: Sandboxes, nav: "Sandboxes" },
  { path: /^sessions\/([\w-]+)$/, page: SessionPage },
  { path: /^sessions$/, page: Sessions, nav: "Sessions" },
  { path: /^runs\/([\w-]+)$/, page: RunPage },
  { path: /^runs$/, page: Runs, nav: "Agent runs" },
  { path: /^templates$/, page: Templates, nav: "Templates" },
  { path: /^keys$/, page: Keys, nav: "API keys", scope: "keys:manage" },
  { path: /^users$/, page: Users, nav: "Users" },
  { path: /^audit$/, page: Audit, nav: "Audit", scope: "audit:read" },
  { path: /^health$/, page: Health, nav: "Health" },
];

function switchTo(account) {
  session.save(account.credential);
  location.hash = "#/sandboxes";
  location.reload();
}

function currentPath() {
  return location.hash.replace(/^#\/?/, "") || "sandboxes";
}

function App() {
  const [me, setMe] = useState(null);
  const [checking, setChecking] = useState(Boolean(session.credential));
  const [notice, setNotice] = useState(null);
  const [path, setPath] = useState(currentPath());

  useEffect(() => {
    const follow = () => setPath(currentPath());
    addEventListener("hashchange", follow);
    return () => removeEventListener("hashchange", follow);
  }, []);
  useEffect(
    () =>
      onSignedOut((message) => {
        setMe(null);
        setNotice(message);
      }),
    [],
  );
  useEffect(() => {
    if (!session.credential) return;
    api
      .get("/api/me")
      .then((found) => {
        session.save(session.credential, found);
        setMe(found);
      })
      .catch((error) => setNotice(error instanceof ApiError ? error.message : String(error)))
      .finally(() => setChecking(false));
  }, []);

  if (checking) return html`<div class="loading">Loading…</div>`;
  if (!me) {
    const signedIn = (found) => {
      setNotice(null);
      setMe(found);
    };
    const back = session.accounts[session.accounts.length - 1];
    const toBack = back ? { orgName: back.orgName, go: () => switchTo(back) } : null;
    return html`<${SignIn} notice=${notice} onSignedIn=${signedIn} back=${toBack} />`;
  }
  const signOut = () => {
    session.clear();
    const next = session.accounts[0];
    if (next) return switchTo(next);
    setMe(null);
    setNotice("Signed out.");
  };
  const switchOrg = (event) => {
    const choice = event.target.value;
    if (choice === "+") {
      session.stepAside();
      setNotice("Sign in to another org; the orgs you are signed in to stay in the switcher.");
      setMe(null);
      return;
    }
    const account = session.accounts[Number(choice)];
    if (account) switchTo(account);
  };
  const accounts = session.accounts;
  const current = accounts.findIndex((a) => a.credential === session.credential);
  let found = null;
  let args = [];
  for (const entry of PAGES) {
    const match = entry.path.exec(path);
    if (match) {
      found = entry;
      args = match.slice(1);
      break;
    }
  }
  const Page = found?.page;
  return html`
    <header class="top">
      <a class="brand" href="#/sandboxes">corral</a>
      <nav aria-label="Main">
        ${PAGES.filter((p) => p.nav).map((p) => {
          const base = p.path.source.slice(1, -1);
          const locked = p.scope && !can(me, p.scope);
          return html`<a href=${"#/" + base} class=${path.split("/")[0] === base ? "active" : ""}
            title=${locked ? `your role lacks ${p.scope}` : ""}>${p.nav}</a>`;
        })}
      </nav>
      <div class="who">
        <select id="org-switch" aria-label="Org" value=${String(current)} onChange=${switchOrg} title=${"org " + me.orgID}>
          ${accounts.map((a, i) => html`<option value=${String(i)}>${a.orgName} · ${a.who}</option>`)}
          ${current < 0 && html`<option value="-1">${me.orgName}</option>`}
          <option value="+">Sign in to another org…</option>
        </select>
        <span class="role role-${me.role}" id="role">${me.role}</span>
        <button type="button" class="quiet" id="sign-out" onClick=${signOut}>Sign out</button>
      </div>
    </header>
    <main id="page">
      ${Page
        ? html`<${Page} me=${me} args=${args} key=${path} />`
        : html`<div class="empty">No such page. <a href="#/sandboxes">Go to the sandboxes</a>.</div>`}
    </main>`;
}

render(html`<${App} />`, document.getElementById("root"));
