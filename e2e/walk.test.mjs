// Every page each role can reach, walked after pages.test.mjs has built a
// zip, closed and published an exam and retried a dead job: each page
// (and each error page) must pass the checks of support.mjs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { BASE, env, launch, session, checkPage } from "./support.mjs";

const PHILO = "BAC26-PHILO";
const UAI = env("E2E_UAI");

let browser;
before(async () => {
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/// Addresses the walk does not open as pages: files, event streams, the
/// download links (checked by the zip test) and logout.
const skipped = (url) =>
  url.origin !== BASE ||
  /\/pdf$|\/evenements$|^\/downloads\/|^\/deconnexion|^\/static\//.test(url.pathname);

/// Opens `start` and every page linked from it, breadth first, at most
/// `limit` pages and 3 pages per job or copy pattern; checks each.
async function walk(page, starts, limit = 40) {
  const seen = new Set();
  const patterns = new Map();
  const queue = [...starts];
  let checked = 0;
  while (queue.length > 0 && checked < limit) {
    const href = queue.shift();
    const url = new URL(href, BASE);
    if (skipped(url)) continue;
    const key = url.pathname + url.search;
    if (seen.has(key)) continue;
    seen.add(key);
    const pattern = url.pathname.replace(/[0-9a-f-]{36}/, "ID").replace(/\/copies\/[^/]+/, "/copies/N") + (url.search ? "?" : "");
    patterns.set(pattern, (patterns.get(pattern) ?? 0) + 1);
    if (patterns.get(pattern) > 3) continue;
    const response = await page.goto(url.href);
    await checkPage(page, response);
    checked += 1;
    const links = await page.evaluate(() => [...document.querySelectorAll("a[href]")].map((a) => a.href));
    queue.push(...links);
  }
  return checked;
}

/// Error pages any logged-in role can reach by typing an address.
const errors = [
  "/inexistant",
  `/examens/${PHILO}/candidats`,
  `/examens/${PHILO}/candidats?uai=07&q=a`,
  `/examens/${PHILO}/candidats?uai=${UAI}&q=--`,
  "/examens/INCONNU",
  "/travaux?apres=99999999999999999999",
  "/travaux?status=nimporte",
  "/travaux/pas-un-travail",
  "/travaux/00000000-0000-7000-8000-000000000000",
  `/examens/${PHILO}/cloture`,
  `/examens/${PHILO}/copies/INCONNU`,
];

for (const role of ["ESTABLISHMENT", "COORDINATOR", "ADMIN"]) {
  test(`every page an ${role.toLowerCase()} reaches is French, labelled, accessible, protected and fits a phone`, async () => {
    const page = await session(browser, env(`E2E_${role}`));
    const starts = [
      "/examens",
      "/travaux",
      `/examens/${PHILO}/candidats?uai=${UAI}&q=a`,
      ...(role === "ESTABLISHMENT" ? [] : ["/academie", "/academie?erreurs=1", "/travaux?status=dead"]),
    ];
    const checked = await walk(page, starts);
    assert.ok(checked >= 4, `${checked} pages walked`);
    for (const path of errors) {
      const response = await page.goto(`${BASE}${path}`);
      assert.ok(response.status() >= 400, `${path}: ${response.status()}`);
      await checkPage(page, response);
    }
    await page.context().close();
  });
}

test("the login page and a logged-out error page pass the same checks", async () => {
  const page = await session(browser, null);
  let response = await page.goto(`${BASE}/connexion`);
  await checkPage(page, response, { authenticated: false });
  assert.equal(await page.evaluate(() => document.activeElement?.id), "cle", "the key field has the focus");
  response = await page.goto(`${BASE}/inexistant`);
  assert.equal(response.status(), 404);
  await checkPage(page, response, { authenticated: false });
  await page.context().close();
});
