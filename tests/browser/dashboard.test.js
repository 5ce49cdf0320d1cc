// The dashboard as a person uses it, in headless Chromium (Debian's package) against a real
// `bldst server` seeded by scripts/browser-test.sh. Environment: BASE_URL, TOKEN (read scope),
// WRITE_TOKEN, ADMIN_TOKEN, BLOCKED_ID, RUNNING_ID, FAILED_ID, JUMPED_ID, SCREENSHOTS (a
// directory), CHROMIUM (the executable).
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
    for (const [device, viewport] of [["laptop", { width: 1400, height: 800 }], ["phone", { width: 390, height: 844 }]]) {
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

      // Builds that need a person come first; builds are named by their key; retries read as
      // such (a build allowed no retry is not "1/0"); a failed build counts down to its retry.
      const firstStatus = await page.getAttribute("table[data-testid=builds] tbody tr:first-child", "data-status");
      assert.equal(firstStatus, "blocked", "a blocked build is listed first");
      const failedRow = `tr[data-build="${env("FAILED_ID")}"]`;
      assert.equal((await page.textContent(`${failedRow} td.name a`)).trim(), "aws/rhel9/nightly");
      assert.equal((await page.textContent(`tr[data-build="${env("BLOCKED_ID")}"] .retry-note`)).trim(),
        "after 1 failure: needs a person");
      assert.equal((await page.textContent(`${failedRow} .retry-note`)).trim(), "retry 1 of 3");
      const left = (await page.textContent(`${failedRow} .countdown`)).trim();
      assert.match(left, /^in (59|60):\d\d$/, `the next attempt counts down: ${left}`);
      // The status column is on screen, on a phone too.
      const cell = await page.locator(`${failedRow} td.status`).boundingBox();
      assert.ok(cell && cell.x + cell.width <= viewport.width, `the status column fits ${viewport.width} px: ${JSON.stringify(cell)}`);
      step(`${device}: blocked first, keys, retry notes, a countdown, the status on screen`);

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

      // The blocked build's ladder; a read token is offered no operator action.
      await page.goto(`${BASE_URL}/dashboard/#/builds/${env("BLOCKED_ID")}`);
      await page.waitForSelector(`ol[data-testid=ladder] li[data-stage-status="blocked"]`);
      assert.equal(await page.locator("form[data-testid=operator]").count(), 0, "no operator actions for a read token");
      step(`${device}: a blocked build shows its blocked stage`);

      // A failed build's page: its key, labels, outputs, next attempt, stage names.
      await page.goto(`${BASE_URL}/dashboard/#/builds/${env("FAILED_ID")}`);
      await page.waitForSelector("[data-testid=outputs] tr[data-output=ami_id]");
      assert.equal((await page.textContent("h1")).trim(), "aws/rhel9/nightly");
      const labels = await page.textContent("[data-testid=labels]");
      assert.ok(labels.includes("git_sha=0a1b2c3") && labels.includes("owner=images-team"), labels);
      assert.ok((await page.textContent("[data-testid=outputs] tr[data-output=ami_id]")).includes("ami-0abc1234"));
      assert.match(await page.textContent("[data-testid=next-attempt]"), /next attempt in (59|60):\d\d/);
      assert.equal((await page.textContent(`ol[data-testid=ladder] li[data-code="10"] .stage-name`)).trim(), "green image (bootable, SSH)");
      assert.equal((await page.textContent(`ol[data-testid=ladder] li[data-code="55"] .stage-name`)).trim(), "service installation");
      await page.screenshot({ path: path.join(SHOTS, `${device}-failed-build.png`), fullPage: true });
      step(`${device}: a failed build shows its key, labels, outputs, next attempt and stage names`);

      // A completed build that jumped from 10 to 100: its skipped stages are one row.
      await page.goto(`${BASE_URL}/dashboard/#/builds/${env("JUMPED_ID")}`);
      await page.waitForSelector("ol[data-testid=timeline] li.folded");
      assert.equal(await page.getAttribute("ol[data-testid=timeline] li.folded", "data-count"), "17");
      assert.ok((await page.textContent("ol[data-testid=timeline] li.folded")).includes("17 stages skipped"));
      // Stage 5, skipped alone by the report of 10, stays a row of its own.
      assert.equal(await page.locator("ol[data-testid=timeline] li[data-kind=skipped]:not(.folded)").count(), 1);
      step(`${device}: runs of skipped stages are folded into one timeline row`);

      // Reports draw their charts.
      await page.click("a[data-nav=reports]");
      for (const chart of ["chart-success-platform", "chart-success-image", "chart-failures", "chart-durations"]) {
        await page.waitForSelector(`[data-testid=${chart}] svg rect`);
      }
      const bars = await page.locator("[data-testid=chart-success-platform] svg rect").count();
      assert.ok(bars >= 2, `a bar per platform (${bars})`);
      // aws: one published, one still failing: the rate says of how many.
      const rates = await page.textContent("[data-testid=chart-success-platform] svg");
      assert.ok(rates.includes("100% of 1 finished · 1 unfinished"), rates);
      await page.waitForSelector("[data-testid=blocked] tbody tr");
      // What resuming saved: the server's sentence for the page's window.
      const saved = await page.textContent("[data-testid=savings] p.big");
      assert.match(saved, /^(resuming saved .+ in the last 7 days, \d+ stages? not re-run|no build resumed in the last 7 days)/, saved);
      step(`${device}: the reports page draws its charts and lists blocked builds`);
      await page.screenshot({ path: path.join(SHOTS, `${device}-reports.png`), fullPage: true });

      // The token never appears in a URL.
      assert.ok(urls.every((url) => !url.includes(env("TOKEN"))), "no URL carries the token");
      step(`${device}: no request URL carries the token`);
      await context.close();
    }

    // An admin token gets the operator actions: retry the blocked build, with a reason.
    const context = await browser.newContext({ viewport: { width: 1400, height: 800 }, deviceScaleFactor: 1 });
    const page = await context.newPage();
    await page.goto(`${BASE_URL}/`);
    await page.fill("#token", env("ADMIN_TOKEN"));
    await page.click("#login button[type=submit]");
    await page.waitForSelector("table[data-testid=builds] tbody tr");
    await page.goto(`${BASE_URL}/dashboard/#/builds/${env("BLOCKED_ID")}`);
    await page.waitForSelector("form[data-testid=operator]");
    const offered = await page.$$eval("select[data-testid=operator-action] option", (options) => options.map((o) => o.value));
    assert.deepEqual(offered, ["retry", "reset", "cancel"]);
    await page.screenshot({ path: path.join(SHOTS, "admin-blocked-build.png"), fullPage: true });
    await page.selectOption("select[data-testid=operator-action]", "retry");
    assert.equal(await page.isVisible("select[data-testid=operator-state]"), false, "a retry asks for no stage");
    await page.selectOption("select[data-testid=operator-action]", "reset");
    assert.equal(await page.isVisible("select[data-testid=operator-state]"), true, "a reset asks for the stage");
    await page.selectOption("select[data-testid=operator-action]", "retry");
    await page.fill("input[data-testid=operator-reason]", "mirror replaced");
    await page.click("form[data-testid=operator] button[type=submit]");
    await page.waitForSelector("ol[data-testid=timeline] li[data-kind=retried]");
    assert.ok((await page.textContent("ol[data-testid=timeline] li[data-kind=retried]")).includes("mirror replaced"));
    assert.equal(await page.locator(`ol[data-testid=ladder] li[data-stage-status="blocked"]`).count(), 0);
    assert.equal((await page.textContent("[data-testid=operator-error]")).trim(), "");
    step("admin: retries a blocked build with a reason, from its page");
    await context.close();
  } finally {
    await browser.close();
  }
}

main().then(() => console.log("browser test passed"), (error) => {
  console.error(`browser test failed: ${error.stack || error}`);
  process.exit(1);
});
