// An agent session through the real OpenComputer TypeScript SDK (sandbox.agent) against a
// corral server whose model is scripted by the Python test (tests/agents/test_typescript_sdk.py):
// start with a prompt, wait for the turn, a follow-up, list, kill. Prints one JSON object
// with what it saw; on failure {"error": ..., "results": <so far>} and exit 1.
//
// Run: OPENCOMPUTER_API_URL=... OPENCOMPUTER_API_KEY=... AGENT_FILE=/tmp/x node --experimental-websocket agent_flow.mjs
import { Sandbox } from "@opencomputer/sdk";

const WAIT_MS = 60_000;
const results = {};

async function until(condition, what) {
  const deadline = Date.now() + WAIT_MS;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

const sandbox = await Sandbox.create({ template: "agent", timeout: 600 });
try {
  const events = [];
  const errors = [];
  let exitCode = null;
  const session = await sandbox.agent.start({
    prompt: "Write the file",
    maxTurns: 5,
    onEvent: (event) => events.push(event),
    onError: (text) => errors.push(text),
    onExit: (code) => {
      exitCode = code;
    },
  });
  results.sessionId = session.sessionId;
  const turns = () => events.filter((e) => e.type === "turn_complete").length;
  await until(() => turns() >= 1, "the first turn");
  results.file = await sandbox.files.read(process.env.AGENT_FILE);
  session.sendPrompt("And a follow-up");
  await until(() => turns() >= 2, "the follow-up's turn");
  results.listed = await sandbox.agent.list();
  await session.kill();
  results.exitCode = await session.done;
  results.types = events.map((e) => e.type);
  results.texts = events
    .filter((e) => e.type === "assistant")
    .flatMap((e) => e.content.filter((b) => b.type === "text").map((b) => b.text));
  results.toolUses = events
    .filter((e) => e.type === "assistant")
    .flatMap((e) => e.content.filter((b) => b.type === "tool_use").map((b) => b.name));
  results.claudeSessionID = events.find((e) => e.type === "ready")?.claudeSessionID;
  results.errors = errors;
  console.log(JSON.stringify(results));
} catch (error) {
  console.log(JSON.stringify({ error: String(error?.stack ?? error), results }));
  process.exitCode = 1;
} finally {
  await sandbox.kill().catch(() => {});
}
