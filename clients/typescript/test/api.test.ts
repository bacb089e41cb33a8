// Every RPC of recur.v1.TaskService through the generated client and the
// connect-node gRPC transport, against the built binary (memory store).
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  Outcome,
  Scope,
  TaskEventType,
  TaskState,
  Trigger,
  errorDetails,
  timestampMs,
  type RecurClient,
  type TaskEvent,
  type TaskResult,
  type TaskSpec,
  type TaskSpecSchema,
} from "../src/node.js";
import { Collector, startHttpTarget, startServer, uniqueId, type HttpTarget, type RecurServer } from "./harness.js";

type SpecInit = Exclude<MessageInitShape<typeof TaskSpecSchema>, TaskSpec>;

function httpSpec(url: string, everySeconds: bigint, extra: Partial<SpecInit> = {}): SpecInit {
  return {
    schedule: { cadence: { case: "every", value: { seconds: everySeconds } } },
    action: { kind: { case: "http", value: { url } } },
    ...extra,
  };
}

/** An assert.rejects matcher for a ConnectError with this code. */
function withCode(code: Code) {
  return (err: unknown) => {
    assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${String(err)}`);
    assert.equal(Code[err.code], Code[code], err.message);
    return true;
  };
}

async function rejection(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof ConnectError, `expected a ConnectError, got ${String(e)}`);
    return e;
  }
  assert.fail("expected the call to fail");
}

describe("TaskService over gRPC (connect-node)", () => {
  let server: RecurServer;
  let target: HttpTarget;
  let c: RecurClient;

  before(async () => {
    server = await startServer();
    target = await startHttpTarget();
    c = server.client;
  });

  after(async () => {
    await target?.close();
    const code = await server?.stop();
    assert.equal(code, 0, `recur serve exited with ${code}:\n${server?.logs()}`);
  });

  it("WhoAmI: anonymous with every scope on loopback", async () => {
    const me = await c.whoAmI({});
    assert.equal(me.name, "anonymous");
    assert.deepEqual(
      [...me.scopes].sort(),
      [Scope.READ, Scope.WRITE, Scope.ADMIN].sort(),
    );
    assert.equal(me.namespace, "");
  });

  it("RegisterTask: validate_only stores nothing and fingerprints like the real registration", async () => {
    const id = uniqueId("register");
    const spec = httpSpec(target.url, 3600n, { labels: { suite: "ts" } });
    const dry = await c.registerTask({ taskId: id, spec, validateOnly: true });
    assert.equal(dry.taskId, id);
    assert.match(dry.specFingerprint, /^[0-9a-f]{64}$/);
    await assert.rejects(c.getTask({ taskId: id }), withCode(Code.NotFound));

    const task = await c.registerTask({ taskId: id, spec });
    assert.equal(task.specFingerprint, dry.specFingerprint);
    assert.equal(task.state, TaskState.ACTIVE);
    assert.equal(task.scheduleDescription, "every 1h");
    assert.equal(task.spec?.timeout?.seconds, 30n, "defaults are filled in");
    assert.ok(task.nextRunAt && task.createdAt);

    // Idempotent: the same spec returns the same task.
    const again = await c.registerTask({ taskId: id, spec });
    assert.equal(again.specFingerprint, task.specFingerprint);
    assert.equal(timestampMs(again.createdAt!), timestampMs(task.createdAt!));
    // A different spec under the same id is ALREADY_EXISTS.
    await assert.rejects(
      c.registerTask({ taskId: id, spec: httpSpec(target.url, 7200n) }),
      withCode(Code.AlreadyExists),
    );
    // A generated id, made idempotent by request_id.
    const requestId = uniqueId("request");
    const first = await c.registerTask({ requestId, spec });
    const retry = await c.registerTask({ requestId, spec });
    assert.notEqual(first.taskId, "");
    assert.equal(retry.taskId, first.taskId);
    // Another spec's fingerprint differs.
    const other = await c.registerTask({ taskId: id, spec: httpSpec(target.url, 60n), validateOnly: true }).catch((e) => e);
    assert.ok(other instanceof ConnectError && other.code === Code.AlreadyExists);
    const otherDry = await c.registerTask({ taskId: uniqueId("other"), spec: httpSpec(target.url, 60n), validateOnly: true });
    assert.notEqual(otherDry.specFingerprint, task.specFingerprint);
  });

  it("GetTask: next_run_count upcoming fire times, on the grid", async () => {
    const id = uniqueId("get");
    await c.registerTask({ taskId: id, spec: httpSpec(target.url, 3600n) });
    const task = await c.getTask({ taskId: id, nextRunCount: 3 });
    assert.equal(task.taskId, id);
    assert.equal(task.nextRunTimes.length, 3);
    const times = task.nextRunTimes.map(timestampMs);
    assert.equal(times[0], timestampMs(task.nextRunAt!));
    assert.equal(times[1]! - times[0]!, 3_600_000);
    assert.equal(times[2]! - times[1]!, 3_600_000);
    const plain = await c.getTask({ taskId: id });
    assert.equal(plain.nextRunTimes.length, 0);
    await assert.rejects(c.getTask({ taskId: uniqueId("missing") }), withCode(Code.NotFound));
  });

  it("ListTasks: label filter, pages in id order, state filter", async () => {
    const suite = uniqueId("list");
    const ids = [`${suite}-a`, `${suite}-b`, `${suite}-c`];
    for (const id of ids) {
      await c.registerTask({ taskId: id, spec: httpSpec(target.url, 3600n, { labels: { suite } }) });
    }
    const page1 = await c.listTasks({ labels: { suite }, pageSize: 2, nextRunCount: 2 });
    assert.deepEqual(page1.tasks.map((t) => t.taskId), ids.slice(0, 2));
    assert.equal(page1.tasks[0]!.nextRunTimes.length, 2);
    assert.notEqual(page1.nextPageToken, "");
    const page2 = await c.listTasks({ labels: { suite }, pageSize: 2, pageToken: page1.nextPageToken });
    assert.deepEqual(page2.tasks.map((t) => t.taskId), ids.slice(2));
    assert.equal(page2.nextPageToken, "");

    await c.pauseTask({ taskId: ids[1]!, reason: "list test" });
    const paused = await c.listTasks({ labels: { suite }, state: TaskState.PAUSED });
    assert.deepEqual(paused.tasks.map((t) => t.taskId), [ids[1]]);
  });

  it("UpdateTask: a masked change keeps secret headers; validate_only changes nothing", async () => {
    const id = uniqueId("update");
    const spec = httpSpec(target.url, 3600n);
    spec.action = { kind: { case: "http", value: { url: target.url, headers: { "x-secret": "s3cret" } } } };
    const task = await c.registerTask({ taskId: id, spec });
    const readBack = task.spec?.action?.kind;
    assert.equal(readBack?.case, "http");
    assert.equal(readBack.value.headers["x-secret"], "<redacted>");

    const every2h = { schedule: { cadence: { case: "every" as const, value: { seconds: 7200n } } } };
    const dry = await c.updateTask({ taskId: id, spec: every2h, updateMask: { paths: ["schedule.every"] }, validateOnly: true });
    assert.equal(dry.scheduleDescription, "every 2h");
    assert.equal((await c.getTask({ taskId: id })).scheduleDescription, "every 1h");

    const updated = await c.updateTask({ taskId: id, spec: every2h, updateMask: { paths: ["schedule.every"] } });
    assert.equal(updated.scheduleDescription, "every 2h");
    assert.equal(updated.specFingerprint, dry.specFingerprint);
    assert.notEqual(updated.specFingerprint, task.specFingerprint);

    // The stored header value survived: a run sends it.
    const results = new Collector<TaskResult>(({ signal, onHeader }) =>
      c.streamResults({ taskIds: [id] }, { signal, onHeader }),
    );
    await results.opened;
    const { run } = await c.triggerTask({ taskId: id });
    await results.waitFor("the triggered run", (rs) => rs.some((r) => r.run === run));
    await results.close();
    const sent = target.requests.find((r) => r.idempotencyKey === results.items.find((x) => x.run === run)?.occurrenceId);
    assert.equal(sent?.secret, "s3cret");

    // Writing back what was read (with "<redacted>") is refused, naming the header.
    const err = await rejection(c.updateTask({ taskId: id, spec: updated.spec }));
    assert.equal(err.code, Code.InvalidArgument);
    assert.deepEqual(errorDetails(err).fieldViolations.map((v) => v.field), ['spec.action.http.headers["x-secret"]']);
    // An unknown mask path names itself.
    const bad = await rejection(c.updateTask({ taskId: id, spec: every2h, updateMask: { paths: ["nope"] } }));
    assert.equal(bad.code, Code.InvalidArgument);
    assert.deepEqual(errorDetails(bad).fieldViolations.map((v) => v.field), ["update_mask.paths[0]"]);
  });

  it("PauseTask and ResumeTask", async () => {
    const id = uniqueId("pause");
    await c.registerTask({ taskId: id, spec: httpSpec(target.url, 3600n) });
    const paused = await c.pauseTask({ taskId: id, reason: "deploy" });
    assert.equal(paused.state, TaskState.PAUSED);
    assert.equal(paused.pauseReason, "deploy");
    assert.equal(paused.nextRunAt, undefined);
    const pausedAgain = await c.pauseTask({ taskId: id, reason: "deploy" });
    assert.equal(pausedAgain.state, TaskState.PAUSED, "idempotent");
    const resumed = await c.resumeTask({ taskId: id });
    assert.equal(resumed.state, TaskState.ACTIVE);
    assert.ok(resumed.nextRunAt);
    assert.equal((await c.resumeTask({ taskId: id })).state, TaskState.ACTIVE, "idempotent");
  });

  it("TriggerTask and StreamResults: live, history_only, after_cursor", async () => {
    const id = uniqueId("trigger");
    await c.registerTask({ taskId: id, spec: httpSpec(target.url, 3600n) });
    await c.pauseTask({ taskId: id });
    const live = new Collector<TaskResult>(({ signal, onHeader }) =>
      c.streamResults({ taskIds: [id] }, { signal, onHeader }),
    );
    await live.opened;
    const first = await c.triggerTask({ taskId: id }); // works while paused
    // Overlap SKIP refuses a trigger while a run is in flight: wait for it.
    await live.waitFor("the first run", (rs) => rs.length >= 1);
    const second = await c.triggerTask({ taskId: id });
    assert.equal(second.run, first.run + 1n);
    await live.waitFor("both runs", (rs) => rs.length >= 2);
    await live.close();
    const [r1, r2] = live.items as [TaskResult, TaskResult];
    assert.deepEqual([r1.run, r2.run], [first.run, second.run]);
    for (const r of [r1, r2]) {
      assert.equal(r.taskId, id);
      assert.equal(Outcome[r.outcome], "SUCCEEDED", r.error);
      assert.equal(r.trigger, Trigger.MANUAL);
      assert.equal(r.httpStatus, 200);
      assert.equal(new TextDecoder().decode(r.output), '{"ok":true}');
      assert.match(r.occurrenceId, new RegExp(`^${id.replace(/[.]/g, "\\.")}@.+~[0-9a-f]{12}$`));
      assert.ok(target.requests.some((q) => q.idempotencyKey === r.occurrenceId), "Idempotency-Key sent");
      assert.notEqual(r.cursor, "");
      assert.notEqual(r.executor, "", "TaskResult.executor names the node");
      assert.equal(r.attempts, 1);
    }

    const history = new Collector<TaskResult>(({ signal }) => c.streamResults({ taskIds: [id], historyOnly: true }, { signal }));
    assert.equal(await history.finished(), undefined);
    assert.deepEqual(history.items.map((r) => r.cursor), [r1.cursor, r2.cursor]);

    const after = new Collector<TaskResult>(({ signal }) =>
      c.streamResults({ taskIds: [id], historyOnly: true, afterCursor: r1.cursor }, { signal }),
    );
    assert.equal(await after.finished(), undefined);
    assert.deepEqual(after.items.map((r) => r.cursor), [r2.cursor]);

    const task = await c.getTask({ taskId: id });
    assert.equal(task.runCount, 2n);
    assert.equal(task.lastResult?.cursor, r2.cursor);
    assert.deepEqual(task.recentRuns.map((s) => s.run), [r1.run, r2.run]);
    assert.ok(task.lastSuccessAt);

    await assert.rejects(
      (async () => {
        for await (const _ of c.streamResults({ taskIds: [uniqueId("missing")] })) {
          /* nothing */
        }
      })(),
      withCode(Code.NotFound),
    );
  });

  it("CancelTask and DeleteTask: a live task is FAILED_PRECONDITION with a PreconditionFailure", async () => {
    const id = uniqueId("delete");
    await c.registerTask({ taskId: id, spec: httpSpec(target.url, 3600n) });
    const err = await rejection(c.deleteTask({ taskId: id }));
    assert.equal(err.code, Code.FailedPrecondition);
    const details = errorDetails(err);
    assert.equal(details.preconditionViolations.length, 1);
    assert.equal(details.preconditionViolations[0]!.subject, `task/${id}`);
    assert.equal(details.preconditionViolations[0]!.type, "STATE");

    const cancelled = await c.cancelTask({ taskId: id, reason: "done" });
    assert.equal(cancelled.state, TaskState.CANCELLED);
    assert.equal(cancelled.pauseReason, "done");
    // A stream naming only ended tasks ends with OK.
    const ended = new Collector<TaskResult>(({ signal }) => c.streamResults({ taskIds: [id] }, { signal }));
    assert.equal(await ended.finished(5000), undefined);

    await c.deleteTask({ taskId: id });
    await assert.rejects(c.getTask({ taskId: id }), withCode(Code.NotFound));
  });

  it("INVALID_ARGUMENT carries a BadRequest naming the field", async () => {
    const err = await rejection(
      c.registerTask({
        taskId: uniqueId("invalid"),
        spec: httpSpec(target.url, 0n, { schedule: { cadence: { case: "every", value: { nanos: 1000 } } } }),
      }),
    );
    assert.equal(err.code, Code.InvalidArgument);
    const details = errorDetails(err);
    assert.deepEqual(details.fieldViolations.map((v) => v.field), ["spec.schedule.every"]);
    assert.match(details.fieldViolations[0]!.description, /at least/);
    assert.equal(details.retryDelayMs, undefined);

    const noAction = await rejection(
      c.registerTask({ taskId: uniqueId("invalid"), spec: { schedule: { cadence: { case: "every", value: { seconds: 60n } } } } }),
    );
    assert.deepEqual(errorDetails(noAction).fieldViolations.map((v) => v.field), ["spec.action"]);
  });

  it("WatchTasks: EXISTING ... SYNCED, then CREATED", async () => {
    const existing = uniqueId("watch-existing");
    await c.registerTask({ taskId: existing, spec: httpSpec(target.url, 3600n) });
    const events = new Collector<TaskEvent>(({ signal }) => c.watchTasks({ nextRunCount: 1 }, { signal }));
    await events.waitFor("SYNCED", (es) => es.some((e) => e.type === TaskEventType.SYNCED));
    const synced = events.items.findIndex((e) => e.type === TaskEventType.SYNCED);
    const listing = events.items.slice(0, synced);
    assert.ok(listing.length >= 1);
    assert.ok(listing.every((e) => e.type === TaskEventType.EXISTING && e.task?.taskId === e.taskId));
    const mine = listing.find((e) => e.taskId === existing);
    assert.ok(mine, "the task registered before the watch is listed");
    assert.equal(mine.task?.nextRunTimes.length, 1);
    assert.equal(events.items[synced]!.taskId, "");
    assert.equal(events.items[synced]!.task, undefined);

    const created = uniqueId("watch-created");
    await c.registerTask({ taskId: created, spec: httpSpec(target.url, 3600n) });
    await events.waitFor("CREATED", (es) => es.some((e) => e.type === TaskEventType.CREATED && e.taskId === created));
    const event = events.items.find((e) => e.taskId === created)!;
    assert.equal(event.type, TaskEventType.CREATED);
    assert.equal(event.task?.state, TaskState.ACTIVE);

    await c.pauseTask({ taskId: created });
    await events.waitFor("STATE_CHANGED", (es) =>
      es.some((e) => e.taskId === created && e.type === TaskEventType.STATE_CHANGED && e.task?.state === TaskState.PAUSED),
    );
    await c.cancelTask({ taskId: created });
    await c.deleteTask({ taskId: created });
    await events.waitFor("DELETED", (es) => es.some((e) => e.taskId === created && e.type === TaskEventType.DELETED));
    await events.close();
  });
});
