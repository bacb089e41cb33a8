// The helpers without a server: resumingResults against a scripted fake
// client, error details, base URLs, and that the core entry stays
// browser-safe.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import {
  BadRequestSchema,
  Code,
  ConnectError,
  PreconditionFailureSchema,
  RESUME_CURSOR_TRAILER,
  RetryInfoSchema,
  StatusSchema,
  TaskResultSchema,
  errorDetails,
  isResumable,
  resumingResults,
  type ResumeEvent,
  type RecurClient,
  type TaskResult,
} from "../src/index.js";
import { recurBaseUrl } from "../src/node.js";
import { packageDir } from "./harness.js";

type Session = { results: string[]; end?: ConnectError };

/** A client whose StreamResults plays one scripted session per call. */
function fakeClient(sessions: Session[]) {
  const calls: { afterCursor: string; at: number }[] = [];
  const client: Pick<RecurClient, "streamResults"> = {
    streamResults(request, options) {
      const session = sessions.shift();
      calls.push({ afterCursor: request.afterCursor ?? "", at: Date.now() });
      return (async function* () {
        if (!session) throw new Error("no more sessions scripted");
        for (const cursor of session.results) {
          if (options?.signal?.aborted) throw new ConnectError("aborted", Code.Canceled);
          yield create(TaskResultSchema, { taskId: "t", cursor, run: BigInt(cursor.replace(/\D/g, "") || 0) });
        }
        if (session.end) throw session.end;
      })();
    },
  };
  return { client, calls };
}

function serverStatus(code: Code, message: string, trailer?: string, retryDelayMs?: number): ConnectError {
  const metadata = new Headers({ "grpc-status": String(code) });
  if (trailer) metadata.set(RESUME_CURSOR_TRAILER, trailer);
  const details =
    retryDelayMs === undefined
      ? []
      : [{ desc: RetryInfoSchema, value: { retryDelay: { seconds: 0n, nanos: retryDelayMs * 1_000_000 } } }];
  return new ConnectError(message, code, metadata, details);
}

/** What connect-node throws when the server process dies mid-stream. */
const connectionDrop = () => new ConnectError("http/2 stream closed with error code CANCEL (0x8)", Code.Canceled);

async function collect(it: AsyncIterable<TaskResult>): Promise<string[]> {
  const out: string[] = [];
  for await (const r of it) out.push(r.cursor);
  return out;
}

const fast = { initialBackoffMs: 1, maxBackoffMs: 5 };

describe("resumingResults", () => {
  it("resumes from the recur-resume-cursor trailer, honouring RetryInfo", async () => {
    const { client, calls } = fakeClient([
      { results: ["c1", "c2"], end: serverStatus(Code.ResourceExhausted, "fell behind", "c2", 120) },
      { results: ["c3"], end: serverStatus(Code.Unavailable, "shutting down", "c3", 10) },
      { results: ["c4"] },
    ]);
    const events: ResumeEvent[] = [];
    const got = await collect(resumingResults(client, { taskIds: ["t"] }, { ...fast, onResume: (e) => events.push(e) }));
    assert.deepEqual(got, ["c1", "c2", "c3", "c4"]);
    assert.deepEqual(calls.map((c) => c.afterCursor), ["", "c2", "c3"]);
    assert.ok(calls[1]!.at - calls[0]!.at >= 110, "waited for RetryInfo's delay");
    assert.deepEqual(events.map((e) => [Code[e.error.code], e.cursor, e.fromTrailer]), [
      ["ResourceExhausted", "c2", true],
      ["Unavailable", "c3", true],
    ]);
    assert.ok(events[0]!.delayMs >= 120);
  });

  it("prefers the trailer over the last cursor received", async () => {
    const { client, calls } = fakeClient([
      { results: ["c1"], end: serverStatus(Code.Unavailable, "bye", "c7") },
      { results: [] },
    ]);
    await collect(resumingResults(client, {}, fast));
    assert.deepEqual(calls.map((c) => c.afterCursor), ["", "c7"]);
  });

  it("resumes a dropped connection from the last cursor (or the request's)", async () => {
    const { client, calls } = fakeClient([
      { results: [], end: connectionDrop() },
      { results: ["c5", "c6"], end: connectionDrop() },
      { results: [], end: new ConnectError("connect ECONNREFUSED 127.0.0.1:1", Code.Unavailable) },
      { results: ["c7"] },
    ]);
    const got = await collect(resumingResults(client, { afterCursor: "c4" }, fast));
    assert.deepEqual(got, ["c5", "c6", "c7"]);
    assert.deepEqual(calls.map((c) => c.afterCursor), ["c4", "c4", "c6", "c6"]);
  });

  it("throws DATA_LOSS and other final statuses at once", async () => {
    for (const end of [
      serverStatus(Code.DataLoss, "cursor older than retention"),
      serverStatus(Code.NotFound, "task t not found"),
      serverStatus(Code.Internal, "boom"),
      serverStatus(Code.Canceled, "cancelled by the server"),
    ]) {
      const { client, calls } = fakeClient([{ results: ["c1"], end }, { results: [] }]);
      const got: string[] = [];
      await assert.rejects(
        (async () => {
          for await (const r of resumingResults(client, {}, fast)) got.push(r.cursor);
        })(),
        (e: unknown) => e instanceof ConnectError && e.code === end.code,
      );
      assert.deepEqual(got, ["c1"]);
      assert.equal(calls.length, 1);
    }
  });

  it("gives up after maxAttempts consecutive failures", async () => {
    const sessions = Array.from({ length: 10 }, () => ({ results: [], end: serverStatus(Code.Unavailable, "store away") }));
    const { client, calls } = fakeClient(sessions);
    await assert.rejects(collect(resumingResults(client, {}, { ...fast, maxAttempts: 3 })), /store away/);
    assert.equal(calls.length, 4);
  });

  it("counts failures anew after a result", async () => {
    const sessions: Session[] = [];
    for (let i = 0; i < 4; i++) {
      sessions.push({ results: [], end: connectionDrop() }, { results: [`c${i}`], end: connectionDrop() });
    }
    sessions.push({ results: [] });
    const { client } = fakeClient(sessions);
    const got = await collect(resumingResults(client, {}, { ...fast, maxAttempts: 2 }));
    assert.deepEqual(got, ["c0", "c1", "c2", "c3"]);
  });

  it("bounds the backoff", async () => {
    const sessions = Array.from({ length: 6 }, () => ({ results: [], end: connectionDrop() }));
    const { client } = fakeClient([...sessions, { results: [] }]);
    const delays: number[] = [];
    await collect(
      resumingResults(client, {}, { initialBackoffMs: 10, maxBackoffMs: 40, onResume: (e) => delays.push(e.delayMs) }),
    );
    assert.equal(delays.length, 6);
    assert.ok(delays.every((d) => d <= 40), String(delays));
    assert.ok(delays.slice(3).every((d) => d >= 20), String(delays));
  });

  it("stops when the signal aborts, also while waiting", async () => {
    const { client } = fakeClient([{ results: ["c1"], end: serverStatus(Code.Unavailable, "bye", "c1", 10_000) }]);
    const controller = new AbortController();
    const started = Date.now();
    const got: string[] = [];
    await assert.rejects(
      (async () => {
        for await (const r of resumingResults(client, {}, { signal: controller.signal, onResume: () => controller.abort() })) {
          got.push(r.cursor);
        }
      })(),
      (e: unknown) => e instanceof ConnectError && e.code === Code.Canceled,
    );
    assert.deepEqual(got, ["c1"]);
    assert.ok(Date.now() - started < 5000, "did not sit out the 10 s RetryInfo delay");
  });
});

describe("isResumable", () => {
  it("tells a server's final status from a broken connection", () => {
    assert.equal(isResumable(serverStatus(Code.ResourceExhausted, "x")), true);
    assert.equal(isResumable(serverStatus(Code.Unavailable, "x")), true);
    assert.equal(isResumable(serverStatus(Code.DataLoss, "x")), false);
    assert.equal(isResumable(serverStatus(Code.Internal, "x")), false);
    assert.equal(isResumable(serverStatus(Code.Canceled, "x")), false);
    assert.equal(isResumable(connectionDrop()), true);
    const reset = new ConnectError("read ECONNRESET", Code.Aborted, undefined, undefined, Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" }));
    assert.equal(isResumable(reset), true);
    assert.equal(isResumable(new ConnectError("bad request", Code.InvalidArgument)), false);
  });
});

describe("errorDetails", () => {
  it("decodes details a server sent in grpc-status-details-bin", () => {
    // As connect parses them from the wire: google.rpc.Status with Any details.
    const status = create(StatusSchema, {
      code: Code.InvalidArgument,
      message: "spec.schedule.every: must be at least 1s",
      details: [
        anyPack(BadRequestSchema, create(BadRequestSchema, { fieldViolations: [{ field: "spec.schedule.every", description: "must be at least 1s" }] })),
        anyPack(RetryInfoSchema, create(RetryInfoSchema, { retryDelay: { seconds: 2n, nanos: 500_000_000 } })),
        anyPack(PreconditionFailureSchema, create(PreconditionFailureSchema, { violations: [{ type: "STATE", subject: "task/x" }] })),
      ],
    });
    const trailer = new Headers({
      "grpc-status": String(Code.InvalidArgument),
      "grpc-message": encodeURIComponent(status.message),
      "grpc-status-details-bin": Buffer.from(toBinary(StatusSchema, status)).toString("base64").replace(/=+$/, ""),
    });
    const err = findTrailerError(trailer);
    assert.ok(err);
    const details = errorDetails(err);
    assert.deepEqual(details.fieldViolations.map((v) => v.field), ["spec.schedule.every"]);
    assert.equal(details.retryDelayMs, 2500);
    assert.equal(details.preconditionViolations[0]?.subject, "task/x");
  });

  it("is empty for errors without details and for other values", () => {
    for (const e of [new ConnectError("x", Code.NotFound), new Error("plain"), "a string"]) {
      const d = errorDetails(e);
      assert.deepEqual(d.fieldViolations, []);
      assert.deepEqual(d.preconditionViolations, []);
      assert.equal(d.badRequest, undefined);
      assert.equal(d.retryDelayMs, undefined);
    }
  });
});

describe("recurBaseUrl", () => {
  it("adds the scheme to host:port", () => {
    assert.equal(recurBaseUrl("127.0.0.1:50051", false), "http://127.0.0.1:50051");
    assert.equal(recurBaseUrl("recur.example.com:443", true), "https://recur.example.com:443");
    assert.equal(recurBaseUrl("https://recur.example.com/", false), "https://recur.example.com");
    assert.equal(recurBaseUrl("http://[::1]:50051", true), "http://[::1]:50051");
  });
});

describe("the core entry", () => {
  it("imports no Node.js module (it runs in a browser with connect-web)", () => {
    const allowed = new Set(["@connectrpc/connect", "@bufbuild/protobuf", "@bufbuild/protobuf/codegenv2", "@bufbuild/protobuf/wkt"]);
    const seen = new Set<string>();
    const visit = (file: string) => {
      if (seen.has(file)) return;
      seen.add(file);
      const source = readFileSync(file, "utf8");
      for (const m of source.matchAll(/(?:^|\n)\s*(?:import|export)\s[^;]*?from\s+"([^"]+)"/g)) {
        const spec = m[1]!;
        if (spec.startsWith(".")) {
          visit(path.resolve(path.dirname(file), spec));
        } else {
          assert.ok(allowed.has(spec), `${path.relative(packageDir, file)} imports ${spec}`);
        }
      }
    };
    visit(path.join(packageDir, "dist/src/index.js"));
    assert.ok(seen.size >= 6, `followed ${seen.size} files`);
  });
});
