// Drives the dashboard in a real Chromium (Debian's, through playwright-core)
// against a running server: tests/dashboard_browser.rs starts the server
// and its tasks, runs this, then checks through GetTask what the clicks
// did. Each step prints one line; a failed expectation exits non-zero
// with what the page showed.
//
//   node test/browser.mjs URL SCREENSHOT_DIR [CHROMIUM]
//
// The server has "fetch-ok" (succeeding) and "fetch-bad" (failing) tasks.
import { chromium } from "playwright-core";
import { join } from "node:path";

const [url, shots, executablePath = "/usr/bin/chromium"] = process.argv.slice(2);
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

  // The task page: a result arrives live.
  await page.click('tr[data-task-id="fetch-ok"] a');
  await page.locator(".results tbody tr").first().waitFor({ timeout: WAIT });
  const before = await page.locator(".results tbody tr").count();
  await page.waitForFunction(
    (n) => document.querySelectorAll(".results tbody tr").length > n,
    before,
    { timeout: WAIT },
  );
  console.log(`a result arrived live (${before} -> more)`);

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
