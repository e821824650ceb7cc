// copiste's pages in headless Chromium (Debian's, never a downloaded
// browser), as an establishment, a coordinator and an admin use them.
// Started by e2e/run, which serves a session and passes E2E_* variables.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";
import { join } from "node:path";
import { execFileSync } from "node:child_process";

const env = (name) => {
  const v = process.env[name];
  assert.ok(v, `${name} is set by e2e/run`);
  return v;
};
const BASE = env("E2E_BASE");
const SHOTS = env("E2E_SHOTS");
const UAI = env("E2E_UAI");
const OTHER_UAI = env("E2E_OTHER_UAI");
const PHILO = "BAC26-PHILO";
const E3C = "BAC26-E3C-HG";
const MATHS_H = "BAC26-MATHS-H";

let browser;

before(async () => {
  browser = await chromium.launch({
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
});

after(async () => {
  await browser?.close();
});

/// A fresh page at 1280x800, logged in with `token` (unless null).
async function session(token, viewport = { width: 1280, height: 800 }) {
  const context = await browser.newContext({ viewport, acceptDownloads: true });
  const page = await context.newPage();
  if (token) {
    await page.goto(`${BASE}/connexion`);
    await page.fill("#cle", token);
    await page.click("button[type=submit]");
    await page.waitForURL(`${BASE}/examens`);
  }
  return page;
}

const shot = (page, name) => page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });

test("a wrong token gets a message and no session", async () => {
  const page = await session(null);
  await page.goto(`${BASE}/examens`);
  assert.equal(new URL(page.url()).pathname, "/connexion");
  await page.fill("#cle", "cps_not_a_token");
  await page.click("button[type=submit]");
  await page.waitForSelector(".error");
  assert.match(await page.textContent(".error"), /inconnue, révoquée ou expirée/);
  await shot(page, "login-refused");
  await page.context().close();
});

test("an establishment finds Hélène-like names as it types and opens a copy", async () => {
  const page = await session(env("E2E_ESTABLISHMENT"));
  await page.goto(`${BASE}/examens/${PHILO}`);
  await shot(page, "establishment-exam");
  assert.ok((await page.textContent("table.closure")).includes(UAI));
  assert.ok(!(await page.textContent("table.closure")).includes(OTHER_UAI), "only its own unit");
  // Search as you type: results appear without submitting.
  await page.fill("input[name=q]", "a");
  await page.waitForSelector("#results li");
  const first = page.locator("#results li a").first();
  const name = (await first.textContent()).trim();
  // Accents and case do not matter: the same candidate found in upper case
  // without accents.
  const plain = name.split(" ")[0].normalize("NFD").replace(/[\u0300-\u036f]/g, "").toUpperCase();
  await page.fill("input[name=q]", plain);
  await page.waitForFunction(
    (n) => [...document.querySelectorAll("#results li")].some((li) => li.textContent.includes(n)),
    name.split(" ")[0],
  );
  // Open the copy: the viewer's iframe loads the PDF.
  const [pdf] = await Promise.all([
    page.waitForResponse((r) => r.url().includes("/pdf?")),
    page.locator("#results li a").first().click(),
  ]);
  assert.equal(pdf.status(), 200);
  assert.equal(pdf.headers()["content-type"], "application/pdf");
  assert.equal(pdf.headers()["x-content-type-options"], "nosniff");
  await shot(page, "establishment-copy");
  await page.context().close();
});

test("E3C switches are shown fixed, with the reason", async () => {
  const page = await session(env("E2E_ESTABLISHMENT"));
  // Any copy of the E3C exam: the switches are decided by the exam.
  await page.goto(`${BASE}/examens/${E3C}/copies/1`);
  const boxes = page.locator("form.switches input[type=checkbox]");
  assert.equal(await boxes.count(), 3);
  for (let i = 0; i < 3; i++) {
    assert.ok(await boxes.nth(i).isDisabled());
    assert.ok(await boxes.nth(i).isChecked());
  }
  assert.match(await page.textContent("form.switches .reason"), /E3C/);
  await shot(page, "e3c-switches");
  await page.context().close();
});

test("a zip request shows its progress up to 100 % and its link downloads a zip", async () => {
  const page = await session(env("E2E_ESTABLISHMENT"));
  await page.goto(`${BASE}/examens/${PHILO}`);
  await page.click("form[action$='/zip'] button");
  await page.waitForURL(/\/travaux\//);
  const job = page.url();
  // Live progress, then the page reloads with the links.
  await page.waitForSelector("ul a[href*='/downloads/']", { timeout: 60_000 });
  assert.match(await page.textContent("[data-job-status]"), /succeeded/);
  assert.match(await page.textContent("[data-job-percent]"), /100 %/);
  await shot(page, "zip-ready");
  // A finished job's page stays put: it no longer follows the job's events.
  let reloads = 0;
  page.on("framenavigated", (frame) => {
    if (frame === page.mainFrame()) reloads += 1;
  });
  await page.waitForTimeout(1_500);
  assert.equal(reloads, 0, "the finished job's page reloaded itself");
  const href = await page.getAttribute("ul a[href*='/downloads/']", "href");
  const response = await page.request.get(href);
  assert.equal(response.status(), 200);
  const body = await response.body();
  assert.equal(body.subarray(0, 2).toString(), "PK", "a zip");
  const entries = body.toString("latin1").split("PK\x01\x02").length - 1;
  assert.ok(entries >= 1, "the zip holds the transmitted copies");
  // A second click lands on the same job.
  await page.goto(`${BASE}/examens/${PHILO}`);
  await page.click("form[action$='/zip'] button");
  await page.waitForLoadState();
  assert.ok(page.url() === job || (await page.textContent("h1")).includes("Zip prêt"));
  await page.context().close();
});

test("another establishment's page is refused with a 403 page", async () => {
  const page = await session(env("E2E_ESTABLISHMENT"));
  const response = await page.goto(`${BASE}/examens/${PHILO}/candidats?uai=${OTHER_UAI}&q=a`);
  assert.equal(response.status(), 403);
  assert.match(await page.textContent("h1"), /Accès refusé/);
  await shot(page, "forbidden");
  await page.context().close();
});

test("a coordinator launches a closure and sees the table settle", async () => {
  const page = await session(env("E2E_COORDINATOR"));
  await page.goto(`${BASE}/examens/${E3C}`);
  await page.click("form[action$='/cloture'] button");
  await page.waitForSelector("text=travail lancé");
  await page.goto(`${BASE}/examens/${E3C}`);
  // The table refreshes itself until every unit of the academy is closed.
  await page.waitForFunction(
    () => {
      const cells = [...document.querySelectorAll("table.closure td.state")];
      return cells.length > 0 && cells.every((c) => c.textContent.trim() === "clôturé");
    },
    null,
    { timeout: 60_000 },
  );
  await shot(page, "coordinator-exam");
  await page.context().close();
});

test("after publication the relaunch button is disabled with the reason", async () => {
  execFileSync(env("E2E_BIN"), ["publish", "--exam", E3C, "--by", "e2e"]);
  const page = await session(env("E2E_COORDINATOR"));
  await page.goto(`${BASE}/examens/${E3C}`);
  const relaunch = page.locator("form[action$='/relance'] button");
  assert.ok(await relaunch.isDisabled());
  assert.match(await page.textContent(".actions .reason"), /publiés/);
  assert.match(await page.textContent(".notice"), /publiés par Cyclades/);
  await shot(page, "published");
  await page.context().close();
});

test("a coordinator validates a harmonisation pass", async () => {
  const page = await session(env("E2E_COORDINATOR"));
  await page.goto(`${BASE}/examens/${MATHS_H}`);
  await Promise.all([page.waitForNavigation(), page.click("form[action$='/harmonisation'] button")]);
  // A pass, or the rule's refusal with its reason (ungraded copies): never
  // an error of copiste's.
  const title = (await page.textContent("h1")).trim();
  assert.ok(["Harmonisation", "Refusé"].includes(title), title);
  if (title === "Harmonisation") {
    assert.match(await page.textContent("main"), /passe \d+ : \d+ copies validées|rien de nouveau/);
  }
  await shot(page, "harmonisation");
  await page.context().close();
});

test("a harmonisation pass takes its numéros from an uploaded file", async () => {
  const page = await session(env("E2E_COORDINATOR"));
  await page.goto(`${BASE}/examens/${MATHS_H}`);
  const form = page.locator("form[action$='/harmonisation']");
  await form.locator("input[value=list]").check();
  await form.locator("input[type=file]").setInputFiles({
    name: "numeros.txt",
    mimeType: "text/plain",
    buffer: Buffer.from("# copies revues en commission\nZZ-INCONNU-42\n\n"),
  });
  await Promise.all([page.waitForNavigation(), form.locator("button").click()]);
  // The numéro read from the file is named in the answer (it is no
  // candidate of the exam), and nothing was validated.
  assert.match(await page.textContent("main"), /ZZ-INCONNU-42/);
  assert.doesNotMatch(await page.textContent("main"), /copies validées/);
  await shot(page, "harmonisation-file");
  await page.context().close();
});

test("an admin retries a dead job", async () => {
  const page = await session(env("E2E_ADMIN"));
  const id = env("E2E_DEAD_JOB");
  await page.goto(`${BASE}/travaux/${id}`);
  await page.waitForFunction(() => document.querySelector("[data-job-status]").textContent.includes("dead"), null, {
    timeout: 30_000,
  });
  await page.click("form[action$='/relance'] button");
  await page.waitForURL(`${BASE}/travaux/${id}`);
  const history = await page.textContent("table");
  assert.match(history, /retried|retry/);
  await shot(page, "job-retried");
  await page.goto(`${BASE}/travaux`);
  await shot(page, "jobs");
  await page.context().close();
});

test("pages are usable on a phone's width", async () => {
  const page = await session(env("E2E_ESTABLISHMENT"), { width: 390, height: 844 });
  await page.goto(`${BASE}/examens/${PHILO}`);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 400, `no horizontal scroll (${width}px)`);
  await shot(page, "phone");
  await page.context().close();
});
