// The transport-neutral client: works with any Connect transport, such as
// @connectrpc/connect-node's gRPC transport (see ./node.ts) or
// @connectrpc/connect-web's gRPC-Web transport in a browser. Imports nothing
// that needs Node.js.
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import { TaskService } from "./gen/recur/v1/recur_pb.js";

/** A client of recur.v1.TaskService: one method per RPC, camelCase. */
export type RecurClient = Client<typeof TaskService>;

/** A client of recur.v1.TaskService over the given transport. */
export function createTaskServiceClient(transport: Transport): RecurClient {
  return createClient(TaskService, transport);
}

/**
 * An interceptor that sends `authorization: Bearer <token>` with every call
 * (a token from `recur token new`). Pass it in the transport's
 * `interceptors`.
 */
export function bearerAuth(token: string): Interceptor {
  const value = `Bearer ${token}`;
  return (next) => (req) => {
    req.header.set("authorization", value);
    return next(req);
  };
}
