// The timeline above the task list: one lane per visible task (the first
// LANES of them, in the table's order), its past runs behind "now" as
// marks coloured by outcome (as far back as the result log keeps them)
// and its next fire times (the server's next_run_times) ahead as hollow
// ticks, so a herd (ticks stacked at one instant), a gap or a failing task
// shows at a glance.
import { Outcome, timestampMs, type Task } from "@recur/client";
import { colour, fitCanvas } from "./draw.js";

/** Lanes drawn at most. */
export const LANES = 24;

/** A past run on the timeline. */
export interface Mark {
  /** Its run number, so a run read twice is drawn once. */
  run: bigint;
  /** When it finished, ms since the epoch. */
  at: number;
  outcome: Outcome;
}
const LANE_HEIGHT = 14;
const LABEL_WIDTH = 150;

/** The span either side of now, by the select's value. */
const SPANS: Record<string, number> = {
  "5m": 5 * 60_000,
  "1h": 3_600_000,
  "24h": 86_400_000,
};

/** Draws `tasks` (already filtered and sorted) on `canvas`. */
export function drawTimeline(
  canvas: HTMLCanvasElement,
  tasks: Task[],
  pastOf: (task: Task) => Mark[],
  span: string,
  now: number,
): void {
  const half = SPANS[span] ?? SPANS["1h"];
  const lanes = tasks.slice(0, LANES);
  const fitted = fitCanvas(canvas, Math.max(1, lanes.length) * LANE_HEIGHT + 18);
  if (!fitted) return;
  const { g, width } = fitted;
  const plot = width - LABEL_WIDTH;
  const x = (ms: number) => LABEL_WIDTH + ((ms - (now - half)) / (2 * half)) * plot;
  const muted = colour("--muted");
  g.font = "11px system-ui, sans-serif";
  g.textBaseline = "middle";
  lanes.forEach((task, i) => {
    const y = i * LANE_HEIGHT + LANE_HEIGHT / 2;
    g.fillStyle = muted;
    g.fillText(task.taskId.slice(0, 22), 2, y);
    for (const { at, outcome: value } of pastOf(task)) {
      if (at < now - half) continue;
      const outcome = Outcome[value];
      g.fillStyle =
        outcome === "SUCCEEDED"
          ? colour("--ok")
          : outcome === "FAILED" || outcome === "TIMED_OUT" || outcome === "ABANDONED"
            ? colour("--bad")
            : colour("--idle");
      g.fillRect(x(at) - 2, y - 4, 4, 8);
    }
    g.strokeStyle = colour("--fg");
    for (const next of task.nextRunTimes) {
      const at = timestampMs(next);
      if (at > now + half) break;
      g.strokeRect(x(at) - 2, y - 4, 4, 8);
    }
  });
  // Now, and the span's ends.
  const axis = lanes.length * LANE_HEIGHT + 9;
  g.strokeStyle = colour("--warn");
  g.beginPath();
  g.moveTo(x(now), 0);
  g.lineTo(x(now), axis - 5);
  g.stroke();
  g.fillStyle = muted;
  g.textAlign = "left";
  g.fillText(`−${span}`, LABEL_WIDTH, axis);
  g.textAlign = "center";
  g.fillText("now", x(now), axis);
  g.textAlign = "right";
  g.fillText(`+${span}`, width - 2, axis);
  g.textAlign = "left";
  canvas.setAttribute(
    "aria-label",
    `Timeline of ${lanes.length} tasks: last runs before now, next fire times after, ${span} either side`,
  );
}
