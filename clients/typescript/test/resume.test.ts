// resumingResults across server restarts on Redis: a graceful restart
// (SIGTERM: the stream ends UNAVAILABLE with a recur-resume-cursor trailer)
// and a crash (SIGKILL: the connection drops, the helper resumes from the
// last cursor). Every result is received once, none is missed: what the
// reader got equals the retained history of the task.
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Code, createRecurClient, resumingResults, type ResumeEvent, type TaskResult } from "../src/node.js";
import {
  Collector,
  freePort,
  redisDeletePrefix,
  redisReachable,
  redisUrl,
  startHttpTarget,
  startServer,
  uniqueId,
  type HttpTarget,
  type RecurServer,
} from "./harness.js";

const skip = (await redisReachable()) ? false : `no Redis at ${redisUrl}`;

describe("resumingResults across restarts (Redis store)", { skip }, () => {
  const prefix = `tsresume${randomBytes(6).toString("hex")}:`;
  let port: number;
  let server: RecurServer | undefined;
  let target: HttpTarget;
  const logs: string[] = [];

  const serve = async () => {
    server = await startServer({
      port,
      args: ["--redis-url", redisUrl, "--key-prefix", prefix, "--lease-secs", "1"],
    });
    return server;
  };

  before(async () => {
    port = await freePort();
    target = await startHttpTarget();
  });

  after(async () => {
    if (server) {
      await server.stop();
      logs.push(server.logs());
    }
    await target?.close();
    await redisDeletePrefix(prefix);
  });

  it("loses and repeats nothing across SIGTERM and SIGKILL restarts", async () => {
    await serve();
    const client = createRecurClient({ baseUrl: `127.0.0.1:${port}` });
    const id = uniqueId("resume");
    await client.registerTask({
      taskId: id,
      spec: {
        schedule: { cadence: { case: "every", value: { seconds: 1n } } },
        action: { kind: { case: "http", value: { url: target.url } } },
      },
    });

    const events: ResumeEvent[] = [];
    const reader = new Collector<TaskResult>(({ signal }) =>
      resumingResults(
        client,
        { taskIds: [id] },
        { signal, initialBackoffMs: 100, maxBackoffMs: 1000, onResume: (e) => events.push(e) },
      ),
    );
    await reader.waitFor("three results", (rs) => rs.length >= 3);

    // Graceful restart: the stream ends UNAVAILABLE with a resume cursor.
    assert.equal(await server!.stop(), 0);
    logs.push(server!.logs());
    await serve();
    const afterTerm = reader.items.length;
    await reader.waitFor("results after the graceful restart", (rs) => rs.length >= afterTerm + 3, 20_000);
    assert.ok(events.length >= 1);
    assert.equal(Code[events[0]!.error.code], "Unavailable");
    assert.equal(events[0]!.fromTrailer, true, "the shutdown sent recur-resume-cursor");

    // Crash: the connection drops without a status.
    const resumesBefore = events.length;
    await server!.kill();
    logs.push(server!.logs());
    await serve();
    const afterKill = reader.items.length;
    await reader.waitFor("results after the crash", (rs) => rs.length >= afterKill + 3, 30_000);
    const drop = events[resumesBefore];
    assert.ok(drop, "the helper resumed after the crash");
    assert.equal(drop.fromTrailer, false);

    // Cancelling the task ends the stream with OK, and the helper with it.
    await client.cancelTask({ taskId: id });
    assert.equal(await reader.finished(15_000), undefined);

    const cursors = reader.items.map((r) => r.cursor);
    assert.equal(new Set(cursors).size, cursors.length, "no result repeated");
    const runs = reader.items.filter((r) => r.run !== 0n).map((r) => r.run);
    assert.equal(new Set(runs).size, runs.length, "no run reported twice");

    const history: string[] = [];
    for await (const r of client.streamResults({ taskIds: [id], historyOnly: true })) {
      history.push(r.cursor);
    }
    assert.deepEqual(cursors, history, "the reader got exactly the task's history, in order");
  });
});
