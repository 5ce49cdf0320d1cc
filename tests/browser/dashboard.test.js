// The dashboard as a person uses it, in headless Chromium (Debian's package) against a real
// `bldst server` seeded by scripts/browser-test.sh. Environment: BASE_URL, TOKEN (read scope),
// WRITE_TOKEN, BLOCKED_ID, RUNNING_ID, SCREENSHOTS (a directory), CHROMIUM (the executable).
"use strict";

const assert = require("node:assert/strict");
const path = require("node:path");
const fs = require("node:fs");
const { chromium } = require("playwright-core");

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const BASE_URL = env("BASE_URL");
const SHOTS = env("SCREENSHOTS");

async function report(id, state, status, message) {
  const answer = await fetch(`${BASE_URL}/builds/${id}/transitions`, {
    method: "POST",
    headers: { Authorization: `Bearer ${env("WRITE_TOKEN")}`, "Content-Type": "application/json" },
    body: JSON.stringify({ state, status, message, source: "https://ci.example.com/runs/42" }),
  });
  assert.equal(answer.status, 200, await answer.text());
}

async function main() {
  fs.mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
      // Playwright gives each launch a fresh temporary profile (its own --user-data-dir).
      "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
  const step = (name) => console.log(`ok - ${name}`);
  try {
    for (const [device, viewport] of [["laptop", { width: 1366, height: 800 }], ["phone", { width: 390, height: 844 }]]) {
      const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
      const page = await context.newPage();
      const urls = [];
      page.on("request", (request) => urls.push(request.url()));

      // Sign in with a read token.
      await page.goto(`${BASE_URL}/`);
      await page.fill("#token", env("TOKEN"));
      await page.click("#login button[type=submit]");
      await page.waitForSelector("table[data-testid=builds] tbody tr");
      const rows = await page.locator("table[data-testid=builds] tbody tr").count();
      assert.ok(rows >= 3, `the list shows the seeded builds (${rows})`);
      const blockedRow = page.locator(`tr[data-build="${env("BLOCKED_ID")}"]`);
      assert.equal(await blockedRow.getAttribute("data-status"), "blocked");
      await page.waitForSelector("#live.on");
      step(`${device}: the list shows the seeded builds`);
      await page.screenshot({ path: path.join(SHOTS, `${device}-builds.png`), fullPage: true });

      // Filter by status.
      await page.selectOption("select[data-filter=status]", "blocked");
      await page.click("form.filters button[type=submit]");
      // Polled from here: the page's CSP (rightly) refuses Playwright's waitForFunction eval.
      for (let tries = 0; ; tries += 1) {
        const statuses = await page.$$eval("table[data-testid=builds] tbody tr", (rows) => rows.map((row) => row.dataset.status));
        if (statuses.length && statuses.every((status) => status === "blocked")) break;
        assert.ok(tries < 100, `only blocked builds after filtering: ${statuses}`);
        await page.waitForTimeout(100);
      }
      step(`${device}: the status filter keeps only blocked builds`);
      await page.selectOption("select[data-filter=status]", "");
      await page.click("form.filters button[type=submit]");
      await page.waitForSelector(`tr[data-build="${env("RUNNING_ID")}"]`);
      await page.waitForSelector("#live.on");

      // A transition reported through the API appears without a reload.
      const running = env("RUNNING_ID");
      const code = device === "laptop" ? 25 : 30;
      await report(running, code, "in_progress", `${device}: stage ${code} started`);
      await page.waitForSelector(`tr[data-build="${running}"][data-state="${code}"][data-status="in_progress"]`);
      step(`${device}: a reported transition appears in the list without a reload`);

      // The build page: the right ladder.
      await page.click(`tr[data-build="${running}"] a`);
      await page.waitForSelector("ol[data-testid=ladder] li");
      const ladder = await page.$$eval("ol[data-testid=ladder] li",
        (items) => Object.fromEntries(items.map((li) => [li.dataset.code, li.dataset.stageStatus])));
      assert.equal(Object.keys(ladder).length, 21);
      assert.equal(ladder["0"], "completed");
      assert.equal(ladder["5"], "skipped");
      assert.equal(ladder["10"], "completed");
      assert.equal(ladder["15"], "completed", "failed once, then completed");
      assert.equal(ladder[String(code)], "in_progress");
      assert.equal(ladder["100"], "pending");
      const link = await page.getAttribute("ol[data-testid=timeline] a", "href");
      assert.equal(link, "https://ci.example.com/runs/42", "the timeline links back to the CI run");
      await page.waitForSelector("#live.on");
      await report(running, code, "failed", `${device}: stage ${code} failed`);
      await page.waitForSelector(`ol[data-testid=ladder] li[data-code="${code}"][data-stage-status="failed"]`);
      const label = await page.textContent(`ol[data-testid=ladder] li[data-code="${code}"] .stage-status`);
      assert.equal(label.trim(), "failed ×1");
      step(`${device}: the build page shows the ladder, the timeline, and a failure live`);
      await page.screenshot({ path: path.join(SHOTS, `${device}-build.png`), fullPage: true });
      await report(running, code, "completed", `${device}: stage ${code} done`);

      // The blocked build's ladder.
      await page.goto(`${BASE_URL}/dashboard/#/builds/${env("BLOCKED_ID")}`);
      await page.waitForSelector(`ol[data-testid=ladder] li[data-stage-status="blocked"]`);
      step(`${device}: a blocked build shows its blocked stage`);

      // Reports draw their charts.
      await page.click("a[data-nav=reports]");
      for (const chart of ["chart-success-platform", "chart-success-image", "chart-failures", "chart-durations"]) {
        await page.waitForSelector(`[data-testid=${chart}] svg rect`);
      }
      const bars = await page.locator("[data-testid=chart-success-platform] svg rect").count();
      assert.ok(bars >= 2, `a bar per platform (${bars})`);
      await page.waitForSelector("[data-testid=blocked] tbody tr");
      step(`${device}: the reports page draws its charts and lists blocked builds`);
      await page.screenshot({ path: path.join(SHOTS, `${device}-reports.png`), fullPage: true });

      // The token never appears in a URL.
      assert.ok(urls.every((url) => !url.includes(env("TOKEN"))), "no URL carries the token");
      step(`${device}: no request URL carries the token`);
      await context.close();
    }
  } finally {
    await browser.close();
  }
}

main().then(() => console.log("browser test passed"), (error) => {
  console.error(`browser test failed: ${error.stack || error}`);
  process.exit(1);
});
