// The real OpenComputer TypeScript SDK (@opencomputer/sdk) against a corral server.
//
// Run: OPENCOMPUTER_API_URL=... OPENCOMPUTER_API_KEY=... node --experimental-websocket flow.mjs
// Prints one JSON object with what each step observed (tests/e2e/test_typescript_sdk.py
// asserts on it); on failure it prints {"error": ..., "results": <steps so far>} and exits 1.
import { createHash, randomBytes } from "node:crypto";
import { Sandbox } from "@opencomputer/sdk";

const WAIT_MS = 30_000;
const results = {};
const decoder = () => {
  const d = new TextDecoder();
  return (bytes) => d.decode(bytes, { stream: true });
};

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function until(condition, what, timeoutMs = WAIT_MS) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

function within(promise, what, timeoutMs = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

const sha256 = (bytes) => createHash("sha256").update(bytes).digest("hex");

async function runSteps(sandbox) {
  results.create = { sandboxId: sandbox.sandboxId };

  // exec.run: run-async + result polling
  results.run = await sandbox.exec.run("echo hello; echo oops >&2; exit 3");
  results.runEnvCwd = await sandbox.exec.run('echo "$GREETING"; pwd', {
    env: { GREETING: "hi there" },
    cwd: "/tmp",
  });

  // exec.start with onStdout and sendStdin
  let streamed = "";
  const text = decoder();
  const cat = await sandbox.exec.start("cat", { onStdout: (b) => (streamed += text(b)) });
  cat.sendStdin("ping\n");
  await until(() => streamed.includes("ping\n"), "cat to echo stdin");
  cat.sendStdin(new TextEncoder().encode("pong\n"));
  await until(() => streamed.includes("pong\n"), "cat to echo more stdin");
  await cat.kill();
  const catExit = await within(cat.done, "the killed cat to end");
  cat.close();
  results.start = { streamed, exitCode: catExit };

  // a late attach: scrollback, then the 0x04 marker, then live output
  const first = await sandbox.exec.start("sh", {
    args: ["-c", "echo early; read x; echo late $x"],
    maxRunAfterDisconnect: 120,
  });
  await sleep(500);
  first.close();
  const events = [];
  const attachText = decoder();
  const late = await sandbox.exec.attach(first.sessionId, {
    onStdout: (b) => events.push(["out", attachText(b)]),
    onScrollbackEnd: () => events.push(["end", ""]),
  });
  await until(() => events.some(([kind]) => kind === "end"), "the scrollback end marker");
  late.sendStdin("now\n");
  const lateExit = await within(late.done, "the attached session to exit");
  const marker = events.findIndex(([kind]) => kind === "end");
  results.attach = {
    beforeMarker: events.slice(0, marker).map(([, data]) => data).join(""),
    afterMarker: events.slice(marker + 1).map(([, data]) => data).join(""),
    exitCode: lateExit,
  };

  // files: 10 MB out and back
  const data = new Uint8Array(randomBytes(10 * 1024 * 1024));
  await sandbox.files.write("/tmp/big-ts.bin", data);
  const back = await sandbox.files.readBytes("/tmp/big-ts.bin");
  const inside = await sandbox.exec.run("sha256sum /tmp/big-ts.bin");
  results.files = {
    sent: sha256(data),
    received: sha256(back),
    receivedBytes: back.length,
    inside: inside.stdout.split(/\s+/)[0],
  };

  // PTY with onOutput + send
  let screen = "";
  const ptyText = decoder();
  const pty = await sandbox.pty.create({ cols: 100, rows: 30, onOutput: (b) => (screen += ptyText(b)) });
  const line = "echo pty-$((40+2)); stty size\n";
  await until(() => {
    try {
      pty.send(line); // throws until the WebSocket is open
      return true;
    } catch {
      return false;
    }
  }, "the PTY WebSocket to open");
  await until(() => /pty-42[\s\S]*30 100/.test(screen), "the PTY to answer");
  pty.send("exit\n");
  pty.close();
  results.pty = { sawAnswer: screen.includes("pty-42"), sawSize: /30 100/.test(screen) };
}

async function main() {
  const sandbox = await Sandbox.create({ template: "base", timeout: 600 });
  try {
    await runSteps(sandbox);
  } finally {
    await sandbox.kill();
    const listing = await fetch(`${process.env.OPENCOMPUTER_API_URL.replace(/\/+$/, "")}/api/sandboxes`, {
      headers: { "X-API-Key": process.env.OPENCOMPUTER_API_KEY },
    });
    const ids = (await listing.json()).map((s) => s.sandboxID);
    results.kill = { stillListed: ids.includes(sandbox.sandboxId) };
  }
}

const watchdog = setTimeout(() => {
  console.log(JSON.stringify({ error: "flow.mjs timed out", results }));
  process.exit(2);
}, 180_000);

try {
  await main();
  console.log(JSON.stringify(results));
  clearTimeout(watchdog);
  process.exit(0);
} catch (err) {
  console.log(JSON.stringify({ error: String(err?.stack ?? err), results }));
  process.exit(1);
}
