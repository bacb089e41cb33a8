// Drives the dashboard in a real Chromium (Debian's, through playwright-core)
// against a running server: tests/dashboard_browser.rs starts the server
// and its tasks, runs this, then checks through GetTask what the clicks
// did. Each step prints one line; a failed expectation exits non-zero
// with what the page showed.
//
//   node test/browser.mjs URL SCREENSHOT_DIR [CHROMIUM]
//   node test/browser.mjs --scale N URL SCREENSHOT_DIR [CHROMIUM]
//
// The server has "fetch-ok" (succeeding) and "fetch-bad" (failing) tasks;
// with --scale, N tasks `t-00000`... instead, and the page's render times
// are measured.
import { chromium } from "playwright-core";
import { join } from "node:path";

const args = process.argv.slice(2);
const scale = args[0] === "--scale" ? Number(args.splice(0, 2)[1]) : 0;
const [url, shots, executablePath = "/usr/bin/chromium"] = args;
if (!url || !shots) {
  console.error("usage: node test/browser.mjs URL SCREENSHOT_DIR [CHROMIUM]");
  process.exit(2);
}
/** Generous for a loaded 2-core machine. */
const WAIT = 30_000;

const browser = await chromium.launch({
  executablePath,
  // Root in a container has no user namespaces for Chromium's sandbox.
  args: ["--no-sandbox", "--disable-dev-shm-usage"],
});
let page;
if (scale) {
  await measure();
  await browser.close();
  process.exit(0);
}
try {
  page = await browser.newPage({ viewport: { width: 1280, height: 640 } });
  page.on("pageerror", (error) => console.error(`page error: ${error.message}`));

  // The list: both tasks' rows, live from WatchTasks.
  const started = Date.now();
  await page.goto(url);
  await page.locator('tr[data-task-id="fetch-ok"]').waitFor({ timeout: WAIT });
  await page.locator('tr[data-task-id="fetch-bad"]').waitFor({ timeout: WAIT });
  console.log(`rows shown ${Date.now() - started} ms after navigation`);
  // The failing task shows its failures.
  await page
    .locator('tr[data-task-id="fetch-bad"] .outcome-FAILED')
    .first()
    .waitFor({ timeout: WAIT });
  console.log("failing task shows failed");
  await page.screenshot({ path: join(shots, "dashboard-tasks.png") });

  // The task page: once the retained results are in and the live stream
  // is open, a run newer than all of them arrives.
  await page.click('tr[data-task-id="fetch-ok"] a');
  await page.locator(".results[data-live]").waitFor({ timeout: WAIT });
  const newest = await page.evaluate(() =>
    Math.max(0, ...[...document.querySelectorAll(".results tbody tr")].map((r) => Number(r.dataset.run))),
  );
  await page.waitForFunction(
    (n) => [...document.querySelectorAll(".results tbody tr")].some((r) => Number(r.dataset.run) > n),
    newest,
    { timeout: WAIT },
  );
  console.log(`a result arrived live (after run ${newest})`);

  // Pause by clicking: the page shows it at once.
  await page.click('.controls button:has-text("Pause")');
  await page.locator('.task-state[data-state="PAUSED"]').waitFor({ timeout: WAIT });
  console.log("paused from the page");
  await page.screenshot({ path: join(shots, "dashboard-task.png") });

  // Back on the list, the row says so too (through WatchTasks).
  await page.click('a[href="#/"]');
  await page
    .locator('tr[data-task-id="fetch-ok"] .state-PAUSED')
    .waitFor({ timeout: WAIT });
  console.log("the list shows it paused");
} catch (error) {
  console.error(`FAILED: ${error.message}`);
  if (page) {
    console.error(`page text: ${(await page.locator("body").innerText()).slice(0, 2000)}`);
    await page.screenshot({ path: join(shots, "failure.png") }).catch(() => {});
  }
  await browser.close();
  process.exit(1);
}
await browser.close();

/**
 * Time to first render (navigation until the count says every task is
 * in) and to a filtered render (typing a search until the count changes)
 * with `scale` tasks.
 */
async function measure() {
  try {
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    const started = Date.now();
    await page.goto(url);
    await page.waitForFunction(
      (n) => document.getElementById("count")?.textContent?.startsWith(`${n} of ${n} tasks`),
      scale,
      { timeout: 120_000 },
    );
    const first = Date.now() - started;
    // Paged: the second page of the whole list starts at the 201st task.
    await page.click("#next");
    await page.waitForFunction(() => document.getElementById("page")?.textContent?.startsWith("rows 201–400"));
    const second = await page.locator("#tasks tbody tr").first().getAttribute("data-task-id");
    if (second !== "t-00200") throw new Error(`page 2 starts at ${second}`);
    const filtering = Date.now();
    await page.fill("#search", "t-0004");
    await page.waitForFunction(
      () => document.getElementById("count")?.textContent?.startsWith("10 of "),
      undefined,
      { timeout: 60_000 },
    );
    const filtered = Date.now() - filtering;
    const rows = await page.locator("#tasks tbody tr").count();
    console.log(`scale ${scale}: first render ${first} ms, filtered render ${filtered} ms, ${rows} rows drawn`);
  } catch (error) {
    console.error(`FAILED: ${error.message}`);
    if (page) console.error(`count: ${await page.locator("#count").innerText().catch(() => "?")}`);
    await browser.close();
    process.exit(1);
  }
}
