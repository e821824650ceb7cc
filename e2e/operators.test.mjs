// The operators' pages (coordinator and admin): the jobs list with its
// counts, live refresh and bulk retry, and the academy's view with its
// relaunch. Each page passes the checks of support.mjs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { BASE, env, launch, session as open, shot, checkPage } from "./support.mjs";

const PHILO = "BAC26-PHILO";

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

const session = (token, viewport) => open(browser, token, viewport);

/// Goes to `path` and checks the page.
async function visit(page, path) {
  const response = await page.goto(`${BASE}${path}`);
  assert.equal(response.status(), 200, `${path}: ${response.status()}`);
  await checkPage(page, response);
  return response;
}

/// Sets whether the tab is hidden, as the browser would tell the page.
async function hide(page, hidden) {
  await page.evaluate((h) => {
    Object.defineProperty(document, "hidden", { configurable: true, get: () => h });
    document.dispatchEvent(new Event("visibilitychange"));
  }, hidden);
}

test("a coordinator follows the academy's exams and relaunches one after a confirmation", async () => {
  const page = await session(env("E2E_COORDINATOR"));
  await Promise.all([page.waitForNavigation(), page.click("nav[aria-label=Menu] >> text=Académie")]);
  assert.equal(new URL(page.url()).pathname, "/academie");
  await visit(page, "/academie");
  const row = page.locator("table.academy tbody tr", { hasText: PHILO });
  assert.equal(await row.count(), 1);
  // The closed exam: its units closed, none with errors, none left.
  assert.notEqual(await row.locator("td[data-label='Clôturés']").textContent(), "0");
  assert.equal(await row.locator("td[data-label='Non clôturés']").textContent(), "0");
  await shot(page, "academy");
  // "Erreurs seulement": the exam without errors is hidden, and said so.
  await page.check("#f-erreurs");
  await Promise.all([page.waitForNavigation(), page.click("form.filters button[type=submit]")]);
  assert.match(page.url(), /erreurs=1/);
  await visit(page, new URL(page.url()).pathname + new URL(page.url()).search);
  assert.equal(await page.locator("table.academy tbody tr", { hasText: PHILO }).count(), 0);
  assert.match(await page.textContent("main"), /sans erreur masqué/);
  // "Relancer" asks first, saying which exam and academy.
  await visit(page, "/academie");
  await Promise.all([page.waitForNavigation(), row.locator("button").click()]);
  await checkPage(page, null);
  const asked = await page.textContent("main");
  assert.match(asked, new RegExp(`Examen : ${PHILO}`));
  assert.match(asked, /Académie : /);
  await Promise.all([page.waitForNavigation(), page.click("form.confirm button[type=submit]")]);
  await checkPage(page, null);
  assert.match(await page.textContent("h1"), /Relance/);
  await page.context().close();
});

test("the jobs list: clickable counts, live refresh paused while hidden", async () => {
  const page = await session(env("E2E_COORDINATOR"));
  await visit(page, "/travaux");
  for (const column of ["Examen", "Établissement", "Demandé par", "Créé le"]) {
    assert.equal(await page.locator(`table.jobs th`, { hasText: column }).count(), 1, column);
  }
  // The refresh runs while the tab is shown, pauses while it is hidden,
  // and refreshes at once when it is shown again.
  assert.equal(await page.evaluate(() => document.documentElement.dataset.refreshing), "on");
  await hide(page, true);
  assert.equal(await page.evaluate(() => document.documentElement.dataset.refreshing), "paused");
  const before = await page.evaluate(() => Number(document.documentElement.dataset.refreshed || 0));
  await hide(page, false);
  await page.waitForFunction((n) => Number(document.documentElement.dataset.refreshed || 0) > n, before);
  assert.equal(await page.evaluate(() => document.documentElement.dataset.refreshing), "on");
  // A count is a link to its status.
  await Promise.all([page.waitForNavigation(), page.click("ul.counts a >> text=/terminé :/")]);
  assert.match(page.url(), /status=succeeded/);
  assert.equal(await page.locator("ul.counts a[aria-current]").count(), 1);
  await page.context().close();
});

test("an admin retries the dead jobs of a filter at once, after a confirmation", async () => {
  const page = await session(env("E2E_ADMIN"));
  const id = env("E2E_DEAD_JOB");
  // The dead job of the run: wait until it died.
  await page.goto(`${BASE}/travaux/${id}`);
  await page.waitForFunction(() => document.querySelector("[data-job-status]").textContent.includes("en échec"), null, {
    timeout: 30_000,
  });
  await visit(page, "/travaux?status=dead&kind=noop");
  await shot(page, "jobs-dead");
  const bulk = page.locator("form[action='/travaux/relance-groupee'] button");
  assert.match(await bulk.textContent(), /Relancer les travaux en échec de ce filtre \(\d+\)/);
  await Promise.all([page.waitForNavigation(), bulk.click()]);
  await checkPage(page, null);
  const asked = await page.textContent("main");
  assert.match(asked, /\d+ travail en échec à relancer|\d+ travaux en échec à relancer/);
  assert.match(asked, /travail d'essai : \d+ trava/);
  await shot(page, "jobs-retry-confirm");
  await Promise.all([page.waitForNavigation(), page.click("form.confirm button[type=submit]")]);
  await checkPage(page, null);
  assert.match(await page.textContent("main"), /\d+ travail relancé|\d+ travaux relancés/);
  // The job is queued again and dies again (a permanent failure): wait
  // for it, so that the other tests find it dead.
  await page.goto(`${BASE}/travaux/${id}`);
  assert.match(await page.textContent("table.events"), /relancé à la main/);
  await page.waitForFunction(() => document.querySelector("[data-job-status]").textContent.includes("en échec"), null, {
    timeout: 30_000,
  });
  // Admin looks at any academy.
  await visit(page, `/academie?academie=${encodeURIComponent(env("E2E_ACADEMY"))}`);
  await page.context().close();
});

test("an establishment has no academy view and no bulk retry", async () => {
  const page = await session(env("E2E_ESTABLISHMENT"));
  assert.equal(await page.locator("nav[aria-label=Menu] >> text=Académie").count(), 0);
  const response = await page.goto(`${BASE}/academie`);
  assert.equal(response.status(), 403);
  await checkPage(page, response);
  await page.goto(`${BASE}/travaux`);
  assert.equal(await page.locator("form[action='/travaux/relance-groupee']").count(), 0);
  await page.context().close();
});
