// The Node.js entry: everything the core exports, plus a client over
// @connectrpc/connect-node's gRPC transport (HTTP/2, optional TLS, mTLS and
// a bearer token).
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { Interceptor, Transport } from "@connectrpc/connect";
import { bearerAuth, createTaskServiceClient, type RecurClient } from "./client.js";

export * from "./index.js";

export interface RecurClientOptions {
  /**
   * The server: `http://host:port` (plaintext), `https://host:port` (TLS),
   * or `host:port`, which means https when `ca`, `cert` or `key` is given
   * and http otherwise.
   */
  baseUrl: string;
  /** Bearer token (from `recur token new`), sent as `authorization: Bearer …`. */
  token?: string;
  /** CA certificate(s) (PEM) to trust instead of the system's. */
  ca?: string | Buffer;
  /** Client certificate chain (PEM) for mTLS. */
  cert?: string | Buffer;
  /** Private key (PEM) of `cert`. */
  key?: string | Buffer;
  /** More interceptors, run after the one adding the token. */
  interceptors?: Interceptor[];
  /** Default deadline of every call, in milliseconds (none by default). */
  defaultTimeoutMs?: number;
}

/** Normalises a base URL: adds the scheme to `host:port`, drops a trailing slash. */
export function recurBaseUrl(baseUrl: string, tls: boolean): string {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(baseUrl) ? baseUrl : `${tls ? "https" : "http"}://${baseUrl}`;
  return withScheme.replace(/\/+$/, "");
}

/** A gRPC (HTTP/2) transport to a recur server. */
export function createRecurTransport(options: RecurClientOptions): Transport {
  const { ca, cert, key, token } = options;
  const tls = ca !== undefined || cert !== undefined || key !== undefined;
  const interceptors = [...(token ? [bearerAuth(token)] : []), ...(options.interceptors ?? [])];
  return createGrpcTransport({
    baseUrl: recurBaseUrl(options.baseUrl, tls),
    interceptors,
    defaultTimeoutMs: options.defaultTimeoutMs,
    // Connections stay up across idle periods of long streams.
    pingIntervalMs: 30_000,
    nodeOptions: tls ? { ca, cert, key } : {},
  });
}

/**
 * A client of recur.v1.TaskService over gRPC:
 *
 *     const recur = createRecurClient({ baseUrl: "127.0.0.1:50051" });
 *     const task = await recur.getTask({ taskId: "fetch-example" });
 */
export function createRecurClient(options: RecurClientOptions): RecurClient {
  return createTaskServiceClient(createRecurTransport(options));
}
