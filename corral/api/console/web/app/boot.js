// Loads the console (main.js). A browser on corral's own host may abort loads in
// flight when the host's network interfaces change (Chromium's ERR_NETWORK_CHANGED,
// which sandboxes starting and stopping cause): then the page is loaded again, a few
// times at most, before it says so with a button to try again.
const TRIES = "corral.boot.tries";

import("./main.js")
  .then(() => sessionStorage.removeItem(TRIES))
  .catch((error) => {
    const tries = Number(sessionStorage.getItem(TRIES) ?? 0);
    if (tries < 3) {
      sessionStorage.setItem(TRIES, String(tries + 1));
      setTimeout(() => location.reload(), 300 * (tries + 1));
      return;
    }
    sessionStorage.removeItem(TRIES);
    const root = document.getElementById("root");
    const box = document.createElement("div");
    box.className = "notice error boot";
    const text = document.createElement("p");
    text.textContent = `The console could not load (${error.message}). Is corral serve running?`;
    const again = document.createElement("button");
    again.textContent = "Try again";
    again.className = "primary";
    again.addEventListener("click", () => location.reload());
    box.append(text, again);
    root.replaceChildren(box);
  });
