// The ten-line quickstart (examples/quickstart.ts, built to
// dist/examples/quickstart.js) runs as written against a test server, and
// the README's TypeScript example is that file.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, existsSync } from "node:fs";
import path from "node:path";
import { promisify } from "node:util";
import { TaskState } from "../src/node.js";
import { packageDir, repoRoot, startHttpTarget, startServer, type HttpTarget, type RecurServer } from "./harness.js";

const run = promisify(execFile);
const sourcePath = path.join(packageDir, "examples/quickstart.ts");

describe("examples/quickstart.ts", () => {
  let server: RecurServer;
  let target: HttpTarget;

  before(async () => {
    server = await startServer();
    target = await startHttpTarget();
  });

  after(async () => {
    await target?.close();
    await server?.stop();
  });

  it("is ten lines", () => {
    const lines = readFileSync(sourcePath, "utf8").trimEnd().split("\n");
    assert.equal(lines.length, 10);
  });

  it("runs as written (server from RECUR_SERVER)", async () => {
    const { stdout } = await run(process.execPath, [path.join(packageDir, "dist/examples/quickstart.js")], {
      env: { ...process.env, RECUR_SERVER: `127.0.0.1:${server.port}`, RECUR_TARGET: target.url },
      timeout: 30_000,
    });
    const lines = stdout.trim().split("\n");
    assert.equal(lines.length, 2, stdout);
    const registered = /^registered (\S+): every 2s$/.exec(lines[0]!);
    assert.ok(registered, lines[0]);
    assert.equal(lines[1], "run 1: SUCCEEDED");
    const task = await server.client.getTask({ taskId: registered[1]! });
    assert.equal(task.state, TaskState.CANCELLED);
    assert.ok(target.requests.length >= 1);
  });

  const exampleIn = (readme: string) => {
    const text = existsSync(readme) ? readFileSync(readme, "utf8") : "";
    const blocks = [...text.matchAll(/```(?:ts|typescript)\n([\s\S]*?)```/g)].map((m) => m[1]!);
    return blocks.find((b) => b.includes("createRecurClient") && b.includes("registerTask"));
  };

  it("is the example in this package's README", () => {
    const example = exampleIn(path.join(packageDir, "README.md"));
    assert.equal(example?.trim(), readFileSync(sourcePath, "utf8").trim());
  });

  it("is the TypeScript example in the repository's README", (t) => {
    const example = exampleIn(path.join(repoRoot, "README.md"));
    if (example === undefined) {
      t.skip("README.md has no TypeScript example using createRecurClient yet");
      return;
    }
    assert.equal(example.trim(), readFileSync(sourcePath, "utf8").trim());
  });
});
