// A sandbox's files: browse a directory, upload into it, download and delete files.
import { html, useState } from "../html.js";
import { api, call } from "../api.js";
import { bytes, can, ConfirmButton, Empty, Notice, useAction, usePoll } from "../ui.js";

function join(dir, name) {
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

function parent(dir) {
  const up = dir.replace(/\/[^/]*\/?$/, "");
  return up === "" ? "/" : up;
}

export function Files({ me, sandboxId }) {
  const [dir, setDir] = useState("/root");
  const [typed, setTyped] = useState("/root");
  const base = `/api/sandboxes/${sandboxId}/files`;
  const listing = usePoll(() => api.get(`${base}/list?path=${encodeURIComponent(dir)}`), 0, [dir]);
  const action = useAction();
  const go = (path) => {
    setDir(path);
    setTyped(path);
  };
  const upload = (event) => {
    const files = [...event.target.files];
    event.target.value = "";
    action.run(async () => {
      for (const file of files) {
        await call("PUT", `${base}?path=${encodeURIComponent(join(dir, file.name))}`, { raw: file });
      }
      listing.reload();
    });
  };
  const download = (entry) =>
    action.run(async () => {
      const response = await call("GET", `${base}?path=${encodeURIComponent(entry.path)}`);
      const link = document.createElement("a");
      link.href = URL.createObjectURL(await response.blob());
      link.download = entry.name;
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    });
  const remove = (entry) =>
    action.run(async () => {
      await api.del(`${base}?path=${encodeURIComponent(entry.path)}`);
      listing.reload();
    });
  const entries = [...(listing.data ?? [])].sort((a, b) => b.isDir - a.isDir || a.name.localeCompare(b.name));
  return html`
    <div>
      <form class="bar" onSubmit=${(e) => (e.preventDefault(), go(typed || "/"))}>
        <button type="button" onClick=${() => go(parent(dir))} disabled=${dir === "/"} title="Up one directory">↑ Up</button>
        <input class="grow" aria-label="Directory" id="dir" value=${typed} onInput=${(e) => setTyped(e.target.value)} />
        <button type="submit">Open</button>
        ${can(me, "sandbox:write") && html`<label class="button primary">Upload<input type="file" id="upload" multiple hidden onChange=${upload} /></label>`}
      </form>
      <${Notice} error=${listing.error} />
      <${Notice} error=${action.error} />
      ${action.busy && html`<${Notice} kind="info">Working…</${Notice}>`}
      ${listing.data && entries.length === 0
        ? html`<${Empty}>${dir} is empty.${can(me, "sandbox:write") ? " Upload a file to put it here." : ""}</${Empty}>`
        : html`<table class="list" id="files">
            <thead><tr><th>Name</th><th>Size</th><th></th></tr></thead>
            <tbody>${entries.map((entry) => html`
              <tr key=${entry.path}>
                <td>${entry.isDir
                  ? html`<a href="#" onClick=${(e) => (e.preventDefault(), go(entry.path))}>${entry.name}/</a>`
                  : entry.name}</td>
                <td>${entry.isDir ? "" : bytes(entry.size)}</td>
                <td class="actions">
                  ${!entry.isDir && html`<button type="button" onClick=${() => download(entry)}>Download</button>`}
                  ${can(me, "sandbox:write") && html`<${ConfirmButton} label="Delete" onConfirm=${() => remove(entry)} />`}
                </td>
              </tr>`)}
            </tbody>
          </table>`}
    </div>`;
}
