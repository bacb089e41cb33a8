// Starts the built recur binary and small helpers for the tests.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as delay } from "node:timers/promises";
import { createRecurClient, type RecurClient } from "../src/node.js";

/** clients/typescript (this file runs from dist/test/). */
export const packageDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const repoRoot = path.resolve(packageDir, "../..");
export const recurBin = process.env.RECUR_BIN
  ? path.resolve(process.env.RECUR_BIN)
  : path.join(repoRoot, "target/debug/recur");

if (!existsSync(recurBin)) {
  throw new Error(`recur binary not found at ${recurBin}: build it (cargo build) or set RECUR_BIN`);
}

let seq = 0;
/** A task id unique to this test process. */
export function uniqueId(name: string): string {
  seq += 1;
  return `ts-${name}-${process.pid}-${Date.now().toString(36)}-${seq}`;
}

/** A TCP port nothing listens on right now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

export interface RecurServer {
  port: number;
  /** `http://127.0.0.1:<port>` */
  baseUrl: string;
  client: RecurClient;
  process: ChildProcess;
  /** What the server printed so far. */
  logs(): string;
  /** SIGTERM (graceful: streams end UNAVAILABLE with a resume cursor), then wait for exit. */
  stop(): Promise<number | null>;
  /** SIGKILL: connections drop, nothing is said. */
  kill(): Promise<void>;
}

export interface ServeOptions {
  /** Listen on this port (default: a free one). */
  port?: number;
  /** Extra `recur serve` arguments. */
  args?: string[];
  /** Credentials for `client` (and the readiness probe) when the server uses TLS. */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
}

/** Starts `recur serve --listen 127.0.0.1:<port>` and waits until it answers. */
export async function startServer(options: ServeOptions = {}): Promise<RecurServer> {
  for (let attempt = 1; ; attempt++) {
    const port = options.port ?? (await freePort());
    try {
      return await startOn(port, options.args ?? [], options.tls);
    } catch (e) {
      // Someone took the free port in between: try another one.
      if (options.port === undefined && attempt < 3 && /Address already in use/.test(String(e))) {
        continue;
      }
      throw e;
    }
  }
}

async function startOn(port: number, args: string[], tls?: ServeOptions["tls"]): Promise<RecurServer> {
  const child = spawn(recurBin, ["serve", "--listen", `127.0.0.1:${port}`, "--shutdown-grace-secs", "1", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info" },
  });
  let output = "";
  child.stdout!.on("data", (d) => (output += d));
  child.stderr!.on("data", (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  let done = false;
  void exited.then(() => (done = true));
  const baseUrl = `${tls ? "https" : "http"}://127.0.0.1:${port}`;
  const client = createRecurClient({ baseUrl, ...tls });
  const server: RecurServer = {
    port,
    baseUrl,
    client,
    process: child,
    logs: () => output,
    async stop() {
      if (!done) child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
    async kill() {
      if (!done) child.kill("SIGKILL");
      await exited;
    },
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (done) {
      throw new Error(`recur serve exited before answering:\n${output}`);
    }
    try {
      // Anything the server answers (even UNIMPLEMENTED) means it is up.
      await client.listTasks({ pageSize: 1 }, { timeoutMs: 1000 });
      return server;
    } catch (e) {
      const code = (e as { code?: number }).code;
      if (code !== undefined && code !== 14 && code !== 4 && code !== 1) {
        return server;
      }
    }
    if (Date.now() > deadline) {
      await server.kill();
      throw new Error(`recur serve did not answer within 30 s:\n${output}`);
    }
    await delay(100);
  }
}

export interface HttpTarget {
  url: string;
  /** Requests received: path, the Idempotency-Key and X-Secret headers. */
  requests: { path: string; idempotencyKey: string | undefined; secret: string | undefined }[];
  close(): Promise<void>;
}

/** A local HTTP server for HTTP tasks to call: answers 200 `{"ok":true}`. */
export async function startHttpTarget(): Promise<HttpTarget> {
  const requests: HttpTarget["requests"] = [];
  const srv = http.createServer((req, res) => {
    const one = (v: string | string[] | undefined) => (Array.isArray(v) ? v[0] : v);
    requests.push({
      path: req.url ?? "",
      idempotencyKey: one(req.headers["idempotency-key"]),
      secret: one(req.headers["x-secret"]),
    });
    req.resume();
    res.writeHead(200, { "content-type": "application/json" });
    res.end('{"ok":true}');
  });
  await new Promise<void>((resolve) => srv.listen(0, "127.0.0.1", resolve));
  const { port } = srv.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/`,
    requests,
    close: () =>
      new Promise((resolve) => {
        srv.closeAllConnections();
        srv.close(() => resolve());
      }),
  };
}

/** Polls `check` until it returns a value other than undefined. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await delay(100);
  }
}

// ---- A minimal Redis client (RESP) for reachability and cleanup ----

export const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";

type Reply = string | number | null | Reply[] | Error;

/** Sends commands on one connection and returns their replies. */
export async function redisCommands(commands: string[][]): Promise<Reply[]> {
  const url = new URL(redisUrl);
  const socket = net.connect(Number(url.port || 6379), url.hostname);
  socket.setTimeout(3000);
  const replies: Reply[] = [];
  let buf = Buffer.alloc(0);
  const parse = (at: number): [Reply, number] | undefined => {
    const nl = buf.indexOf("\r\n", at);
    if (nl < 0) return undefined;
    const type = String.fromCharCode(buf[at]!);
    const line = buf.toString("utf8", at + 1, nl);
    const next = nl + 2;
    switch (type) {
      case "+":
        return [line, next];
      case "-":
        return [new Error(line), next];
      case ":":
        return [Number(line), next];
      case "$": {
        const len = Number(line);
        if (len < 0) return [null, next];
        if (buf.length < next + len + 2) return undefined;
        return [buf.toString("utf8", next, next + len), next + len + 2];
      }
      case "*": {
        const n = Number(line);
        if (n < 0) return [null, next];
        const items: Reply[] = [];
        let pos = next;
        for (let i = 0; i < n; i++) {
          const r = parse(pos);
          if (!r) return undefined;
          items.push(r[0]);
          pos = r[1];
        }
        return [items, pos];
      }
      default:
        throw new Error(`unexpected RESP type ${type}`);
    }
  };
  const encode = (cmd: string[]) =>
    `*${cmd.length}\r\n` + cmd.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("");
  return new Promise((resolve, reject) => {
    socket.on("error", reject);
    socket.on("timeout", () => socket.destroy(new Error("redis timed out")));
    socket.on("connect", () => socket.write(commands.map(encode).join("")));
    socket.on("data", (d) => {
      buf = Buffer.concat([buf, d]);
      for (;;) {
        const r = parse(0);
        if (!r) break;
        replies.push(r[0]);
        buf = buf.subarray(r[1]);
      }
      if (replies.length === commands.length) {
        socket.end();
        resolve(replies);
      }
    });
  });
}

export async function redisReachable(): Promise<boolean> {
  try {
    const [pong] = await redisCommands([["PING"]]);
    return pong === "PONG";
  } catch {
    return false;
  }
}

/** Deletes every key under `prefix` (SCAN + UNLINK; never a flush). */
export async function redisDeletePrefix(prefix: string): Promise<number> {
  if (!/^[A-Za-z0-9_-]{8,}:$/.test(prefix)) throw new Error(`refusing to delete under prefix ${prefix}`);
  let cursor = "0";
  let deleted = 0;
  do {
    const [reply] = await redisCommands([["SCAN", cursor, "MATCH", `${prefix}*`, "COUNT", "1000"]]);
    const [next, keys] = reply as [string, string[]];
    cursor = next;
    if (keys.length > 0) {
      const [n] = await redisCommands([["UNLINK", ...keys]]);
      deleted += Number(n);
    }
  } while (cursor !== "0");
  return deleted;
}

/**
 * Reads a stream in the background: `items` fills as messages arrive,
 * `opened` resolves when the response headers came (the server has
 * subscribed), `waitFor` waits for a condition, `finished` for the end.
 */
export class Collector<T> {
  readonly items: T[] = [];
  error: unknown = undefined;
  ended = false;
  readonly opened: Promise<void>;
  private readonly controller = new AbortController();
  private readonly wakers = new Set<() => void>();
  private readonly pump: Promise<void>;

  constructor(start: (call: { signal: AbortSignal; onHeader: () => void }) => AsyncIterable<T>) {
    let resolveOpened!: () => void;
    let rejectOpened!: (e: unknown) => void;
    this.opened = new Promise<void>((resolve, reject) => {
      resolveOpened = resolve;
      rejectOpened = reject;
    });
    this.opened.catch(() => {});
    this.pump = (async () => {
      try {
        for await (const item of start({ signal: this.controller.signal, onHeader: resolveOpened })) {
          resolveOpened();
          this.items.push(item);
          this.wake();
        }
        this.ended = true;
        resolveOpened();
      } catch (e) {
        this.error = e;
        rejectOpened(e);
      } finally {
        this.wake();
      }
    })();
  }

  private wake() {
    for (const w of [...this.wakers]) w();
  }

  /** Waits until `pred(items)` holds; throws if the stream ends or fails first. */
  async waitFor(what: string, pred: (items: T[]) => boolean, timeoutMs = 15_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (pred(this.items)) return;
      if (this.error !== undefined) throw new Error(`stream failed while waiting for ${what}: ${String(this.error)}`);
      if (this.ended) throw new Error(`stream ended while waiting for ${what}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${what} (have ${this.items.length} items)`);
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(timer);
          this.wakers.delete(done);
          resolve();
        };
        const timer = setTimeout(done, Math.min(left, 500));
        this.wakers.add(done);
      });
    }
  }

  /** Waits for the stream to end; returns the error it ended with, if any. */
  async finished(timeoutMs = 15_000): Promise<unknown> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("stream did not end in time")), timeoutMs);
    });
    try {
      await Promise.race([this.pump, timeout]);
    } finally {
      clearTimeout(timer);
    }
    return this.error;
  }

  /** Cancels the call and waits for the reader to stop. */
  async close(): Promise<void> {
    this.controller.abort();
    await this.pump;
  }
}
