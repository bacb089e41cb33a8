// How the page reaches recur: the TypeScript client over gRPC-Web on this
// page's own origin, with the token (if any) from this tab's session
// storage, and what the token may do.
import {
  Code,
  ConnectError,
  Scope,
  bearerAuth,
  createTaskServiceClient,
  type RecurClient,
} from "@recur/client";
import { createGrpcWebTransport } from "@connectrpc/connect-web";

/** Where the token is kept: this tab's session only, never the URL. */
export const TOKEN_KEY = "recur.token";

let cached: RecurClient | undefined;

/** The client, made once per page load. */
export function client(): RecurClient {
  if (!cached) {
    const token = sessionStorage.getItem(TOKEN_KEY);
    cached = createTaskServiceClient(
      createGrpcWebTransport({
        baseUrl: location.origin,
        interceptors: token ? [bearerAuth(token)] : [],
      }),
    );
  }
  return cached;
}

/** What the caller may do, from WhoAmI. */
export const caller = { name: "", canWrite: false };

/** Why a control is disabled, or "" when it is not. */
export function writeBlocked(): string {
  return caller.canWrite ? "" : `${caller.name || "this token"} lacks the write scope`;
}

/** Asks WhoAmI; false (with the token form shown) when the server wants a token. */
export async function whoAmI(): Promise<boolean> {
  try {
    const me = await client().whoAmI({});
    caller.name = me.name;
    // Admin allows everything write does.
    caller.canWrite = me.scopes.includes(Scope.WRITE) || me.scopes.includes(Scope.ADMIN);
    const who = document.getElementById("who");
    if (who) who.textContent = `as ${me.name}${me.namespace ? ` in ${me.namespace}` : ""}`;
    return true;
  } catch (error) {
    showError(error);
    return false;
  }
}

/** Shows an error in the status line; a token problem opens the token form. */
export function showError(error: unknown): void {
  const err = ConnectError.from(error);
  const status = document.getElementById("status");
  if (status) status.textContent = `${Code[err.code]}: ${err.rawMessage}`;
  if (err.code === Code.Unauthenticated || err.code === Code.PermissionDenied) {
    const form = document.getElementById("token-form");
    if (form) form.hidden = false;
  }
}

/** "in 42s", "3m ago": a time relative to now, in one unit. */
export function relative(ms: number, now: number): string {
  const diff = ms - now;
  const abs = Math.abs(diff);
  if (abs < 500) return "now";
  const units: [number, string][] = [
    [86_400_000, "d"],
    [3_600_000, "h"],
    [60_000, "m"],
    [1_000, "s"],
  ];
  const [size, unit] = units.find(([size]) => abs >= size) ?? [1_000, "s"];
  const amount = `${Math.round(abs / size)}${unit}`;
  return diff >= 0 ? `in ${amount}` : `${amount} ago`;
}

/** `ms` in the viewer's zone, and in `zone` (a task's) for a hover. */
export function localAndZoned(ms: number, zone: string): { local: string; zoned: string } {
  const local = new Date(ms).toLocaleString();
  let zoned: string;
  try {
    zoned = `${new Date(ms).toLocaleString(undefined, { timeZone: zone || "UTC" })} ${zone || "UTC"}`;
  } catch {
    zoned = `${new Date(ms).toISOString()} UTC`;
  }
  return { local, zoned };
}
