// How a browser (the dashboard) uses the same generated code: the core
// entry with @connectrpc/connect-web's gRPC-Web transport. Type-checked
// against the DOM library without Node.js types (tsconfig.browser.json).
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { bearerAuth, createTaskServiceClient, resumingResults, type RecurClient } from "../src/index.js";

export function createBrowserClient(baseUrl: string, token?: string): RecurClient {
  const transport = createGrpcWebTransport({
    baseUrl,
    interceptors: token ? [bearerAuth(token)] : [],
  });
  return createTaskServiceClient(transport);
}

/** Follows every result, resuming across disconnects, until `signal` aborts. */
export async function followResults(client: RecurClient, signal: AbortSignal, show: (line: string) => void) {
  for await (const result of resumingResults(client, {}, { signal })) {
    show(`${result.taskId} #${result.run}: ${result.outcome}`);
  }
}
