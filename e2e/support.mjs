// What every browser test of copiste's pages shares: the environment
// given by e2e/run, Debian's Chromium, logged-in sessions, and the checks
// every page must pass (French words only, styled, no sideways scroll at
// 390 px, a label on every input, no serious or critical axe-core
// violation, the protective headers).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const env = (name) => {
  const v = process.env[name];
  assert.ok(v, `${name} is set by e2e/run`);
  return v;
};

export const BASE = env("E2E_BASE");
export const SHOTS = env("E2E_SHOTS");

/// axe-core's script, evaluated inside the page under test by the tests
/// only (never served by copiste): evaluation by the browser's debugging
/// protocol is not subject to the page's Content-Security-Policy.
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

export async function launch() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
    // launch() gives the browser a fresh temporary profile directory of
    // its own, removed when it closes.
  });
}

/// A fresh page at 1280x800 (unless `viewport`), logged in with `token`
/// (unless null). Content-Security-Policy violations are collected in
/// `page.cspViolations`.
export async function session(browser, token, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  page.cspViolations = [];
  page.on("console", (message) => {
    if (/Content Security Policy/i.test(message.text())) page.cspViolations.push(message.text());
  });
  if (token) {
    await page.goto(`${BASE}/connexion`);
    await page.fill("#cle", token);
    await page.click("button[type=submit]");
    try {
      await page.waitForURL(`${BASE}/examens`);
    } catch (error) {
      // Where the login went instead, and what that page says.
      const said = await page.textContent("body", { timeout: 1_000 }).catch(() => "(no page)");
      throw new Error(`the login did not land on /examens but on ${page.url()}: ${said.replace(/\s+/g, " ").slice(0, 400)}`, {
        cause: error,
      });
    }
  }
  return page;
}

export const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

/// English words that must never reach a user: job states and kinds,
/// actors, and the words of parsers' and programs' errors.
export const ENGLISH = [
  "queued",
  "running",
  "succeeded",
  "failed",
  "dead",
  "cancelled",
  "closure",
  "bulk-render",
  "export-retry",
  "harmonisation-validation",
  "nightly-closure",
  "housekeeping",
  "noop",
  "establishment",
  "coordinator",
  "scheduler",
  "error",
  "request",
  "missing field",
  "not found",
  "invalid",
  "deserialize",
  "pending",
  "rejected",
  "accepted",
  "could not",
  "and \\d+ more",
  "nothing to search",
  "UUID",
  "unknown",
  "UTC",
  "bytes",
  "candidat\\(s\\)",
];
const ENGLISH_RE = new RegExp(`(^|[^\\p{L}\\-])(${ENGLISH.join("|")})(?=$|[^\\p{L}\\-])`, "iu");

/// Checks the page shown now. `response` is its navigation's answer
/// (for the headers); `authenticated`: a logged-in page (no-store).
export async function checkPage(page, response, { authenticated = true } = {}) {
  const url = page.url();
  // Styled: copiste's layout, whatever the status.
  const styled = await page.evaluate(
    () => !!document.querySelector('link[rel=stylesheet][href="/static/copiste.css"]') && !!document.querySelector("main h1"),
  );
  assert.ok(styled, `${url}: an unstyled page`);
  // French only.
  const text = await page.evaluate(() => document.body.innerText);
  const english = text.match(ENGLISH_RE);
  assert.equal(english, null, `${url}: English word ${JSON.stringify(english?.[2])} in ${JSON.stringify(text.slice(Math.max(0, (english?.index ?? 0) - 60), (english?.index ?? 0) + 60))}`);
  // Every input has a label.
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input, select, textarea")]
      .filter((el) => !["hidden", "submit", "button", "reset"].includes(el.type))
      .filter((el) => el.labels.length === 0 && !el.getAttribute("aria-label") && !el.getAttribute("aria-labelledby"))
      .map((el) => el.outerHTML),
  );
  assert.deepEqual(unlabelled, [], `${url}: inputs without a label`);
  // axe-core: no serious or critical violation.
  await page.evaluate(AXE);
  const violations = await page.evaluate(async () => {
    // eslint-disable-next-line no-undef
    const result = await axe.run(document, { resultTypes: ["violations"] });
    return result.violations
      .filter((v) => v.impact === "serious" || v.impact === "critical")
      .map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(" ")).join(", ")}`);
  });
  assert.deepEqual(violations, [], `${url}: axe-core violations`);
  // The protective headers.
  if (response) {
    const h = response.headers();
    const csp = h["content-security-policy"] ?? "";
    assert.match(csp, /frame-ancestors 'none'/, `${url}: CSP ${csp}`);
    assert.match(csp, /script-src 'self'/, `${url}: CSP ${csp}`);
    assert.match(csp, /style-src 'self'/, `${url}: CSP ${csp}`);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/, `${url}: CSP ${csp}`);
    assert.equal(h["x-content-type-options"], "nosniff", `${url}: X-Content-Type-Options`);
    assert.equal(h["referrer-policy"], "same-origin", `${url}: Referrer-Policy`);
    if (authenticated) assert.match(h["cache-control"] ?? "", /no-store/, `${url}: Cache-Control`);
  }
  assert.deepEqual(page.cspViolations, [], `${url}: the page broke its own policy`);
  // No sideways scroll at a phone's width.
  const size = page.viewportSize();
  await page.setViewportSize({ width: 390, height: 844 });
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  await page.setViewportSize(size);
  assert.ok(width <= 390, `${url}: ${width} px wide at 390 px`);
}
