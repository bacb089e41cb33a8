// The browser-safe core of the recur client: the generated messages and
// service descriptor, a client over any Connect transport, error details
// and the resuming StreamResults reader. Nothing here imports Node.js
// modules: use it with @connectrpc/connect-web's gRPC-Web transport in a
// browser, or import "@recur/client/node" for the Node.js gRPC transport.
export * from "./gen/recur/v1/recur_pb.js";
export * from "./gen/google/rpc/status_pb.js";
export * from "./gen/google/rpc/error_details_pb.js";
export { createTaskServiceClient, bearerAuth, type RecurClient } from "./client.js";
export { errorDetails, type ErrorDetails } from "./errors.js";
export {
  resumingResults,
  isResumable,
  RESUME_CURSOR_TRAILER,
  type ResumingResultsOptions,
  type ResumeEvent,
} from "./resume.js";
export { Code, ConnectError } from "@connectrpc/connect";
export type { Transport } from "@connectrpc/connect";
export { create, toJson, fromJson, toBinary, fromBinary } from "@bufbuild/protobuf";
export { timestampDate, timestampFromDate, timestampMs, durationFromMs, durationMs } from "@bufbuild/protobuf/wkt";
