// Decoding the google.rpc error details recur sends in
// `grpc-status-details-bin`: BadRequest on INVALID_ARGUMENT (field paths
// such as `spec.schedule.every`), RetryInfo where waiting helps,
// PreconditionFailure on FAILED_PRECONDITION.
import { ConnectError } from "@connectrpc/connect";
import { durationMs } from "@bufbuild/protobuf/wkt";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  PreconditionFailureSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
  type BadRequest,
  type BadRequest_FieldViolation,
  type ErrorInfo,
  type PreconditionFailure,
  type PreconditionFailure_Violation,
  type QuotaFailure,
  type RetryInfo,
} from "./gen/google/rpc/error_details_pb.js";

/** The details of an error, decoded. Absent details are undefined. */
export interface ErrorDetails {
  badRequest?: BadRequest;
  retryInfo?: RetryInfo;
  preconditionFailure?: PreconditionFailure;
  quotaFailure?: QuotaFailure;
  errorInfo?: ErrorInfo;
  /** The BadRequest's field violations (empty without one). */
  fieldViolations: BadRequest_FieldViolation[];
  /** The PreconditionFailure's violations (empty without one). */
  preconditionViolations: PreconditionFailure_Violation[];
  /** RetryInfo's delay in milliseconds, when the server sent one. */
  retryDelayMs?: number;
}

/**
 * Decodes the google.rpc details of an error (any thrown value; only a
 * ConnectError carries details). Unknown detail types are ignored; they
 * stay readable through `ConnectError.findDetails`.
 */
export function errorDetails(err: unknown): ErrorDetails {
  const ce = err instanceof ConnectError ? err : ConnectError.from(err);
  const first = <T>(list: T[]): T | undefined => list[0];
  const badRequest = first(ce.findDetails(BadRequestSchema));
  const retryInfo = first(ce.findDetails(RetryInfoSchema));
  const preconditionFailure = first(ce.findDetails(PreconditionFailureSchema));
  const quotaFailure = first(ce.findDetails(QuotaFailureSchema));
  const errorInfo = first(ce.findDetails(ErrorInfoSchema));
  return {
    badRequest,
    retryInfo,
    preconditionFailure,
    quotaFailure,
    errorInfo,
    fieldViolations: badRequest?.fieldViolations ?? [],
    preconditionViolations: preconditionFailure?.violations ?? [],
    retryDelayMs: retryInfo?.retryDelay ? durationMs(retryInfo.retryDelay) : undefined,
  };
}
