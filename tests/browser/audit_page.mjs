// Opens a `sidekey audit --html` page from disk in Debian's chromium
// (headless, through playwright-core; never a downloaded browser), and
// prints what a reviewer sees as one JSON line for the Rust test
// (crates/cli/tests/audit_html.rs) to assert on.
//
// usage: node tests/browser/audit_page.mjs PAGE.html SHOT_DIR [FILTER_TEXT]
// env:   SIDEKEY_NODE_MODULES  the node_modules holding playwright-core
//        CHROMIUM              the browser (default /usr/bin/chromium)
import { createRequire } from "node:module";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [page_path, shots, filter = "web-2"] = process.argv.slice(2);
if (!page_path || !shots) {
  console.error("usage: node audit_page.mjs PAGE.html SHOT_DIR [FILTER_TEXT]");
  process.exit(2);
}
const modules = process.env.SIDEKEY_NODE_MODULES;
if (!modules) {
  console.error("SIDEKEY_NODE_MODULES is not set (scripts/venv installs playwright-core into .venv/node)");
  process.exit(2);
}
const require = createRequire(path.join(modules, "index.js"));
const { chromium } = require("playwright-core");

const profile = mkdtempSync(path.join(tmpdir(), "sidekey-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
  ],
  viewport: { width: 1280, height: 900 },
});
const requests = [];
context.on("request", (r) => requests.push(r.url()));
const failed = [];
context.on("requestfailed", (r) => failed.push(r.url()));
await context.addInitScript(() => {
  window.__violations = [];
  document.addEventListener("securitypolicyviolation", (e) =>
    window.__violations.push(e.violatedDirective + " " + e.blockedURI));
});
const page = context.pages()[0] || (await context.newPage());
const errors = [];
page.on("pageerror", (e) => errors.push(String(e)));
const url = pathToFileURL(path.resolve(page_path)).href;
const t0 = Date.now();
await page.goto(url, { waitUntil: "load" });
const load_ms = Date.now() - t0;
await page.screenshot({ path: path.join(shots, "audit-page.png"), fullPage: false });

const visible = () => page.$$eval("table.t tbody tr", (rows) => rows.filter((r) => !r.hidden).length);
const out = { url, load_ms };
out.banners_broken = await page.$$eval(".banner.broken", (b) => b.map((x) => x.textContent));
out.banners_ok = await page.$$eval(".banner.ok", (b) => b.map((x) => x.textContent));
out.denial_rows = await page.$$eval("table.denials tbody tr", (rows) =>
  rows.map((r) => Array.from(r.cells, (c) => c.textContent)));
out.fetched = await page.$$eval("table.fetched tbody tr", (rows) =>
  rows.map((r) => Array.from(r.cells, (c) => c.textContent)));
out.scripts = await page.$$eval("script", (s) => s.length);
out.rows_before = await visible();
// Keyboard: Tab reaches the filter box first, then type into it.
await page.keyboard.press("Tab");
out.focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
await page.locator("#q").fill(filter);
out.rows_after = await visible();
out.count_text = await page.textContent("#count");
await page.screenshot({ path: path.join(shots, "audit-page-filtered.png"), fullPage: true });
await page.locator("#q").fill("");
await page.selectOption("#o", "denied");
out.rows_denied = await visible();
await page.selectOption("#o", "");
// Sorting: the first header button of the all-records table, twice.
const first = () => page.$eval("table.all tbody tr td", (c) => c.textContent);
await page.locator("table.all button.sort").first().click();
out.sorted_asc_first = await first();
await page.locator("table.all button.sort").first().click();
out.sorted_desc_first = await first();
await page.emulateMedia({ media: "print" });
out.controls_printed = await page.$eval("#controls", (c) => getComputedStyle(c).display !== "none");
await page.screenshot({ path: path.join(shots, "audit-page-print.png"), fullPage: false });
out.violations = await page.evaluate(() => window.__violations);
out.errors = errors;
out.requests = requests;
out.failed = failed;
await context.close();
rmSync(profile, { recursive: true, force: true });
console.log(JSON.stringify(out));
