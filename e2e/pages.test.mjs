// copiste's pages in headless Chromium (Debian's, never a downloaded
// browser), as an establishment, a coordinator and an admin use them.
// Started by e2e/run, which serves a session and passes E2E_* variables.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { BASE, env, launch, session as open, shot, checkPage } from "./support.mjs";

const UAI = env("E2E_UAI");
const OTHER_UAI = env("E2E_OTHER_UAI");
const OTHER_NUMERO = env("E2E_OTHER_NUMERO");
const PHILO = "BAC26-PHILO";
const E3C = "BAC26-E3C-HG";
const MATHS_H = "BAC26-MATHS-H";

let browser;

before(async () => {
  browser = await launch();
});

after(async () => {
  await browser?.close();
});

const session = (token, viewport) => open(browser, token, viewport);

/// Clicks `selector`; on a confirmation page, confirms. Returns the
/// confirmation page's text (empty when none was asked).
async function confirmed(page, selector) {
  await Promise.all([page.waitForNavigation(), page.click(selector)]);
  const form = page.locator("form.confirm");
  if ((await form.count()) === 0) return "";
  const text = await page.textContent("main");
  await Promise.all([page.waitForNavigation(), form.locator("button[type=submit]").click()]);
  return text;
}

/// The names of a zip's entries, read from its central directory.
function zipEntryNames(zip) {
  const names = [];
  for (let at = zip.indexOf("PK\x01\x02"); at >= 0; at = zip.indexOf("PK\x01\x02", at + 46)) {
    const length = zip.readUInt16LE(at + 28);
    names.push(zip.subarray(at + 46, at + 46 + length).toString("utf8"));
  }
  return names;
}

const ZIP_BUTTON = /^Télécharger (la partie \d+ )?\(\d+(,\d)? (o|ko|Mo|Go), jusqu'au \d\d\/\d\d à \d\d:\d\d\)$/;

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
  // The exam list says where each exam's closure stands (e2e/run closed
  // PHILO: this establishment's one unit).
  const philo = page.locator("tr", { has: page.locator(`a[href='/examens/${PHILO}']`) });
  assert.equal((await philo.locator("td[data-label='Clôture']").textContent()).trim(), "1 clôturé sur 1");
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
  // The way back: the copy's breadcrumbs lead to its exam and the list.
  assert.equal(await page.locator(`nav.crumbs a[href='/examens/${PHILO}']`).count(), 1);
  assert.equal(await page.locator("nav.crumbs a[href='/examens']").count(), 1);
  await shot(page, "establishment-copy");
  await page.context().close();
});

test("a zip request shows its progress up to 100 % and its link downloads a zip", async () => {
  const page = await session(env("E2E_ESTABLISHMENT"));
  await page.goto(`${BASE}/examens/${PHILO}`);
  await page.click("form[action$='/zip'] button");
  await page.waitForURL(/\/travaux\//);
  const job = page.url();
  // An establishment may neither retry nor cancel: no such button.
  assert.equal(await page.locator("form[action$='/relance'], form[action$='/annulation']").count(), 0);
  // Live progress, then the page reloads with the download buttons.
  await page.waitForSelector("a.button[href*='/downloads/']", { timeout: 60_000 });
  assert.match(await page.textContent("[data-job-status]"), /terminé/);
  assert.match(await page.textContent("[data-job-percent]"), /100 %/);
  await shot(page, "zip-ready");
  // A finished job's page stays put: it no longer follows the job's
  // events (the script follows, and reloads on the last event, only a
  // page with a [data-job-events] box).
  await page.waitForLoadState();
  assert.equal(await page.locator("[data-job-events]").count(), 0, "the finished job's page follows its events");
  const button = page.locator("a.button[href*='/downloads/']").first();
  assert.match((await button.textContent()).trim(), ZIP_BUTTON);
  // On the local store the link is relative to the server that drew the
  // page.
  assert.match(await button.getAttribute("href"), /^\/downloads\//);
  const [download] = await Promise.all([page.waitForEvent("download"), button.click()]);
  const body = await (await import("node:fs/promises")).readFile(await download.path());
  assert.equal(body.subarray(0, 2).toString(), "PK", "a zip");
  // One PDF per transmitted copy of the establishment, and the manifest.
  const names = zipEntryNames(body);
  assert.equal(names.filter((n) => n.endsWith(".pdf")).length, Number(env("E2E_PHILO_COPIES")), names.join(", "));
  assert.ok(names.includes("manifest.csv"), names.join(", "));
  // The exam page now offers the built zip as a button.
  await page.goto(`${BASE}/examens/${PHILO}`);
  const onExam = page.locator("a.button[href*='/downloads/']").first();
  assert.match((await onExam.textContent()).trim(), ZIP_BUTTON);
  await shot(page, "establishment-exam-zip");
  // A second request, the zip being built, lands on the built zip (the
  // same link), not on a new job.
  const link = await onExam.getAttribute("href");
  await Promise.all([page.waitForNavigation(), page.click("form[action$='/zip'] button")]);
  assert.notEqual(page.url(), job);
  assert.ok(!/\/travaux\//.test(page.url()), page.url());
  assert.equal((await page.textContent("h1")).trim(), "Zip prêt");
  assert.equal(await page.locator("a.button[href*='/downloads/']").first().getAttribute("href"), link);
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

test("another establishment's copy answers a 403 page, an unknown one a 404 page, never the viewer", async () => {
  const page = await session(env("E2E_ESTABLISHMENT"));
  let response = await page.goto(`${BASE}/examens/${PHILO}/copies/${OTHER_NUMERO}`);
  assert.equal(response.status(), 403);
  assert.match(await page.textContent("h1"), /Accès refusé/);
  assert.equal(await page.locator("iframe").count(), 0, "no viewer");
  response = await page.goto(`${BASE}/examens/${PHILO}/copies/ZZ-INCONNU`);
  assert.equal(response.status(), 404);
  assert.equal(await page.locator("iframe").count(), 0, "no viewer");
  await page.context().close();
});

test("a coordinator launches a closure after a confirmation and sees the table settle", async () => {
  const page = await session(env("E2E_COORDINATOR"));
  await page.goto(`${BASE}/examens/${E3C}`);
  const asked = await confirmed(page, "form[action$='/cloture'] button");
  // The confirmation says what will be sent: which exam, how many copies
  // and establishments.
  assert.match(asked, new RegExp(E3C));
  assert.match(asked, /\d+ copies? .*\d+ établissements?|\d+ établissements? .*\d+ copies?/s);
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

test("E3C switches are shown fixed, with the reason", async () => {
  const page = await session(env("E2E_ESTABLISHMENT"));
  // A transmitted copy of the E3C exam (closed by the coordinator above).
  await page.goto(`${BASE}/examens/${E3C}/copies/${env("E2E_E3C_NUMERO")}`);
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

test("a harmonisation file with the radio left on all copies never validates every copy", async () => {
  const page = await session(env("E2E_COORDINATOR"));
  await page.goto(`${BASE}/examens/${MATHS_H}`);
  const form = page.locator("form[action$='/harmonisation']");
  assert.ok(await form.locator("input[value=all]").isChecked());
  await form.locator("input[type=file]").setInputFiles({
    name: "numeros.txt",
    mimeType: "text/plain",
    buffer: Buffer.from("ZZ-INCONNU-7\n"),
  });
  await confirmed(page, "form[action$='/harmonisation'] button");
  const main = await page.textContent("main");
  // Only the file's copy was asked for: it is named (unknown), nothing
  // was validated.
  assert.match(main, /ZZ-INCONNU-7/);
  assert.doesNotMatch(main, /copies validées/);
  await page.context().close();
});

test("a typed list and all copies together are refused with the reason", async () => {
  const page = await session(env("E2E_COORDINATOR"));
  await page.goto(`${BASE}/examens/${MATHS_H}`);
  const form = page.locator("form[action$='/harmonisation']");
  // Typed first (the page's script then chooses "these copies"), then
  // the radio put back on all copies: the server refuses the mix.
  await form.locator("textarea").fill("ZZ-INCONNU-8");
  await form.locator("input[value=all]").check();
  await confirmed(page, "form[action$='/harmonisation'] button");
  const main = await page.textContent("main");
  assert.match(main, /toutes les copies/);
  assert.doesNotMatch(main, /copies validées/);
  await page.context().close();
});

test("a coordinator validates a harmonisation pass", async () => {
  const page = await session(env("E2E_COORDINATOR"));
  await page.goto(`${BASE}/examens/${MATHS_H}`);
  await confirmed(page, "form[action$='/harmonisation'] button");
  // Every copy of the academy is graded: the first pass validates them
  // all (the passes tried above validated nothing).
  assert.equal((await page.textContent("h1")).trim(), "Harmonisation");
  assert.match(
    await page.textContent("main"),
    new RegExp(`passe 1 : ${env("E2E_MATHS_H_COPIES")} copies validées \\(0 l'étaient déjà\\)`),
  );
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
  await confirmed(page, "form[action$='/harmonisation'] button");
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
  await page.waitForFunction(() => document.querySelector("[data-job-status]").textContent.includes("en échec"), null, {
    timeout: 30_000,
  });
  // A finished job cannot be cancelled: no such button.
  assert.equal(await page.locator("form[action$='/annulation']").count(), 0);
  await confirmed(page, "form[action$='/relance'] button");
  await page.waitForURL(`${BASE}/travaux/${id}`);
  const history = await page.textContent("table.events");
  assert.match(history, /relancé à la main/);
  // The retried job dies again (a permanent failure); its page reloads
  // itself once finished, and follows it no more.
  await page.waitForFunction(() => !document.querySelector("[data-job-events]"), null, { timeout: 30_000 });
  await page.waitForLoadState();
  await shot(page, "job-retried");
  await page.goto(`${BASE}/travaux`);
  await shot(page, "jobs");
  await page.context().close();
});

test("after login the user lands on the page asked for", async () => {
  const page = await session(null);
  await page.goto(`${BASE}/travaux`);
  assert.equal(new URL(page.url()).pathname, "/connexion");
  await page.fill("#cle", env("E2E_COORDINATOR"));
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  assert.equal(new URL(page.url()).pathname, "/travaux");
  await page.context().close();
});

test("a revoked key says so", async () => {
  const bin = env("E2E_BIN");
  const token = execFileSync(bin, ["tokens", "create", "--role", "establishment", "--uai", UAI, "--name", "e2e-revoked"])
    .toString()
    .trim();
  const page = await session(token);
  const listed = JSON.parse(execFileSync(bin, ["tokens", "list", "--json"]).toString());
  const mine = (Array.isArray(listed) ? listed : listed.tokens).find((t) => t.name === "e2e-revoked");
  execFileSync(bin, ["tokens", "revoke", String(mine.id)]);
  await page.goto(`${BASE}/examens`);
  assert.equal(new URL(page.url()).pathname, "/connexion");
  assert.match(await page.textContent(".error"), /révoquée|expirée/);
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
