// One task's page (#/task/<id>): its state and spec (secrets redacted, as
// the server returns them), the controls, and its results, the retained
// ones first, then each new one as it is recorded.
import {
  Code,
  ConnectError,
  Outcome,
  TaskSpecSchema,
  TaskState,
  durationMs,
  timestampMs,
  toJson,
  type Task,
  type TaskResult,
} from "@recur/client";
import { client, localAndZoned, relative, showError, writeBlocked } from "./api.js";
import { colour, fitCanvas } from "./draw.js";

/** Results listed at most (newest first). */
const MAX_RESULTS = 50;
/** Characters of a result's output shown. */
const PREVIEW = 120;

/** Stops the page's stream when another page is shown. */
let leave: AbortController | undefined;

const decoder = new TextDecoder();

function element<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  text = "",
  className = "",
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (text) node.textContent = text;
  if (className) node.className = className;
  return node;
}

/** Shows task `id` in `root` until [`closeTask`]. */
export async function showTask(root: HTMLElement, id: string): Promise<void> {
  closeTask();
  const abort = new AbortController();
  leave = abort;
  root.replaceChildren(element("p", "loading…"));
  let task: Task;
  try {
    task = await client().getTask({ taskId: id, nextRunCount: 3 }, { signal: abort.signal });
    // Another page was opened meanwhile.
    if (abort.signal.aborted) return;
  } catch (error) {
    if (abort.signal.aborted) return;
    showError(error);
    root.replaceChildren(element("p", `task ${id} cannot be read`));
    return;
  }
  const heading = element("h2", task.taskId);
  const back = element("a", "← all tasks");
  back.href = "#/";
  const state = element("p", "", "task-state");
  const fires = element("p", "", "fires");
  const controls = element("div", "", "controls");
  const results = element("table", "", "results");
  results.createTHead().innerHTML =
    "<tr><th>Finished</th><th>Run</th><th>Outcome</th><th>Attempts</th><th>Latency</th><th>HTTP</th><th>Output or error</th></tr>";
  const rows = results.createTBody();
  const chart = element("canvas", "", "chart");
  chart.setAttribute("role", "img");
  const recent: TaskResult[] = [];
  const spec = element("pre", JSON.stringify(toJson(TaskSpecSchema, task.spec ?? ({} as never)), null, 2), "spec");
  root.replaceChildren(
    back,
    heading,
    state,
    fires,
    controls,
    element("h3", "Start lateness and run duration"),
    chart,
    element("h3", "Results"),
    results,
    element("h3", "Spec"),
    spec,
  );

  const zone = task.spec?.schedule?.timeZone || "UTC";
  const showState = (t: Task) => {
    const name = TaskState[t.state].toLowerCase();
    const next = t.nextRunAt ? ` · next run ${relative(timestampMs(t.nextRunAt), Date.now())}` : "";
    state.textContent = `${name}${t.pauseReason ? ` (${t.pauseReason})` : ""} · ${t.scheduleDescription}${next}`;
    state.dataset.state = TaskState[t.state];
    // Shown, not only on hover: keyboard and touch users read them too.
    fires.textContent = t.nextRunTimes.length
      ? `Next fires: ${t.nextRunTimes
          .map((at) => {
            const { local, zoned } = localAndZoned(timestampMs(at), zone);
            return `${local} (${zoned})`;
          })
          .join(" · ")}`
      : "";
  };
  showState(task);
  controls.append(...buttons(id, showState));
  const blocked = writeBlocked();
  if (blocked) controls.append(element("span", `Read-only: ${blocked}.`, "blocked"));

  const add = (result: TaskResult) => {
    const row = rows.insertRow(0);
    row.dataset.run = String(result.run);
    const outcome = Outcome[result.outcome];
    const finished = result.finishedAt ? localAndZoned(timestampMs(result.finishedAt), zone) : undefined;
    const cells = [
      finished?.local ?? "-",
      result.run ? `#${result.run}` : "-",
      outcome.toLowerCase(),
      String(result.attempts),
      result.latency ? `${Math.round(durationMs(result.latency))} ms` : "-",
      result.httpStatus ? String(result.httpStatus) : "-",
      result.error || decoder.decode(result.output).slice(0, PREVIEW),
    ];
    for (const text of cells) row.insertCell().textContent = text;
    row.cells[2].className = `outcome-${outcome}`;
    if (finished) row.cells[0].title = finished.zoned;
    while (rows.rows.length > MAX_RESULTS) rows.deleteRow(-1);
    if (result.startedAt) {
      recent.push(result);
      if (recent.length > MAX_RESULTS) recent.shift();
      drawChart(chart, recent);
    }
  };
  await follow(id, add, abort.signal, () => {
    results.dataset.live = "true";
  });
}

/** Stops the shown task's stream. */
export function closeTask(): void {
  leave?.abort();
  leave = undefined;
}

/** The retained results, then live ones (`onLive` as they start), until `signal`. */
async function follow(
  id: string,
  add: (r: TaskResult) => void,
  signal: AbortSignal,
  onLive: () => void,
): Promise<void> {
  let after = "";
  try {
    for await (const result of client().streamResults({ taskIds: [id], historyOnly: true }, { signal })) {
      add(result);
      after = result.cursor;
    }
    onLive();
    for (;;) {
      try {
        const live = client().streamResults(
          { taskIds: [id], afterCursor: after },
          {
            signal,
            // With no result read yet, the stream's own start is where a
            // reconnect resumes (nothing recorded in between is missed).
            onHeader: (headers) => {
              if (!after) after = headers.get("recur-start-cursor") ?? "";
            },
          },
        );
        for await (const result of live) {
          add(result);
          after = result.cursor;
        }
        return; // the task ended
      } catch (error) {
        if (signal.aborted) return;
        showError(error);
        // Gone, unreadable or not allowed: retrying will not help.
        const code = ConnectError.from(error).code;
        if ([Code.NotFound, Code.DataLoss, Code.PermissionDenied, Code.Unauthenticated].includes(code)) return;
        await new Promise((done) => setTimeout(done, 1_000));
      }
    }
  } catch (error) {
    if (!signal.aborted) showError(error);
  }
}

/** Pause, resume, trigger and cancel; disabled with the reason when the token may not. */
function buttons(id: string, showState: (t: Task) => void): HTMLButtonElement[] {
  const blocked = writeBlocked();
  const make = (label: string, action: () => Promise<Task | undefined>, confirmText = "") => {
    const button = element("button", label);
    button.type = "button";
    button.disabled = blocked !== "";
    button.title = blocked;
    button.addEventListener("click", async () => {
      if (confirmText && !window.confirm(confirmText)) return;
      button.disabled = true;
      try {
        const task = await action();
        if (task) showState(task);
      } catch (error) {
        showError(error);
      } finally {
        button.disabled = false;
      }
    });
    return button;
  };
  return [
    make("Pause", () => client().pauseTask({ taskId: id, reason: "paused from the dashboard" })),
    make("Resume", () => client().resumeTask({ taskId: id })),
    make(
      "Trigger now",
      async () => {
        await client().triggerTask({ taskId: id });
        return undefined;
      },
      `Run ${id} now? A run, once started, cannot be taken back.`,
    ),
    make(
      "Cancel",
      () => client().cancelTask({ taskId: id, reason: "cancelled from the dashboard" }),
      `Cancel ${id}? A cancelled task never runs again (its runs in flight are stopped).`,
    ),
  ];
}

/**
 * Start lateness (first attempt minus slot) and run duration (end minus
 * first attempt) of the runs listed, oldest left, as two lines on one
 * scale in milliseconds.
 */
function drawChart(canvas: HTMLCanvasElement, runs: TaskResult[]): void {
  const height = 120;
  const fitted = fitCanvas(canvas, height);
  if (!fitted) return;
  const { g, width } = fitted;
  const ms = (t: TaskResult["startedAt"]) => (t ? timestampMs(t) : 0);
  const series = [
    { name: "lateness", colour: "--warn", values: runs.map((r) => ms(r.startedAt) - ms(r.scheduledAt)) },
    { name: "duration", colour: "--ok", values: runs.map((r) => ms(r.finishedAt) - ms(r.startedAt)) },
  ];
  const top = Math.max(1, ...series.flatMap((s) => s.values));
  const x = (i: number) => 40 + (runs.length < 2 ? 0 : (i / (runs.length - 1)) * (width - 50));
  const y = (v: number) => height - 16 - (Math.max(0, v) / top) * (height - 30);
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = colour("--muted");
  g.fillText(`${Math.round(top)} ms`, 2, 12);
  g.fillText("0", 2, height - 16);
  series.forEach((s, k) => {
    g.strokeStyle = colour(s.colour);
    g.fillStyle = colour(s.colour);
    g.beginPath();
    s.values.forEach((v, i) => (i === 0 ? g.moveTo(x(i), y(v)) : g.lineTo(x(i), y(v))));
    g.stroke();
    g.fillText(s.name, 60 + k * 80, height - 2);
  });
  const last = runs[runs.length - 1];
  canvas.setAttribute(
    "aria-label",
    `Over the last ${runs.length} runs; latest: lateness ${ms(last.startedAt) - ms(last.scheduledAt)} ms, duration ${ms(last.finishedAt) - ms(last.startedAt)} ms`,
  );
}
