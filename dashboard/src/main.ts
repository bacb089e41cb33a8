// recur's dashboard: the tasks of the server that serves this page, live.
// It talks to recur only through the public API (the generated TypeScript
// client over gRPC-Web, same origin), so it shows nothing other clients
// cannot see. WatchTasks keeps the table current: the whole list first,
// then each change as it happens.
import {
  Code,
  ConnectError,
  Outcome,
  TaskEventType,
  TaskState,
  timestampMs,
  type Task,
} from "@recur/client";
import { TOKEN_KEY, client, localAndZoned, relative, showError, whoAmI, writeBlocked } from "./api.js";
import { closeTask, showTask } from "./task.js";
import { LANES, drawTimeline, type Mark } from "./timeline.js";

/** Rows per page of the table: 10,000 rows in the DOM would make every
 * redraw (one a second, for the countdowns) slow. */
const PAGE_ROWS = 200;
/** Fire times asked for per task, shown in the table and drawn on the
 * timeline. Ten (the server's cap) made the first render at 10,000 tasks
 * 1.1 -> 1.8 s: every task's list is read and decoded at once. */
const NEXT_RUNS = 3;
/** Longest wait before re-opening a broken watch. */
const MAX_BACKOFF_MS = 10_000;

const tasks = new Map<string, Task>();
/** The tasks ordered by id, made again only after the set of ids changed. */
let order: string[] | undefined;

/** The tasks by id (plain code-unit order: localeCompare made a filtered
 * render at 10,000 tasks several times slower). */
function ordered(): Task[] {
  order ??= [...tasks.keys()].sort();
  const out: Task[] = [];
  for (const id of order) {
    const task = tasks.get(id);
    if (task) out.push(task);
  }
  return out;
}

/** Sets or removes a task, keeping the order valid. */
function put(id: string, task: Task | undefined): void {
  const known = tasks.has(id);
  if (task) {
    tasks.set(id, task);
    remember(task);
  } else {
    tasks.delete(id);
  }
  if (known !== (task !== undefined)) order = undefined;
}

/** Past runs of the timeline's lanes from the result log (as far back as
 * it keeps them), by task; the lanes they were read for. */
const past = new Map<string, Mark[]>();
let pastFor = "";

/** Reads the retained results of `ids` once per set of lanes. */
async function loadPast(ids: string[]): Promise<void> {
  const key = ids.join("\n");
  if (key === pastFor || ids.length === 0) return;
  pastFor = key;
  const found = new Map<string, Mark[]>();
  try {
    for await (const result of client().streamResults({ taskIds: ids, historyOnly: true })) {
      // Run 0 is a skipped slot, not a run.
      if (!result.finishedAt || result.run === 0n) continue;
      const marks = found.get(result.taskId) ?? [];
      marks.push({ run: result.run, at: timestampMs(result.finishedAt), outcome: result.outcome });
      found.set(result.taskId, marks);
    }
  } catch {
    // A lane's task went meanwhile (NOT_FOUND): the next draw asks again.
    pastFor = "";
    return;
  }
  for (const id of ids) {
    const marks = found.get(id) ?? [];
    // Runs recorded while the log was read come with the task's changes.
    for (const mark of past.get(id) ?? []) {
      if (!marks.some((m) => m.run === mark.run)) marks.push(mark);
    }
    past.set(id, marks);
  }
  redraw();
}

/** Keeps a task's recent runs in its timeline lane (the log was read
 * once; every run since comes with a task change). */
function remember(task: Task): void {
  const marks = past.get(task.taskId);
  if (!marks) return;
  for (const run of task.recentRuns) {
    if (!run.finishedAt || marks.some((m) => m.run === run.run)) continue;
    marks.push({ run: run.run, at: timestampMs(run.finishedAt), outcome: run.outcome });
  }
}

/** A task's past runs: the log's and every one since. */
function pastOf(task: Task): Mark[] {
  return past.get(task.taskId) ?? task.recentRuns.flatMap((run) =>
    run.finishedAt ? [{ run: run.run, at: timestampMs(run.finishedAt), outcome: run.outcome }] : [],
  );
}

/** The table's page, from 0. */
let page = 0;

/** Tasks ticked for a bulk pause or resume. */
const selected = new Set<string>();
let synced = false;
let drawPending = false;

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

function matches(task: Task, search: string, state: string, label: string): boolean {
  if (search && !task.taskId.includes(search)) return false;
  if (state && TaskState[task.state] !== state) return false;
  if (label) {
    const [key, value] = label.split("=", 2);
    const labels = task.spec?.labels ?? {};
    if (value === undefined ? !(key in labels) : labels[key] !== value) return false;
  }
  return true;
}

function cell(row: HTMLTableRowElement, text: string, className = "", title = ""): HTMLTableCellElement {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  if (title) td.title = title;
  return td;
}

function draw(): void {
  drawPending = false;
  const search = $<HTMLInputElement>("search").value.trim();
  const state = $<HTMLSelectElement>("state").value;
  const label = $<HTMLInputElement>("label").value.trim();
  const now = Date.now();
  const shown = ordered().filter((t) => matches(t, search, state, label));
  const body = document.createElement("tbody");
  const pages = Math.max(1, Math.ceil(shown.length / PAGE_ROWS));
  page = Math.min(page, pages - 1);
  const first = page * PAGE_ROWS;
  for (const task of shown.slice(first, first + PAGE_ROWS)) {
    const row = body.insertRow();
    row.dataset.taskId = task.taskId;
    const tick = document.createElement("input");
    tick.type = "checkbox";
    tick.checked = selected.has(task.taskId);
    tick.setAttribute("aria-label", `select ${task.taskId}`);
    tick.addEventListener("change", () => {
      if (tick.checked) selected.add(task.taskId);
      else selected.delete(task.taskId);
      updateBulk();
    });
    row.insertCell().append(tick);
    const link = document.createElement("a");
    link.href = `#/task/${encodeURIComponent(task.taskId)}`;
    link.textContent = task.taskId;
    row.insertCell().append(link);
    const stateName = TaskState[task.state];
    cell(row, stateName.toLowerCase(), `state-${stateName}`, task.pauseReason);
    const zone = task.spec?.schedule?.timeZone || "UTC";
    cell(row, task.scheduleDescription);
    const next = task.nextRunAt ? timestampMs(task.nextRunAt) : undefined;
    // Hover: the next fire times in the viewer's zone, then the task's.
    const upcoming = task.nextRunTimes
      .slice(0, 3)
      .map((t) => {
        const { local, zoned } = localAndZoned(timestampMs(t), zone);
        return `${local}  (${zoned})`;
      })
      .join("\n");
    cell(row, next === undefined ? "-" : relative(next, now), "", upcoming);
    const last = task.lastResult;
    if (last) {
      const outcome = Outcome[last.outcome];
      const at = last.finishedAt ? timestampMs(last.finishedAt) : now;
      const { local, zoned } = localAndZoned(at, zone);
      const title = `${local}  (${zoned})${last.error ? `\n${last.error}` : ""}`;
      cell(row, `${outcome.toLowerCase()} ${relative(at, now)}`, `outcome-${outcome}`, title);
    } else {
      cell(row, "-");
    }
    cell(row, String(task.runCount), "num");
    cell(row, String(task.skippedCount), "num");
    cell(row, String(task.failureCount), "num");
    const recent = row.insertCell();
    for (const run of task.recentRuns) {
      const mark = document.createElement("span");
      const outcome = Outcome[run.outcome];
      mark.className = `mark outcome-${outcome}`;
      mark.title = `run ${run.run}: ${outcome.toLowerCase()}`;
      recent.append(mark);
    }
    const labels = row.insertCell();
    for (const [key, value] of Object.entries(task.spec?.labels ?? {})) {
      const span = document.createElement("span");
      span.className = "label";
      span.textContent = `${key}=${value}`;
      labels.append(span);
    }
  }
  $("tasks").querySelector("tbody")?.replaceWith(body);
  if (synced) void loadPast(shown.slice(0, LANES).map((t) => t.taskId));
  drawTimeline($<HTMLCanvasElement>("timeline"), shown, pastOf, $<HTMLSelectElement>("span").value, now);
  $("count").textContent = synced ? `${shown.length} of ${tasks.size} tasks` : "loading…";
  $("page").textContent =
    shown.length > PAGE_ROWS
      ? `rows ${first + 1}–${Math.min(first + PAGE_ROWS, shown.length)} of ${shown.length}`
      : "";
  $<HTMLButtonElement>("prev").disabled = page === 0;
  $<HTMLButtonElement>("next").disabled = page >= pages - 1;
  $("pager").hidden = pages === 1;
}

/** Redraws at the next frame, once however many changes came. */
function redraw(): void {
  if (drawPending) return;
  drawPending = true;
  requestAnimationFrame(draw);
}

/** Follows WatchTasks for good, re-opening it after a break. */
async function watch(): Promise<void> {
  let backoff = 250;
  for (;;) {
    try {
      // Each (re)list arrives as EXISTING events, then SYNCED: gathered
      // apart and swapped in whole, so tasks deleted while the stream was
      // down go, and no half-listed table is drawn meanwhile.
      let listing: Map<string, Task> | undefined;
      for await (const event of client().watchTasks({ nextRunCount: NEXT_RUNS })) {
        backoff = 250;
        $("status").textContent = "";
        switch (event.type) {
          case TaskEventType.EXISTING:
            listing ??= new Map();
            if (event.task) listing.set(event.taskId, event.task);
            break;
          case TaskEventType.SYNCED:
            tasks.clear();
            for (const [id, task] of listing ?? []) {
              tasks.set(id, task);
              remember(task);
            }
            listing = undefined;
            order = undefined;
            synced = true;
            break;
          case TaskEventType.DELETED:
            put(event.taskId, undefined);
            break;
          default:
            if (event.task) put(event.taskId, event.task);
        }
        if (synced) redraw();
      }
    } catch (error) {
      showError(error);
      const err = ConnectError.from(error);
      if (err.code === Code.Unauthenticated || err.code === Code.PermissionDenied) return;
    }
    synced = false;
    await new Promise((done) => setTimeout(done, backoff));
    backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
  }
}

/** Enables the bulk buttons for what is selected and allowed. */
function updateBulk(): void {
  const blocked = writeBlocked();
  for (const id of ["pause-selected", "resume-selected"]) {
    const button = $<HTMLButtonElement>(id);
    button.disabled = blocked !== "" || selected.size === 0;
    button.title = blocked || (selected.size === 0 ? "select tasks first" : "");
  }
  $("selected-count").textContent = blocked
    ? `read-only: ${blocked}`
    : selected.size
      ? `${selected.size} selected`
      : "";
}

/** Pauses or resumes every selected task, one call each. */
async function bulk(pause: boolean): Promise<void> {
  const ids = [...selected];
  for (const id of ["pause-selected", "resume-selected"]) $<HTMLButtonElement>(id).disabled = true;
  // The table updates from WatchTasks (the calls' answers carry no fire times).
  for (const taskId of ids) {
    try {
      if (pause) await client().pauseTask({ taskId, reason: "paused from the dashboard" });
      else await client().resumeTask({ taskId });
      selected.delete(taskId);
    } catch (error) {
      showError(error);
    }
  }
  updateBulk();
  redraw();
}

/** The table or one task's page, by the URL's hash (#/task/<id>). */
function route(): void {
  const match = /^#\/task\/(.+)$/.exec(location.hash);
  const page = $("task-page");
  const list = $("list");
  if (match) {
    list.hidden = true;
    page.hidden = false;
    void showTask(page, decodeURIComponent(match[1]));
  } else {
    closeTask();
    page.hidden = true;
    list.hidden = false;
    redraw();
  }
}

function start(): void {
  for (const id of ["search", "state", "label"]) {
    $(id).addEventListener("input", () => {
      page = 0;
      redraw();
    });
  }
  $("span").addEventListener("input", redraw);
  $("prev").addEventListener("click", () => {
    page = Math.max(0, page - 1);
    redraw();
  });
  $("next").addEventListener("click", () => {
    page += 1;
    redraw();
  });
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $<HTMLInputElement>("token").value.trim());
    location.reload();
  });
  $("pause-selected").addEventListener("click", () => void bulk(true));
  $("resume-selected").addEventListener("click", () => void bulk(false));
  window.addEventListener("hashchange", route);
  // Countdowns move every second.
  setInterval(() => {
    if (!$("list").hidden) redraw();
  }, 1_000);
  void whoAmI().then((ok) => {
    updateBulk();
    route();
    if (ok) void watch();
  });
}

start();
