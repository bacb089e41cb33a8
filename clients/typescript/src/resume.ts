// A StreamResults reader that survives server restarts, slow-reader
// disconnects and dropped connections without losing or repeating results.
import { Code, ConnectError, type CallOptions } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { StreamResultsRequestSchema, TaskResult } from "./gen/recur/v1/recur_pb.js";
import type { RecurClient } from "./client.js";
import { errorDetails } from "./errors.js";

/** The trailer carrying the cursor to resume from (RESOURCE_EXHAUSTED, UNAVAILABLE at shutdown). */
export const RESUME_CURSOR_TRAILER = "recur-resume-cursor";

/** What `onResume` is told before each reconnection. */
export interface ResumeEvent {
  /** Why the stream ended. */
  error: ConnectError;
  /** The cursor the next stream resumes after ("" for live results only). */
  cursor: string;
  /** Whether `cursor` came from the server's `recur-resume-cursor` trailer. */
  fromTrailer: boolean;
  /** Consecutive failed attempts so far (1 on the first). */
  attempt: number;
  /** How long the helper waits before reconnecting. */
  delayMs: number;
}

export interface ResumingResultsOptions {
  /** Ends the iteration (the pending call or wait is aborted; the iterator throws). */
  signal?: AbortSignal;
  /** Request headers for every call (e.g. authorization, when the transport adds none). */
  headers?: CallOptions["headers"];
  /** First backoff after a failure, doubled per consecutive failure. Default 200 ms. */
  initialBackoffMs?: number;
  /** Upper bound of the backoff. Default 5000 ms. */
  maxBackoffMs?: number;
  /** Upper bound of a server's RetryInfo delay that is honoured. Default 60000 ms. */
  maxRetryDelayMs?: number;
  /**
   * Consecutive failed attempts (no result received in between) after which
   * the last error is thrown. Default 30: with the default backoff about two
   * minutes of a server that stays away.
   */
  maxAttempts?: number;
  /** Called before each reconnection, e.g. to log it. */
  onResume?: (event: ResumeEvent) => void;
}

/**
 * Whether a stream that ended with this error may be resumed: the server
 * asked for it (RESOURCE_EXHAUSTED: the reader fell behind, or a quota
 * where waiting helps; UNAVAILABLE: shutdown, or the store is away), or the
 * connection broke without a status from the server (connect-node reports
 * that as CANCELED "http/2 stream closed with error code CANCEL" when the
 * server's process dies, ABORTED on ECONNRESET, UNAVAILABLE on
 * ECONNREFUSED, INTERNAL for other HTTP/2 failures). DATA_LOSS and every
 * other status the server sent are final. A CANCELED error from the
 * caller's own AbortSignal looks the same: check the signal first.
 */
export function isResumable(err: ConnectError): boolean {
  switch (err.code) {
    case Code.ResourceExhausted:
    case Code.Unavailable:
      return true;
    case Code.Canceled:
    case Code.Aborted:
    case Code.Internal:
    case Code.Unknown:
      return isTransportFailure(err);
    default:
      return false;
  }
}

function isTransportFailure(err: ConnectError): boolean {
  // A status the server sent comes with its grpc-status in the metadata.
  if (err.metadata.has("grpc-status")) {
    return false;
  }
  // One made from a broken connection or HTTP/2 stream carries the
  // underlying error, or says so.
  let cause: unknown = err.cause;
  for (let depth = 0; cause instanceof Error && depth < 8; depth++) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === "string" && /^(E[A-Z]+|ERR_HTTP2_.*|ERR_STREAM_.*)$/.test(code)) {
      return true;
    }
    cause = (cause as { cause?: unknown }).cause;
  }
  return /http\/2 stream closed|missing trailer|premature close|socket hang up|network error|failed to fetch|load failed/i.test(
    err.rawMessage,
  );
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(ConnectError.from(signal.reason, Code.Canceled));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(ConnectError.from(signal?.reason, Code.Canceled));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Reads StreamResults like `client.streamResults(request)`, and when the
 * stream ends with RESOURCE_EXHAUSTED or UNAVAILABLE or its connection drops,
 * opens it again after the right cursor: the server's `recur-resume-cursor`
 * trailer when it sent one, otherwise the cursor of the last result
 * received (or the request's `afterCursor`). It waits before reconnecting:
 * the server's RetryInfo delay when given, at least an exponential backoff
 * with jitter (bounded by `maxBackoffMs`). The server guarantees that a
 * stream resumed after a cursor repeats nothing and skips nothing.
 *
 * Ends when the server ends the stream with OK (a stream of tasks that all
 * ended, or `historyOnly`). Throws DATA_LOSS (the cursor is older than
 * retention: results were lost to this reader) and any other error at once,
 * and the last error after `maxAttempts` consecutive failures.
 *
 * One limit: a live-only stream (no `afterCursor`) that drops before its
 * first result, without a trailer, has no cursor to resume from; it resumes
 * live-only and results finished in between are not replayed.
 */
export async function* resumingResults(
  client: Pick<RecurClient, "streamResults">,
  request: MessageInitShape<typeof StreamResultsRequestSchema> = {},
  options: ResumingResultsOptions = {},
): AsyncGenerator<TaskResult, void, undefined> {
  const initialBackoffMs = options.initialBackoffMs ?? 200;
  const maxBackoffMs = options.maxBackoffMs ?? 5000;
  const maxRetryDelayMs = options.maxRetryDelayMs ?? 60_000;
  const maxAttempts = options.maxAttempts ?? 30;
  const { signal, headers } = options;
  let cursor = request.afterCursor ?? "";
  let failures = 0;
  for (;;) {
    const openedAt = Date.now();
    let error: ConnectError;
    try {
      const stream = client.streamResults({ ...request, afterCursor: cursor }, { signal, headers });
      for await (const result of stream) {
        if (result.cursor !== "") {
          cursor = result.cursor;
        }
        failures = 0;
        yield result;
      }
      return;
    } catch (e) {
      error = ConnectError.from(e);
      if (signal?.aborted || !isResumable(error)) {
        throw error;
      }
    }
    // A stream that stayed up for a while was healthy: start the count anew.
    if (Date.now() - openedAt >= 2 * maxBackoffMs) {
      failures = 0;
    }
    failures++;
    if (failures > maxAttempts) {
      throw error;
    }
    const trailer = error.metadata.get(RESUME_CURSOR_TRAILER);
    if (trailer) {
      cursor = trailer;
    }
    const backoff = Math.min(maxBackoffMs, initialBackoffMs * 2 ** (failures - 1));
    const jittered = backoff / 2 + Math.random() * (backoff / 2);
    const retryDelay = errorDetails(error).retryDelayMs;
    const delayMs = Math.round(Math.max(jittered, Math.min(retryDelay ?? 0, maxRetryDelayMs)));
    options.onResume?.({ error, cursor, fromTrailer: Boolean(trailer), attempt: failures, delayMs });
    await sleep(delayMs, signal);
  }
}
