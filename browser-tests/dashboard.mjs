// The dashboard end to end in headless Chromium (the system's /usr/bin/chromium, driven by
// playwright-core). Started by apps/agent/tests/dashboard.rs against a running agent whose outbox
// holds DEAD_ROWS dead rows that failed with DEAD_REASON; exits non-zero on the first
// expectation that does not hold.
//
// Environment: DASHBOARD_URL, SERVICE_TOKEN, DEAD_ROWS, DEAD_REASON, SCREENSHOT_DIR, and
// optionally CHROMIUM (default /usr/bin/chromium).
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const need = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const url = need("DASHBOARD_URL");
const token = need("SERVICE_TOKEN");
const deadRows = Number(need("DEAD_ROWS"));
const reason = need("DEAD_REASON");
const screenshots = need("SCREENSHOT_DIR");
// Bounds on waiting for the page, reached only when something is wrong; nothing is timed.
const PATIENCE_MS = 60_000;

function expect(condition, message) {
  if (!condition) throw new Error(`expected ${message}`);
}

const cellOf = (page, status) => page.locator(`#outbox-stats tr[data-status="${status}"] td:nth-child(3)`);
const countOf = async (page, status) => Number(await cellOf(page, status).textContent());

const profile = mkdtempSync(join(tmpdir(), "smartflow-chromium-"));
mkdirSync(screenshots, { recursive: true });
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"],
  viewport: { width: 1280, height: 900 },
});
context.setDefaultTimeout(PATIENCE_MS);
try {
  const page = context.pages()[0] || (await context.newPage());
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));

  await page.goto(url);
  await page.locator("#login").waitFor({ state: "visible" });

  // A wrong credential is refused, and the page says so.
  await page.fill("#token", "not-the-credential-at-all-0123456789");
  await page.click("#login button[type=submit]");
  await page.locator("#login-error", { hasText: "refused" }).waitFor();
  expect(await page.locator("#board").isHidden(), "the board to stay hidden after a refused credential");

  // The right one opens the board; it is kept in session storage and never put in the URL.
  await page.fill("#token", token);
  await page.click("#login button[type=submit]");
  await page.locator("#board").waitFor({ state: "visible" });
  expect(!page.url().includes(token), "no credential in the URL");
  expect((await page.evaluate(() => sessionStorage.getItem("smartflow.serviceToken"))) === token,
    "the credential in session storage");

  // The counts and the dead list with its reason.
  await page.waitForFunction((n) => {
    const td = document.querySelector('#outbox-stats tr[data-status="dead"] td:nth-child(3)');
    return td && Number(td.textContent) === n;
  }, deadRows);
  await page.locator("#outbox-reasons td", { hasText: reason }).first().waitFor();
  expect((await page.locator("#outbox-dead tbody tr[data-id]").count()) === deadRows,
    `${deadRows} rows in the dead list`);
  // Rates come from successive reads: a second poll fills the column with numbers.
  await page.waitForFunction(() => {
    const td = document.querySelector('#outbox-stats tr[data-status="dead"] td:nth-child(4)');
    return td && /^[+-]?\d/.test(td.textContent);
  });

  // Redrive: the dry run is shown first and changes nothing.
  await page.click("#redrive-all");
  await page.locator("#plan").waitFor({ state: "visible" });
  const summary = await page.locator("#plan-summary").textContent();
  expect(summary.includes(`would send ${deadRows} dead rows`), `the dry run's count, got "${summary}"`);
  const listed = (await page.locator("#plan-ids").textContent()).replace("ids: ", "").split(", ");
  expect(listed.length === deadRows, `the dry run to list ${deadRows} ids, got ${listed.length}`);
  const stillDead = await page.evaluate(async (credential) => {
    const r = await fetch("/admin/outbox/stats", { headers: { "X-Smartflow-Service-Token": credential } });
    return (await r.json()).tables[0].rows.dead;
  }, token);
  expect(stillDead === deadRows, `the dry run to change nothing (dead: ${stillDead})`);
  await page.screenshot({ path: join(screenshots, "dashboard-dry-run.png"), fullPage: true });

  // Cancelling does nothing either; then the confirmed redrive moves the rows.
  await page.click("#plan-cancel");
  expect(await page.locator("#plan").isHidden(), "the plan to close on cancel");
  await page.click("#redrive-all");
  await page.locator("#plan-summary", { hasText: "would send" }).waitFor();
  await page.click("#plan-confirm");
  await page.locator("#plan").waitFor({ state: "hidden" });
  await page.locator("#notice", { hasText: `Redriven: ${deadRows} rows.` }).waitFor();

  // Live, without reloading: the dead rows leave the list and reach their consumer.
  await page.waitForFunction((n) => {
    const cell = (s) => document.querySelector(`#outbox-stats tr[data-status="${s}"] td:nth-child(3)`);
    return cell("dead") && Number(cell("dead").textContent) === 0 && Number(cell("consumed").textContent) >= n;
  }, deadRows);
  await page.locator("#outbox-dead td", { hasText: "no dead rows" }).waitFor();
  expect((await countOf(page, "dead")) === 0, "no dead row left");

  // A purge shows its dry run too; with nothing old enough there is nothing to confirm.
  await page.fill("#outbox-purge-age", "30d");
  await page.click("#outbox-purge");
  await page.locator("#plan-summary", { hasText: "nothing to purge" }).waitFor();
  expect(await page.locator("#plan-confirm").isDisabled(), "no confirmation for an empty purge");
  await page.click("#plan-cancel");
  // A bad age is the API's 400, shown on the board.
  await page.fill("#outbox-purge-age", "soon");
  await page.click("#outbox-purge");
  await page.locator("#notice", { hasText: "bad duration" }).waitFor();

  await page.screenshot({ path: join(screenshots, "dashboard.png"), fullPage: true });
  expect(pageErrors.length === 0, `no script errors, got ${pageErrors.join("; ")}`);

  // Logging out forgets the credential.
  await page.click("#logout");
  await page.locator("#login").waitFor({ state: "visible" });
  expect((await page.evaluate(() => sessionStorage.getItem("smartflow.serviceToken"))) === null,
    "the credential gone after logging out");
  console.log(`dashboard: ok (${deadRows} dead rows redriven; screenshots in ${screenshots})`);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
