// The org's users and their roles: listed for every member; added, given another role
// and removed by owners and admins. A user signs in with a token the node mints.
import { html, useState } from "../html.js";
import { api } from "../api.js";
import { can, ConfirmButton, Empty, Notice, useAction, usePoll, when } from "../ui.js";

const ROLES = ["viewer", "developer", "admin", "owner"];

export function Users({ me }) {
  const users = usePoll(() => api.get("/api/users"), 5000);
  const [form, setForm] = useState({ email: "", name: "", role: "developer" });
  const action = useAction();
  const manage = can(me, "keys:manage");
  const rank = ROLES.indexOf(me.role);
  const act = (fn) => action.run(async () => {
    await fn();
    users.reload();
  });
  const add = (event) => {
    event.preventDefault();
    act(async () => {
      await api.post("/api/users", form);
      setForm({ ...form, email: "", name: "" });
    });
  };
  const list = users.data ?? [];
  return html`
    <section>
      <div class="title"><h1>Users and roles</h1></div>
      <p class="hint">A user signs in with their email and a token minted on the node: <code>corral users token EMAIL</code>. Roles: viewer (reads), developer (uses sandboxes and sessions), admin (also keys, audit, users), owner (everything).</p>
      ${manage && html`<form class="bar" onSubmit=${add} aria-label="Add a user">
        <label>Email<input id="user-email" type="email" required value=${form.email} onInput=${(e) => setForm({ ...form, email: e.target.value })} /></label>
        <label>Name<input id="user-name" value=${form.name} onInput=${(e) => setForm({ ...form, name: e.target.value })} /></label>
        <label>Role<select id="user-role" value=${form.role} onChange=${(e) => setForm({ ...form, role: e.target.value })}>
          ${ROLES.filter((_, i) => i <= rank).map((r) => html`<option value=${r}>${r}</option>`)}</select></label>
        <button type="submit" class="primary" id="add-user" disabled=${action.busy}>Add user</button>
      </form>`}
      <${Notice} error=${users.error} />
      <${Notice} error=${action.error} />
      ${users.data && list.length === 0
        ? html`<${Empty}>No users in this org yet: it is used with API keys only.${manage ? " Add a user above." : ""}</${Empty}>`
        : html`<table class="list" id="users"><thead><tr><th>Email</th><th>Name</th><th>Role</th><th>Added</th><th></th></tr></thead>
            <tbody>${list.map((u) => {
              const mine = u.id === me.userID;
              const editable = manage && !mine && ROLES.indexOf(u.role) <= rank;
              return html`<tr key=${u.id} data-id=${u.id}>
                <td>${u.email}${mine ? " (you)" : ""}</td><td>${u.name || "—"}</td>
                <td>${editable
                  ? html`<select aria-label=${"role of " + u.email} value=${u.role} disabled=${action.busy}
                      onChange=${(e) => act(() => api.put(`/api/users/${u.id}`, { role: e.target.value }))}>
                      ${ROLES.filter((_, i) => i <= rank).map((r) => html`<option value=${r}>${r}</option>`)}</select>`
                  : u.role}</td>
                <td>${when(u.createdAt)}</td>
                <td class="actions">${editable && html`<${ConfirmButton} label="Remove" onConfirm=${() => act(() => api.del(`/api/users/${u.id}`))} />`}</td>
              </tr>`;
            })}</tbody></table>`}
    </section>`;
}
